"""The official client (scenario-sdk) drives every simulated endpoint; its typed models
must parse every answer, with strict response validation on."""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
import scenario_sdk
from PIL import Image
from scenario_sdk import AsyncScenario
from scenario_sdk.types import (
    AssetGetBulkResponse,
    AssetRetrieveResponse,
    AssetUploadResponse,
    GenerateRunModelResponse,
    JobListResponse,
    JobRetrieveResponse,
    JobTriggerActionResponse,
    ModelRetrieveResponse,
    UploadCreateResponse,
    UploadRetrieveResponse,
    UploadTriggerActionResponse,
)

from batch.simulator import MODEL_ID, Simulator
from batch.simulator.models import QWEN, SEEDREAM

SimulatorFactory = Callable[..., Awaitable[Simulator]]

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def client_for(sim: Simulator, key: str = "test-key", secret: str = "test-secret") -> AsyncScenario:
    return AsyncScenario(
        base_url=sim.base_url,
        api_key=key,
        api_secret=secret,
        max_retries=0,
        _strict_response_validation=True,
    )


@pytest.fixture
async def sdk(simulator: Simulator) -> AsyncIterator[AsyncScenario]:
    async with client_for(simulator) as client:
        yield client


async def upload(sdk: AsyncScenario, data: bytes, *, data_url: bool = False) -> str:
    encoded = base64.b64encode(data).decode()
    image = f"data:image/png;base64,{encoded}" if data_url else encoded
    answer = await sdk.assets.upload(name="ref.png", image=image)
    assert isinstance(answer, AssetUploadResponse)
    return answer.asset.id


async def wait_job(sdk: AsyncScenario, job_id: str) -> JobRetrieveResponse:
    async with asyncio.timeout(5.0):
        while True:
            answer = await sdk.jobs.retrieve(job_id)
            if answer.job.status in ("success", "failure", "canceled"):
                return answer
            await asyncio.sleep(0.02)


async def fetch(url: str) -> tuple[int, bytes, dict[str, str]]:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        return resp.status, await resp.read(), dict(resp.headers)


async def test_inline_upload_and_retrieve(
    sdk: AsyncScenario, simulator: Simulator, png_bytes: Callable[..., bytes]
) -> None:
    """POST /assets (base64 or data URL) and GET /assets/{id} parse; the URL serves the bytes."""
    data = png_bytes()
    first = await upload(sdk, data)
    second = await upload(sdk, data, data_url=True)
    got = await sdk.assets.retrieve(first)
    assert isinstance(got, AssetRetrieveResponse)
    assert got.asset.id == first and got.asset.mime_type == "image/png"
    assert got.asset.properties.size == len(data)
    status, body, headers = await fetch(got.asset.url)
    assert status == 200 and body == data and headers["Content-Type"] == "image/png"
    assert second != first


async def test_fresh_url_each_retrieve(sdk: AsyncScenario, png_bytes: Callable[..., bytes]) -> None:
    """Every GET /assets/{id} signs a new URL with a later expiry."""
    asset_id = await upload(sdk, png_bytes())
    first = (await sdk.assets.retrieve(asset_id)).asset.url
    await asyncio.sleep(0.01)
    second = (await sdk.assets.retrieve(asset_id)).asset.url
    assert first != second


async def test_get_bulk(sdk: AsyncScenario, png_bytes: Callable[..., bytes]) -> None:
    """get-bulk parses, returns known ids with URLs, omits unknown ones, refuses > 200 ids."""
    ids = [await upload(sdk, png_bytes(color=(i, 0, 0))) for i in range(3)]
    answer = await sdk.assets.get_bulk(asset_ids=[*ids, "asset_unknown"])
    assert isinstance(answer, AssetGetBulkResponse)
    assert sorted(a.id for a in answer.assets) == sorted(ids)
    assert all(a.url.startswith("http://127.0.0.1") for a in answer.assets)
    with pytest.raises(scenario_sdk.BadRequestError):
        await sdk.assets.get_bulk(asset_ids=[f"asset_{i}" for i in range(201)])


