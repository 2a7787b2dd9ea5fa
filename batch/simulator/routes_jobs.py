"""Generation and jobs: POST /generate/custom/{modelId}, GET /jobs[/{id}], cancel."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from .config import MODEL_ID
from .faults import JobPlan
from .lifecycle import JobState
from .listing import ListError, list_jobs
from .models import COST_FACTOR, INPUTS, file_ids, model_json, validate_declared
from .responses import BODY, JOB_ID, Dropped, error, json_response
from .routes_assets import owner_of
from .shapes import job_json
from .state import Job
from .validation import describe, validate_inputs

if TYPE_CHECKING:
    from .simulator import Simulator

DRY_RUN_STATUS = 269
MODELS_CREATED = "2025-06-01T00:00:00.000Z"


class JobRoutes:
    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    def _answer(self, job: Job, state: JobState, status: int = 200) -> web.Response:
        cost = job.cost
        return json_response(
            {
                "job": job_json(job, state),
                "creativeUnitsCost": cost,
                "creativeUnitsDiscount": 0,
                "costDetails": {"custom-generation": cost},
            },
            status=status,
        )

    async def generate(self, request: web.Request) -> web.Response:
        sim = self.sim
        model_id = request.match_info["modelId"]
        if model_id in sim.config.forbidden_models:
            return error(
                403,
                f"Forbidden: model {model_id} is not available on your plan; "
                "it needs the Pro plan or above",
                details={"modelId": model_id, "requiredPlan": "pro"},
            )
        if model_id not in INPUTS:
            served = ", ".join(INPUTS)
            return error(404, f"Model {model_id} not found (the simulator serves {served})")
        now = sim.clock()
        body = request[BODY]

        def exists(asset_id: str) -> bool:
            return sim.store.visible_asset(asset_id, now) is not None

        if model_id == MODEL_ID:
            params, problems = validate_inputs(body, exists, sim.config.max_reference_images)
        else:
            filled, problems = validate_declared(model_id, body, exists)
            params = {
                "numOutputs": filled.get("numOutputs", 1),
                "referenceImages": file_ids(model_id, filled),
                "prompt": filled.get("prompt", ""),
                "aspectRatio": "auto",
                "seed": filled.get("seed"),
            }
        if problems:
            return error(
                400,
                f"Invalid inputs for {model_id}: {describe(problems)}",
                details={"errors": [{"field": f, "message": m} for f, m in problems]},
            )
        assert isinstance(body, dict)
        cost = sim.config.cost_per_output * COST_FACTOR[model_id] * params["numOutputs"]
        owner = owner_of(request)
        if request.query.get("dryRun") in ("true", "api"):
            # An estimate: a job-shaped answer whose id exists nowhere.
            ghost = Job(
                id=sim.store.new_dry_run_id(),
                seq=-1,
                model_id=model_id,
                owner_id=owner,
                created=now,
                plan=JobPlan(duration_s=0.0, fails=False, stalls=False),
                input=body,
                output_ids=(),
                cost=cost,
            )
            state = JobState(status="pending", progress=0.0, history=(("pending", now),))
            return self._answer(ghost, state, DRY_RUN_STATUS)
        limit = sim.config.parallel_jobs_limit
        if limit is not None and sim.store.unfinished_count(now) >= limit:
            return error(
                429,
                f"Too many custom jobs running at once: your plan allows {limit}. "
                "Wait for one to finish before submitting another.",
                details={"actionName": "parallel-custom-jobs", "actionLimit": limit},
            )
        job = sim.store.add_job(model_id, owner, body, params, sim.faults.for_job(), cost, now)
        request[JOB_ID] = job.id
        if sim.faults.drop_after_submit():
            raise Dropped
        return self._answer(job, job.state(now))

    async def model(self, request: web.Request) -> web.Response:
        """GET /v1/models/{modelId}: the model and its declared inputs (free)."""
        model_id = request.match_info["modelId"]
        if model_id not in INPUTS:
            return error(404, f"Model {model_id} not found")
        return json_response({"model": model_json(model_id, MODELS_CREATED)})

    async def retrieve(self, request: web.Request) -> web.Response:
        job_id = request.match_info["jobId"]
        job = self.sim.store.jobs.get(job_id)
        if job is None:
            return error(404, f"Job {job_id} not found")
        return json_response({"job": job_json(job, job.state(self.sim.clock()))})

    async def action(self, request: web.Request) -> web.Response:
        job_id = request.match_info["jobId"]
        job = self.sim.store.jobs.get(job_id)
        if job is None:
            return error(404, f"Job {job_id} not found")
        body = request[BODY]
        action = body.get("action") if isinstance(body, dict) else None
        if action != "cancel":
            return error(400, f"action: must be 'cancel', got {action!r}")
        now = self.sim.clock()
        state = job.state(now)
        if state.finished:
            return error(400, f"Job {job_id} is {state.status} and can no longer be canceled")
        self.sim.store.cancel(job, now)
        return json_response({"job": job_json(job, job.state(now))})

    async def list(self, request: web.Request) -> web.Response:
        sim = self.sim
        try:
            page, token = list_jobs(
                sim.store, request.query, owner_of(request), sim.clock(), sim.faults.short_page
            )
        except ListError as exc:
            return error(400, str(exc))
        except (ValueError, TypeError, KeyError):
            return error(400, "paginationToken: not a token this API issued")
        body: dict[str, Any] = {"jobs": [job_json(job, state) for job, state in page]}
        if token is not None:
            body["nextPaginationToken"] = token
        return json_response(body)
