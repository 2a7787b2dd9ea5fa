"""Every error scenario-batch raises on purpose, as one tree.

    BatchError
    ├── UsageError               bad command line or environment (exit 2, nothing spent)
    │   ├── CredentialsError     missing credentials, or the API answered 401 (exit 2)
    │   └── NetworkSetupError    a certificate or proxy failure before the API ever answered
    ├── ManifestError            the manifest or a file it names is wrong (exit 2)
    ├── LocalFaultError          the machine failed the run: disk full, read-only or vanished
    │                            directory, I/O error, too few file descriptors (exit 1, or 2
    │                            before anything was spent); see batch.local_faults
    ├── ChangedReferenceError    a reference file changed or vanished after validation: the
    │                            item fails, nothing different is uploaded
    ├── LedgerError              the output directory's ledger cannot be used
    │   ├── LockedError          another run holds the output directory (exit 2)
    │   └── UnusableOutputError  the output directory cannot be used as it is (exit 2)
    ├── ExportError              `export` could not write its dataset (exit 1)
    └── ApiError                 the Scenario API answered with an error
        ├── TransientApiError    408, 409, 429, 5xx, resets, timeouts: worth retrying
        │   ├── RateLimitedError             429 (with the server's wait, if it gave one)
        │   │   └── ParallelJobsLimitError   429 parallel-custom-jobs: wait for a job, not a timer
        │   ├── AmbiguousSubmitError         a generate call whose outcome is unknown
        │   └── OutageError                  the API failed every call for the grace period
        └── PermanentApiError    400, 403, 404, 422: the same call will fail again
            └── DownloadError    an output could not be fetched or verified

The CLI maps these to exit codes; nothing below the CLI calls `sys.exit`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


class BatchError(Exception):
    """Base of every error scenario-batch raises on purpose."""


class UsageError(BatchError):
    """The command line or environment is wrong; nothing was spent."""


class CredentialsError(UsageError):
    """Credentials are missing, malformed, or were refused by the API."""


class NetworkSetupError(UsageError):
    """No connection to the API could be set up as configured (its certificate failed
    verification, the proxy is unreachable or refused the tunnel) before it ever answered:
    the configuration is wrong, nothing was spent."""


class ExportError(BatchError):
    """`export` could not read an output or write its dataset (a fault of the machine)."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a manifest, located as precisely as we can."""

    file: str
    line: int | None
    where: str
    message: str

    def __str__(self) -> str:
        place = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{place} {self.where}: {self.message}" if self.where else f"{place}: {self.message}"


class ManifestError(BatchError):
    """The manifest, or a local file it names, is invalid. Carries every problem found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class LocalFaultError(BatchError):
    """The machine the run is on failed it (disk, directory, file descriptors): the run
    stops at once, resumable. Built by `batch.local_faults`, which words `advice`.

    `before_spending` is set where the run knows that nothing was paid for yet (exit 2)."""

    def __init__(self, action: str, path: str | None, code: int | None, advice: str) -> None:
        self.action = action
        self.path = path
        self.errno = code
        self.advice = advice
        self.before_spending = False
        where = f" {path}" if path else ""
        reason = f": {os.strerror(code)}" if code else ""
        super().__init__(f"stopped: {action}{where}{reason}. Fix: {advice}")


class ChangedReferenceError(BatchError):
    """A local reference image is not the file validated at the start of the run."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.hint = hint


class LedgerError(BatchError):
    """The ledger in the output directory cannot be read or written."""


class LockedError(LedgerError):
    """Another run is using this output directory."""


class UnusableOutputError(LedgerError):
    """The output directory (or a file in it) cannot be used: found before anything is spent."""


class ApiError(BatchError):
    """The Scenario API answered with an error (or did not answer)."""

    def __init__(self, message: str, *, status: int | None = None, hint: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.hint = hint


class TransientApiError(ApiError):
    """Retrying the same call later may succeed."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        hint: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status=status, hint=hint)
        self.retry_after = retry_after


class RateLimitedError(TransientApiError):
    """HTTP 429: slow down."""


class ParallelJobsLimitError(RateLimitedError):
    """HTTP 429 `parallel-custom-jobs`: the account runs at most `limit` jobs at once."""

    def __init__(self, message: str, *, limit: int | None) -> None:
        super().__init__(message, status=429)
        self.limit = limit


class AmbiguousSubmitError(TransientApiError):
    """A generate call was sent but its answer was lost: the job may or may not exist."""


class OutageError(TransientApiError):
    """The API failed every call for longer than the grace period: stop, resumable."""


class PermanentApiError(ApiError):
    """The API refused the call for a reason a retry will not clear."""


class DownloadError(PermanentApiError):
    """An output could not be downloaded and verified."""