async def test_inline_upload_limits(
    sdk: AsyncScenario, png_bytes: Callable[..., bytes], simulator: Simulator
) -> None:
    """Too big inline -> 413 naming /uploads; not an image -> 400; unknown asset -> 404."""
    big = png_bytes(200, 200, noisy=True)
    assert len(big) > simulator.config.inline_upload_limit_bytes
    with pytest.raises(scenario_sdk.APIStatusError) as too_big:
        await upload(sdk, big)
    assert too_big.value.status_code == 413 and "/v1/uploads" in str(too_big.value.body)
    with pytest.raises(scenario_sdk.BadRequestError):
        await sdk.assets.upload(name="x.png", image=base64.b64encode(b"not an image").decode())
    with pytest.raises(scenario_sdk.NotFoundError):
        await sdk.assets.retrieve("asset_doesnotexist")


async def test_multipart_upload(
    sdk: AsyncScenario, simulator: Simulator, png_bytes: Callable[..., bytes]
) -> None:
    """create -> PUT parts on the CDN without credentials -> complete -> imported with entityId."""
    data = png_bytes(200, 200, noisy=True)
    created = await sdk.uploads.create(
        file_name="big.png", content_type="image/png", file_size=len(data), kind="image", parts=3
    )
    assert isinstance(created, UploadCreateResponse)
    assert created.upload.status == "pending" and created.upload.parts is not None
    chunk = -(-len(data) // 3)
    async with aiohttp.ClientSession() as http:
        for part in created.upload.parts:
            n = int(part.number)
            payload = data[(n - 1) * chunk : n * chunk]
            async with http.put(part.url, data=payload) as resp:
                assert resp.status == 200 and resp.headers["ETag"]
    done = await sdk.uploads.trigger_action(created.upload.id, action="complete")
    assert isinstance(done, UploadTriggerActionResponse)
    assert done.upload.status == "validating"
    for _ in range(100):
        got = await sdk.uploads.retrieve(created.upload.id)
        assert isinstance(got, UploadRetrieveResponse)
        if got.upload.status != "validating":
            break
        await asyncio.sleep(0.01)
    assert got.upload.status == "imported" and got.upload.entity_id
    asset = await sdk.assets.retrieve(got.upload.entity_id)
    assert (await fetch(asset.asset.url))[1] == data
    parts = simulator.records(origin="cdn", path_prefix="/uploads/")
    assert len(parts) == 3 and not any(r.auth_sent for r in parts)


async def test_multipart_upload_of_garbage_fails(
    sdk: AsyncScenario, png_bytes: Callable[..., bytes]
) -> None:
    """Bytes that are not an image, or fewer than declared, end in status failed."""
    for declared, payload in ((12, b"not an image"), (999, png_bytes())):
        created = await sdk.uploads.create(
            file_name="x.png", content_type="image/png", file_size=declared, kind="image", parts=1
        )
        assert created.upload.parts is not None
        async with aiohttp.ClientSession() as http:
            await http.put(created.upload.parts[0].url, data=payload)
        await sdk.uploads.trigger_action(created.upload.id, action="complete")
        await asyncio.sleep(0.03)
        got = await sdk.uploads.retrieve(created.upload.id)
        assert got.upload.status == "failed" and got.upload.error_message


async def test_generate_success_lifecycle(
    sdk: AsyncScenario, simulator: Simulator, png_bytes: Callable[..., bytes]
) -> None:
    """generate answers queued; the job walks every status to success, with outputs and billing."""
    ref = await upload(sdk, png_bytes())
    body = {"prompt": "make it blue", "referenceImages": [ref], "numOutputs": 2, "seed": 7}
    answer = await sdk.generate.run_model(MODEL_ID, body=body, project_id="proj_x")
    assert isinstance(answer, GenerateRunModelResponse)
    assert answer.job.status == "queued" and answer.creative_units_cost == 10.0
    assert answer.cost_details is not None and answer.cost_details.custom_generation == 10.0
    done = await wait_job(sdk, answer.job.job_id)
    job = done.job
    assert job.status == "success" and job.progress == 1.0 and job.job_type == "custom"
    assert [h.status for h in job.status_history] == [
        "queued",
        "warming-up",
        "in-progress",
        "finalizing",
        "success",
    ]
    assert job.metadata.input == body and job.owner_id == "proj_x"
    assert job.billing is not None and job.billing.cu_cost == 10.0
    assert job.created_at.endswith("Z") and len(job.created_at) == 24
    assert job.metadata.asset_ids is not None and len(job.metadata.asset_ids) == 2
    images = []
    for asset_id in job.metadata.asset_ids:
        asset = (await sdk.assets.retrieve(asset_id)).asset
        status, data, headers = await fetch(asset.url)
        assert (
            status == 200 and int(headers["Content-Length"]) == len(data) == asset.properties.size
        )
        with Image.open(io.BytesIO(data)) as img:
            assert img.format == "PNG" and max(img.size) <= 256
        images.append(data)
    assert images[0] != images[1]  # the output index is drawn on each


async def test_outputs_hidden_until_success(
    simulator_factory: SimulatorFactory, png_bytes: Callable[..., bytes]
) -> None:
    """A running job has no assetIds, and its future output ids answer 404."""
    sim = await simulator_factory(job_latency_s=30.0)
    async with client_for(sim) as sdk:
        ref = await upload(sdk, png_bytes())
        answer = await sdk.generate.run_model(
            MODEL_ID, body={"prompt": "p", "referenceImages": [ref]}
        )
        job = sim.jobs[answer.job.job_id]
        assert answer.job.metadata.asset_ids is None
        with pytest.raises(scenario_sdk.NotFoundError):
            await sdk.assets.retrieve(job.output_ids[0])


async def test_failed_job_parses(
    simulator_factory: SimulatorFactory, png_bytes: Callable[..., bytes]
) -> None:
    """With job_failure_rate=1 the job ends failure with metadata.error and hint, no outputs."""
    sim = await simulator_factory(job_failure_rate=1.0)
    async with client_for(sim) as sdk:
        ref = await upload(sdk, png_bytes())
        answer = await sdk.generate.run_model(
            MODEL_ID, body={"prompt": "p", "referenceImages": [ref]}
        )
        job = (await wait_job(sdk, answer.job.job_id)).job
    assert job.status == "failure" and job.metadata.error and job.metadata.hint
    assert job.metadata.asset_ids is None
    assert job.status_history[-1].status == "failure"


async def test_cancel_parses(
    simulator_factory: SimulatorFactory, png_bytes: Callable[..., bytes]
) -> None:
    """cancel turns a running job canceled (JobTriggerActionResponse); a second cancel is 400."""
    sim = await simulator_factory(job_latency_s=30.0)
    async with client_for(sim) as sdk:
        ref = await upload(sdk, png_bytes())
        answer = await sdk.generate.run_model(
            MODEL_ID, body={"prompt": "p", "referenceImages": [ref]}
        )
        canceled = await sdk.jobs.trigger_action(answer.job.job_id, action="cancel")
        assert isinstance(canceled, JobTriggerActionResponse)
        assert canceled.job.status == "canceled"
        assert (await sdk.jobs.retrieve(answer.job.job_id)).job.status == "canceled"
        with pytest.raises(scenario_sdk.BadRequestError):
            await sdk.jobs.trigger_action(answer.job.job_id, action="cancel")
        with pytest.raises(scenario_sdk.NotFoundError):
            await sdk.jobs.retrieve("job_unknown")


async def test_dry_run_269_creates_nothing(
    sdk: AsyncScenario, simulator: Simulator, png_bytes: Callable[..., bytes]
) -> None:
    """dryRun=true answers 269 with the cost, parses, and no job appears anywhere."""
    ref = await upload(sdk, png_bytes())
    raw = await sdk.generate.with_raw_response.run_model(
        MODEL_ID, body={"prompt": "p", "referenceImages": [ref], "numOutputs": 3}, dry_run="true"
    )
    assert raw.status_code == 269
    parsed = await raw.parse()
    assert isinstance(parsed, GenerateRunModelResponse) and parsed.creative_units_cost == 15.0
    assert not simulator.jobs
    assert [j async for j in sdk.jobs.list()] == []
    with pytest.raises(scenario_sdk.NotFoundError):
        await sdk.jobs.retrieve(parsed.job.job_id)


async def test_list_pagination(
    sdk: AsyncScenario, simulator: Simulator, png_bytes: Callable[..., bytes]
) -> None:
    """GET /jobs pages parse, come newest first, and following tokens yields every job once."""
    ref = await upload(sdk, png_bytes())
    ids = []
    for i in range(7):
        answer = await sdk.generate.run_model(
            MODEL_ID, body={"prompt": f"p{i}", "referenceImages": [ref]}
        )
        ids.append(answer.job.job_id)
    first = await sdk.jobs.list(page_size=3)
    assert len(first.jobs) == 3 and first.next_pagination_token
    assert all(isinstance(j, JobListResponse) for j in first.jobs)
    listed = [j.job_id async for j in sdk.jobs.list(page_size=3)]
    assert listed == ids[::-1]
    await asyncio.sleep(0.1)
    done = [j.job_id async for j in sdk.jobs.list(page_size=2, status="success")]
    assert sorted(done) == sorted(ids)
    assert [j async for j in sdk.jobs.list(types=["custom", "upload"], page_size=100)]
    assert [j async for j in sdk.jobs.list(type="upscale")] == []
    later = [j async for j in sdk.jobs.list(created_after="2999-01-01T00:00:00Z")]
    assert later == []
    for bad in (
        {"page_size": 0},
        {"page_size": 101},
        {"created_after": "2020-01-01T00:00:00Z", "status": "success"},
        {"updated_after": "2020-01-01T00:00:00Z"},
        {"pagination_token": "garbage!"},
    ):
        with pytest.raises(scenario_sdk.BadRequestError):
            await sdk.jobs.list(**bad)  # type: ignore[arg-type]


async def test_list_is_scoped_by_project(
    sdk: AsyncScenario, png_bytes: Callable[..., bytes]
) -> None:
    """Jobs created with projectId are listed with that projectId only."""
    ref = await upload(sdk, png_bytes())
    body: dict[str, Any] = {"prompt": "p", "referenceImages": [ref]}
    in_project = await sdk.generate.run_model(MODEL_ID, body=body, project_id="proj_a")
    await sdk.generate.run_model(MODEL_ID, body=body)
    listed = [j.job_id async for j in sdk.jobs.list(project_id="proj_a")]
    assert listed == [in_project.job.job_id]


async def test_generate_validation(sdk: AsyncScenario, png_bytes: Callable[..., bytes]) -> None:
    """Bad inputs answer 400 naming each field; unknown model 404."""
    ref = await upload(sdk, png_bytes())
    cases: list[tuple[dict[str, Any], str]] = [
        ({"prompt": "p"}, "referenceImages"),
        ({"referenceImages": [ref]}, "prompt"),
        ({"prompt": " ", "referenceImages": [ref]}, "prompt"),
        ({"prompt": "p", "referenceImages": ["asset_nope"]}, "referenceImages[0]"),
        ({"prompt": "p", "referenceImages": [ref] * 5}, "referenceImages"),
        ({"prompt": "p", "referenceImages": [ref], "numOutputs": 5}, "numOutputs"),
        ({"prompt": "p", "referenceImages": [ref], "numOutputs": 2.0}, "numOutputs"),
        ({"prompt": "p", "referenceImages": [ref], "aspectRatio": "5:4"}, "aspectRatio"),
        ({"prompt": "p", "referenceImages": [ref], "quality": "ultra"}, "quality"),
        ({"prompt": "p", "referenceImages": [ref], "guidanceScale": 12}, "guidanceScale"),
        ({"prompt": "p", "referenceImages": [ref], "seed": -1}, "seed"),
        ({"prompt": "p", "referenceImages": [ref], "loras": "x"}, "loras"),
        ({"prompt": "p", "referenceImages": [ref], "loras": ["m"], "lorasScale": []}, "lorasScale"),
        ({"prompt": "p", "referenceImages": [ref], "steps": 30}, "steps"),
    ]
    for body, field in cases:
        with pytest.raises(scenario_sdk.BadRequestError) as caught:
            await sdk.generate.run_model(MODEL_ID, body=body)
        assert isinstance(caught.value.body, dict)
        assert field in caught.value.body["message"], (body, caught.value.body)
        assert any(e["field"] == field for e in caught.value.body["details"]["errors"])
    ok = {"prompt": "p", "referenceImages": [ref], "loras": ["model_a"], "lorasScale": [0.8]}
    assert (await sdk.generate.run_model(MODEL_ID, body=ok)).job.status == "queued"
    with pytest.raises(scenario_sdk.NotFoundError):
        await sdk.generate.run_model("model_other", body=ok)


async def test_auth_required(simulator_factory: SimulatorFactory) -> None:
    """No or wrong credentials -> 401 JSON; right ones pass when api_key/secret are set."""
    sim = await simulator_factory(api_key="k", api_secret="s")
    async with client_for(sim, "k", "wrong") as bad, client_for(sim, "k", "s") as good:
        with pytest.raises(scenario_sdk.AuthenticationError) as caught:
            await bad.jobs.retrieve("job_x")
        assert isinstance(caught.value.body, dict) and caught.value.body["message"]
        with pytest.raises(scenario_sdk.NotFoundError):
            await good.jobs.retrieve("job_x")
    async with aiohttp.ClientSession() as http, http.get(f"{sim.base_url}/jobs") as resp:
        assert resp.status == 401 and "message" in await resp.json()
    assert sim.request_log[-1].auth_sent is False


async def test_parallel_ceiling(
    simulator_factory: SimulatorFactory, png_bytes: Callable[..., bytes]
) -> None:
    """Past parallel_jobs_limit generate answers 429 parallel-custom-jobs, until a job finishes."""
    sim = await simulator_factory(parallel_jobs_limit=2, job_latency_s=0.3, job_latency_jitter=0)
    async with client_for(sim) as sdk:
        ref = await upload(sdk, png_bytes())
        body = {"prompt": "p", "referenceImages": [ref]}
        first = await sdk.generate.run_model(MODEL_ID, body=body)
        await sdk.generate.run_model(MODEL_ID, body=body)
        for _ in range(2):  # an immediate retry repeats the refusal
            with pytest.raises(scenario_sdk.RateLimitError) as caught:
                await sdk.generate.run_model(MODEL_ID, body=body)
            assert caught.value.body == {
                "message": caught.value.body["message"],  # type: ignore[index]
                "details": {"actionName": "parallel-custom-jobs", "actionLimit": 2},
            }
            assert "retry-after" not in caught.value.response.headers
        await sdk.jobs.trigger_action(first.job.job_id, action="cancel")
        assert (await sdk.generate.run_model(MODEL_ID, body=body)).job.status == "queued"
        await asyncio.sleep(0.35)
        assert (await sdk.generate.run_model(MODEL_ID, body=body)).job.status == "queued"
    assert len(sim.jobs) == 4


@pytest.mark.parametrize("model_id", [MODEL_ID, QWEN, SEEDREAM])
async def test_model_declarations_parse(sdk: AsyncScenario, model_id: str) -> None:
    """GET /v1/models/{id} parses as ModelRetrieveResponse, inputs and required rules typed."""
    answer = await sdk.models.retrieve(model_id)
    assert isinstance(answer, ModelRetrieveResponse)
    assert answer.model.id == model_id and answer.model.inputs
    files = [i for i in answer.model.inputs if i.type in ("file", "file_array")]
    assert files and all(i.required is not None and i.required.always for i in files)


async def test_model_rules_parse_and_unknown_model_is_404(sdk: AsyncScenario) -> None:
    """ifDefined and conditional rules come through typed; an unknown model is a 404."""
    qwen = {i.name: i for i in (await sdk.models.retrieve(QWEN)).model.inputs or []}
    assert qwen["cfgScale"].required is not None and qwen["cfgScale"].required.if_defined
    multi = {i.name: i for i in (await sdk.models.retrieve(SEEDREAM)).model.inputs or []}
    rule = multi["styleStrength"].required
    assert rule is not None and rule.conditional is not None and rule.conditional.operator == "or"
    assert multi["sourceImages"].max == 3
    with pytest.raises(scenario_sdk.NotFoundError):
        await sdk.models.retrieve("model_unknown")


async def test_bodies_are_checked_against_declared_inputs(
    sdk: AsyncScenario, simulator: Simulator, png_bytes: Callable[..., bytes]
) -> None:
    """Each model's generate body is checked as declared: 400 naming every bad field."""
    ref = await upload(sdk, png_bytes())
    answer = await sdk.generate.run_model(QWEN, body={"image": ref, "prompt": "p"})
    assert isinstance(answer, GenerateRunModelResponse)
    bad = {
        "sourceImages": [ref] * 4,
        "prompt": "p",
        "style": "sketch",
        "tags": ["a", 1],
        "referenceImages": [ref],
    }
    with pytest.raises(scenario_sdk.BadRequestError) as info:
        await sdk.generate.run_model(SEEDREAM, body=bad)
    fields = {e["field"] for e in info.value.body["details"]["errors"]}  # type: ignore[index]
    assert fields == {"referenceImages", "sourceImages", "styleStrength", "tags[1]"}
    with pytest.raises(scenario_sdk.BadRequestError, match="cfgScale"):
        await sdk.generate.run_model(
            QWEN, body={"image": ref, "prompt": "p", "negativePrompt": "blur"}
        )
    with pytest.raises(scenario_sdk.NotFoundError):
        await sdk.generate.run_model("model_unknown", body={"prompt": "p"})
    assert len(simulator.jobs) == 1
