"""The command line: arguments in, exit codes out. Nothing else lives here.

Exit codes (the contract): 0 all succeeded, 1 some failed for good (or the run stopped
early, resumable), 2 nothing was spent because the input was wrong, 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import logging
import os
import signal
import sys
import threading
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from batch import __version__
from batch.api.settings import ApiSettings
from batch.cli.init import write_starter_manifest
from batch.cli.simulate import add_simulate_parser, serving
from batch.errors import (
    BatchError,
    CredentialsError,
    LocalFaultError,
    LockedError,
    ManifestError,
    UnusableOutputError,
    UsageError,
)
from batch.ledger.journal import LEDGER_NAME, load_state
from batch.logs import configure_logging
from batch.manifest.load import load_manifest
from batch.models.catalog import ModelCatalog, api_fetcher

# Each command imports what it needs where it runs: `validate`, the one scripts call
# most, then loads no HTTP client, image library or progress bar (a tenth of its time).
if TYPE_CHECKING:
    from batch.run.pipeline import RunSummary
    from batch.run.progress import Progress

log = logging.getLogger("batch")

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
T = TypeVar("T")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scenario-batch",
        description="Bulk image edits on Scenario (Flux Kontext or any model) from a manifest.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run a manifest, or resume it")
    run.add_argument("manifest", type=Path)
    run.add_argument("--out", type=Path, help="output directory (default: the manifest's)")
    run.add_argument("--concurrency", type=_positive_int, help="jobs in flight at once")
    run.add_argument(
        "--job-retries",
        type=_non_negative_int,
        default=1,
        help="resubmissions of a job that failed (each costs; default 1)",
    )
    run.add_argument(
        "--job-timeout",
        type=_positive_float,
        metavar="SECONDS",
        help="cancel and fail a job that runs longer (default 1800)",
    )
    run.add_argument(
        "--retry-failed",
        action="store_true",
        help="resubmit items that failed for good in an earlier run",
    )
    run.add_argument(
        "--cancel-on-interrupt",
        action="store_true",
        help="on Ctrl-C/SIGTERM, cancel in-flight jobs on the API",
    )
    run.add_argument(
        "--max-cost",
        type=_positive_float,
        metavar="CU",
        help="stop submitting before this many compute units are spent",
    )
    run.add_argument("--max-rps", type=_positive_float, help="cap on API requests per second")
    run.add_argument(
        "--poll-budget",
        type=_positive_float,
        metavar="B",
        help="polling requests per job (job-list pages, status checks, URL lookups), plus "
        "4.8 per job duration shared by the jobs in flight; more finds finished jobs sooner "
        "(default 0.17)",
    )
    run.add_argument(
        "--outage-grace",
        type=_positive_float,
        metavar="SECONDS",
        help="how long an API that fails every call is probed before the run stops, "
        "resumable (default 600)",
    )
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="print what the remaining items would cost; submit nothing",
    )
    run.add_argument(
        "--fresh",
        action="store_true",
        help="never adopt the account's earlier jobs of these items when the output "
        "directory has no ledger (see the README: a lost ledger)",
    )
    run.add_argument(
        "--adopt-window",
        type=_positive_float,
        metavar="HOURS",
        default=24.0,
        help="how far back a run without a ledger looks for its items' jobs (default 24)",
    )
    run.add_argument(
        "--shard",
        type=_shard,
        metavar="I/N",
        help="run only slice I of N (0-based, by item id hash)",
    )
    _add_refresh_option(run)
    run.add_argument(
        "--sample",
        type=_positive_int,
        metavar="N",
        help="run only a stable sample of N inputs (each with every model of the item); "
        "the same N on every run, and a later full run reuses their results",
    )
    _add_log_options(run)

    init = commands.add_parser("init", help="write a manifest for every image in a folder")
    init.add_argument("folder", type=Path)
    init.add_argument("--prompt", required=True)
    init.add_argument(
        "--manifest", type=Path, help="where to write it (default: FOLDER/scenario-batch.yaml)"
    )
    init.add_argument("--force", action="store_true", help="overwrite an existing manifest")
    _add_log_options(init)

    validate = commands.add_parser("validate", help="check a manifest and its files (offline)")
    validate.add_argument("manifest", type=Path)
    _add_refresh_option(validate)
    _add_log_options(validate)

    status = commands.add_parser("status", help="summarise the ledger of output directories")
    status.add_argument("out", type=Path, nargs="+")
    _add_log_options(status)

    export = commands.add_parser("export", help="write a directory's outputs as a dataset")
    export.add_argument("out", type=Path, help="an output directory of a run")
    export.add_argument(
        "--pairs",
        type=Path,
        required=True,
        metavar="DEST",
        help="write (source, edited, instruction) pairs as a dataset at DEST, a new or "
        "empty directory outside OUT, for datasets.load_dataset(DEST)",
    )
    _add_log_options(export)

    add_simulate_parser(commands)
    simulate = commands.choices["simulate"]
    _add_log_options(simulate)
    return parser


def _add_refresh_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--refresh-models",
        action="store_true",
        help="fetch the declared inputs of every model the manifest names again "
        "(a free GET each), instead of using the copy cached for a day",
    )


def _add_log_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="count", default=0)
    parser.add_argument("-q", "--quiet", action="store_true")
    parser.add_argument("--log-format", choices=("text", "json"), default="text")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(verbose=args.verbose, quiet=args.quiet, json_format=args.log_format == "json")
    try:
        if args.command == "validate":
            return _validate(args)
        if args.command == "status":
            from batch.report.status import render_status

            print(render_status(args.out))
            return EXIT_OK
        if args.command == "simulate":
            return _simulate(args)
        if args.command == "export":
            return _export(args)
        if args.command == "init":
            path = write_starter_manifest(args.folder, args.prompt, args.manifest, args.force)
            print(f"wrote {path}; check it with: scenario-batch validate {path}")
            return EXIT_OK
        return _run(args)
    except (ManifestError, UsageError, LockedError, UnusableOutputError) as exc:
        print(f"scenario-batch: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except LocalFaultError as exc:
        return _machine_fault(exc)
    except BatchError as exc:
        print(f"scenario-batch: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except (OSError, BaseExceptionGroup) as exc:
        # The safety net: a machine fault that escaped is still one line, never a traceback.
        from batch.local_faults import stray_fault

        stray = stray_fault(exc)
        if stray is None:
            raise
        return _machine_fault(stray)


def _machine_fault(fault: LocalFaultError) -> int:
    """One line: what failed, where, what to do. Exit 2 if nothing was spent, else 1."""
    print(f"scenario-batch: {fault}", file=sys.stderr)
    return EXIT_USAGE if fault.before_spending else EXIT_FAILED


def _validate(args: argparse.Namespace) -> int:
    manifest = load_manifest(args.manifest, models=model_catalog(args.refresh_models))
    models = f" on {len(manifest.models)} models" if len(manifest.models) > 1 else ""
    print(f"{args.manifest}: ok, {len(manifest.items)} items{models}")
    return EXIT_OK


def model_catalog(refresh: bool = False) -> ModelCatalog:
    """Model declarations: shipped, cached, or fetched with the environment's credentials
    (without them, only what is shipped or cached)."""
    try:
        settings: ApiSettings | None = ApiSettings.from_env(os.environ)
    except UsageError:
        settings = None
    return ModelCatalog(
        base_url=settings.base_url if settings else None,
        fetch=api_fetcher(settings) if settings else None,
        refresh=refresh,
    )


def _export(args: argparse.Namespace) -> int:
    from batch.report.export import export_pairs

    result = export_pairs(args.out, args.pairs)
    for reason in result.skipped[:10]:
        log.warning("not exported: %s", reason)
    if len(result.skipped) > 10:
        log.warning("not exported: %d more output(s)", len(result.skipped) - 10)
    text = (
        f"scenario-batch: {result.pairs} pair(s) exported to {args.pairs}; "
        f"load them with datasets.load_dataset({str(args.pairs)!r})"
        if result.pairs
        else f"scenario-batch: nothing exported: {args.out} has no output to pair"
    )
    if result.skipped:
        text += f"; {len(result.skipped)} output(s) left out (reasons above)"
    if result.not_succeeded:
        states = ", ".join(f"{n} {state}" for state, n in sorted(result.not_succeeded.items()))
        text += (
            f"; {args.out} is unfinished ({states}): only what has succeeded is exported, "
            "run its manifest again to finish it"
        )
    print(text)
    return EXIT_OK if result.complete and result.pairs else EXIT_FAILED


def _run(args: argparse.Namespace) -> int:
    from batch.run.pipeline import DEFAULT_CONCURRENCY, RunOptions, estimate_run, run_manifest
    from batch.run.progress import BarProgress, LineProgress

    manifest = load_manifest(args.manifest, models=model_catalog(args.refresh_models))
    settings = ApiSettings.from_env(os.environ, project_id=manifest.project_id)
    if args.max_rps:
        settings = _replace_settings(settings, max_rps=args.max_rps)
    if args.outage_grace:
        settings = _replace_settings(settings, outage_grace_s=args.outage_grace)
    out_dir = args.out or manifest.output
    if out_dir is None:
        raise UsageError(f"{args.manifest}: no output directory: give --out or `output:`")
    out_dir = expand_date(out_dir)
    options = RunOptions(
        out_dir=out_dir,
        concurrency=args.concurrency or manifest.concurrency or DEFAULT_CONCURRENCY,
        job_retries=args.job_retries,
        job_timeout_s=args.job_timeout or manifest.job_timeout_s or 1800.0,
        retry_failed=args.retry_failed,
        cancel_on_interrupt=args.cancel_on_interrupt,
        max_cost=args.max_cost,
        shard=args.shard,
        sample=args.sample,
        adopt_window_s=None if args.fresh else args.adopt_window * 3600.0,
    )
    if args.poll_budget:
        poll = dataclasses.replace(options.poll, budget_per_job=args.poll_budget)
        options = dataclasses.replace(options, poll=poll)
    if args.dry_run:
        estimate = run_with_signals(estimate_run(manifest, settings, options))
        if len(estimate.per_model) > 1:
            for model, (items, total) in estimate.per_model.items():
                print(f"scenario-batch: dry run: {model}: {items} item(s), {total:g} CU")
        sample = f" of a sample of {args.sample} input(s)" if args.sample else ""
        print(
            f"scenario-batch: dry run: {estimate.items} item(s){sample} to submit would cost "
            f"{estimate.total:g} compute units ({estimate.calls} estimate call(s)); "
            "nothing was submitted"
        )
        return EXIT_OK
    log.info("output directory: %s", out_dir)
    progress: Progress = (
        BarProgress()
        if sys.stderr.isatty() and not args.quiet and args.log_format == "text"
        else LineProgress()
    )
    try:
        summary = run_with_signals(run_manifest(manifest, settings, options, progress=progress))
    except KeyboardInterrupt:
        print(
            f"scenario-batch: interrupted; in-flight jobs are recorded in {out_dir}. "
            "Run the same command again to resume.",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    except CredentialsError as exc:
        print(f"scenario-batch: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if summary.removed:
        shown = ", ".join(summary.removed[:10]) + (", ..." if len(summary.removed) > 10 else "")
        log.warning(
            "%d item(s) in the ledger are no longer in the manifest; their files are kept: %s",
            len(summary.removed),
            shown,
        )
    print(one_line_summary(summary, out_dir))
    return summary.exit_code


def one_line_summary(summary: RunSummary, out_dir: Path) -> str:
    """One line for alerting: what happened, what it cost, where it is."""
    text = (
        f"scenario-batch: {summary.succeeded}/{summary.total} succeeded, "
        f"{summary.failed} failed, {summary.unfinished} unfinished, "
        f"{summary.submitted} submitted this run, {summary.spent:g} CU spent; "
        f"outputs and ledger in {out_dir}"
    )
    if summary.stopped:
        text += f"; stopped early: {summary.stopped}"
    return text


def run_with_signals(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run `coroutine`; the first SIGINT/SIGTERM cancels it cleanly (KeyboardInterrupt),
    a second one exits at once (the ledger is durable record by record)."""

    async def guarded() -> T:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        interrupted = False

        def on_signal() -> None:
            nonlocal interrupted
            if interrupted:
                os._exit(EXIT_INTERRUPTED)
            interrupted = True
            task.cancel()

        # Signals reach only the main thread (tests drive the CLI from worker threads).
        handled = (signal.SIGINT, signal.SIGTERM) if _in_main_thread() else ()
        for signum in handled:
            loop.add_signal_handler(signum, on_signal)
        try:
            return await coroutine
        except asyncio.CancelledError:
            if interrupted:
                raise KeyboardInterrupt from None
            raise
        finally:
            for signum in handled:
                loop.remove_signal_handler(signum)

    return asyncio.run(guarded())


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _simulate(args: argparse.Namespace) -> int:
    try:
        run_with_signals(serving(args))
    except KeyboardInterrupt:
        return EXIT_OK
    return EXIT_OK


def _replace_settings(settings: ApiSettings, **changes: Any) -> ApiSettings:
    return dataclasses.replace(settings, **changes)


def expand_date(path: Path, today: dt.date | None = None) -> Path:
    """`{date}` in an output directory becomes today's date (or SCENARIO_BATCH_DATE), so each
    night's run keeps its own directory.

    A run that started before midnight and died after it must not start over, paying for
    everything again, in a new directory: when today's directory does not exist yet and
    yesterday's holds a ledger with unfinished items, yesterday's directory is resumed."""
    text = str(path)
    if "{date}" not in text:
        return path
    pinned = os.environ.get("SCENARIO_BATCH_DATE")
    if pinned:
        return Path(text.replace("{date}", pinned))
    day = today or dt.date.today()
    current = Path(text.replace("{date}", day.isoformat()))
    previous = Path(text.replace("{date}", (day - dt.timedelta(days=1)).isoformat()))
    if not current.exists() and _has_unfinished_items(previous):
        log.warning(
            "%s has unfinished items from yesterday's run: resuming it instead of starting %s "
            "(set SCENARIO_BATCH_DATE or --out to choose)",
            previous,
            current,
        )
        return previous
    return current


def _has_unfinished_items(directory: Path) -> bool:
    if not (directory / LEDGER_NAME).is_file():
        return False
    try:
        state = load_state(directory)
    except BatchError:
        return False
    return any(not record.is_final for record in state.items.values())


def _shard(text: str) -> tuple[int, int]:
    index_text, _, count_text = text.partition("/")
    try:
        index, count = int(index_text), int(count_text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected I/N such as 0/4, got {text!r}") from None
    if count < 1 or not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"need 0 <= I < N, got {text!r}")
    return index, count


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value
