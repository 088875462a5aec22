"""The HTTP service: thin routes over `memplan` (no formulas here), the calculator page at `/`, docs at `/docs`.

    uvicorn --factory api.app:create_app      (or `memplan serve`)

Errors: 422 names the field and what it allows, 404 names an unknown model or GPU with the closest catalog ids,
413 above the body limit; a 500 would be a bug (tests/test_api.py fuzzes the routes for it).
"""

from __future__ import annotations

import difflib
import gc
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import Body, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

import memplan
from memplan import architecture, catalog, hub
from memplan.check import CheckResult, check
from memplan.estimate import estimate
from memplan.result import Estimate
from memplan.plan import MAX_LIMIT, Plan, PlanTarget, plan
from memplan.spec import (MAX_REPORTED_ERRORS, JobSpec, SpecError, UnknownIdError, allowed_fields_once,
                          describe_errors, drop_union_noise)
from memplan.sweep import ServingSweep, ServingSweepField, Sweep, SweepField, serving_sweep, sweep

from api.compute import Busy, Compute, OverBudget
from api.guards import Guards, error_content
from api.limits import BodyLimit
from api.settings import Settings

REPO_WEB_DIR = Path(__file__).resolve().parent.parent / "web"

EXAMPLES = {
    "qlora_t4": {"summary": "QLoRA of Llama-3.1-8B on a T4", "value": {
        "model": "meta-llama/Llama-3.1-8B", "method": "qlora", "optimizer": "paged_adamw_8bit",
        "lora": {"r": 16, "target_modules": "all-linear"}, "seq_len": 2048, "gradient_checkpointing": True,
        "gpu": "T4-16GB"}},
    "full_zero3": {"summary": "Full fine-tune of Llama-3.1-70B, ZeRO-3 on 8 H100", "value": {
        "model": "meta-llama/Llama-3.1-70B", "method": "full", "zero_stage": 3, "num_gpus": 8,
        "gradient_checkpointing": True, "seq_len": 4096, "gpu": "H100-SXM-80GB"}},
    "serve": {"summary": "Serving Qwen2.5-7B with a long prompt", "value": {
        "model": "Qwen/Qwen2.5-7B", "task": "inference", "gpu": "L4-24GB",
        "inference": {"batch_size": 4, "prompt_len": 8192, "max_new_tokens": 512}}},
    "inline_config": {"summary": "A pasted config.json", "value": {
        "model_config": {"model_type": "llama", "hidden_size": 2048, "intermediate_size": 5632,
                         "num_hidden_layers": 22, "num_attention_heads": 32, "num_key_value_heads": 4,
                         "vocab_size": 32000}, "method": "lora", "gpu": {"memory_gib": 24}}},
}

PLAN_EXAMPLES = {
    "qlora_t4": {"summary": "QLoRA of Llama-3.1-8B on a T4, global batch 32", "value": {
        "job": EXAMPLES["qlora_t4"]["value"], "target": {"global_batch_size": 32}, "limit": 5}},
    "full_8b": {"summary": "Full fine-tune of Llama-3.1-8B: what fits on 2 A100-80GB", "value": {
        "job": {"model": "meta-llama/Llama-3.1-8B", "method": "full", "seq_len": 4096, "gpu": "A100-SXM-80GB"},
        "target": {"num_gpus": 2, "global_batch_size": 64}}},
    "serve": {"summary": "Serving Qwen2.5-7B on an L4: largest batch, vLLM KV budget", "value": {
        "job": EXAMPLES["serve"]["value"]}},
}


class ModelRow(BaseModel):
    id: str
    model_type: str
    params: int | None = Field(description="parameters memplan builds with the default head")
    published_params: int | None = Field(description="the count the model's publisher states, where known")
    aliases: list[str]


class GpuRow(BaseModel):
    id: str
    name: str
    vendor: str
    memory_bytes: int
    memory_gib: float
    dense_tflops: dict[str, float | None]
    memory_bandwidth_gb_s: float | None
    aliases: list[str]


class SweepRequest(BaseModel):
    job: JobSpec
    field: SweepField = "micro_batch_size"
    values: list[int] | None = Field(None, max_length=64, description="default: powers of two over the field's "
                                                                     "usual range, up to twice the largest fit")


class ServingSweepRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    job: JobSpec
    field: ServingSweepField = "serving.max_model_len"
    values: list[float] | None = Field(None, max_length=64, description="default: max_model_len in powers of two "
                                                                       "from 1024 to the model's maximum; "
                                                                       "utilization 0.5 to 0.95 by 0.05, and 0.98")


class PlanRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    job: JobSpec
    target: PlanTarget | None = Field(None, description="what the plan has to reach; every field optional "
                                                        "(left out: the job's own gpu, num_gpus and batch)")
    limit: int = Field(10, ge=1, le=MAX_LIMIT, description="most configurations returned")


class ErrorItem(BaseModel):
    field: str = Field(description="the field, dotted ('lora.r', 'job.seq_len', 'target.gpu'); 'body' for the "
                                   "request as a whole")
    message: str = Field(description="what is wrong and what is allowed")
    suggestions: list[str] | None = Field(None, description="404: the closest catalog ids")


class ErrorBody(BaseModel):
    """Every error answer: 400, 404, 405, 413, 415, 422, 503, 504."""

    error: str = Field(description="the items in one line")
    detail: list[ErrorItem]


#: the error answers every computing route documents (the shape is memplan's, not FastAPI's default)
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "a Host not served or a malformed Content-Length"},
    404: {"model": ErrorBody, "description": "unknown model or GPU id, with the closest catalog ids"},
    413: {"model": ErrorBody, "description": "body above MEMPLAN_BODY_LIMIT"},
    415: {"model": ErrorBody, "description": "a body that is not application/json"},
    422: {"model": ErrorBody, "description": "invalid job: each bad field and what it allows"},
    503: {"model": ErrorBody, "description": "busy: no compute slot came free within MEMPLAN_REQUEST_TIMEOUT"},
    504: {"model": ErrorBody, "description": "the computation ran past MEMPLAN_REQUEST_TIMEOUT"},
}


def _error(status: int, items: list[dict[str, Any]]) -> JSONResponse:
    return JSONResponse(status_code=status, content=error_content(items))


def _spec_error_response(exc: SpecError, prefix: str = "") -> JSONResponse:
    if isinstance(exc, UnknownIdError):
        return _error(404, [{"field": prefix + exc.field, "message": exc.errors[0][1],
                             "suggestions": exc.suggestions}])
    return _error(422, [{"field": (prefix + loc) if loc else prefix.rstrip("."), "message": msg}
                        for loc, msg in exc.errors])


def _unknown_field(name: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(name, allowed, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"unknown field '{name}'{hint}; allowed fields: {', '.join(allowed)}"


def _plan_prefixed(exc: SpecError) -> SpecError:
    """The planner's errors name target.<field> and limit as they are; the job's own fields get "job."."""
    def name(loc: str) -> str:
        return loc if loc in ("limit", "target") or loc.startswith("target.") else f"job.{loc}" if loc else "job"

    if isinstance(exc, UnknownIdError):
        return UnknownIdError(name(exc.field), exc.errors[0][1], exc.suggestions)
    return SpecError([(name(loc), msg) for loc, msg in exc.errors])


def _validation_response(exc: RequestValidationError, path: str = "") -> JSONResponse:
    items: list[dict[str, Any]] = []
    errors = drop_union_noise(list(exc.errors()))
    for n, err in enumerate(errors):
        if len(items) >= MAX_REPORTED_ERRORS:
            items.append({"field": "", "message": f"... and {len(errors) - n} more errors"})
            break
        loc = [str(p) for p in err.get("loc", ())]
        where, loc = (loc[0], loc[1:]) if loc and loc[0] in ("body", "query", "path") else ("body", loc)
        if path == "/v1/plan" and err.get("type") == "extra_forbidden" and loc and loc[0] != "job":
            # an unknown key of the plan request or its target (the job's own are named below)
            allowed = list(PlanTarget.model_fields if loc[0] == "target" else PlanRequest.model_fields)
            items.append({"field": ".".join(loc), "message": _unknown_field(loc[-1], allowed)})
            continue
        prefix = ""
        if loc and loc[0] == "job":  # the sweep and plan requests wrap a job spec
            prefix, loc = "job.", loc[1:]
        if err.get("type") == "json_invalid":
            items.append({"field": "body", "message": f"invalid JSON: {err.get('ctx', {}).get('error', '')}"})
            continue
        field, message = describe_errors([{**err, "loc": tuple(loc)}])[0]
        if where == "body" and not loc and err.get("type") in ("model_attributes_type", "dict_type"):
            message = f"the body must be a JSON object of job fields: {message}"
        items.append({"field": prefix + field if field else (prefix.rstrip(".") or where), "message": message})
    unique: dict[tuple[str, str], dict[str, Any]] = {}
    for item in items:
        unique.setdefault((item["field"], item["message"]), item)
    pairs = allowed_fields_once([(i["field"], i["message"]) for i in unique.values()])
    return _error(422, [{**item, "message": msg} for item, (_, msg) in zip(unique.values(), pairs)])


def freeze_long_lived() -> None:
    """Collect the garbage of a model build, then move everything alive (the cached models above all) to the
    collector's permanent generation: a full collection otherwise walks every cached ModelInfo (150 MiB of them:
    ~1M objects, a 350 ms pause that stalls /healthz and every request). Frozen objects are still freed by
    reference counting when the cache evicts them (ModelInfo holds no cycles)."""
    gc.collect()
    gc.freeze()


@asynccontextmanager
async def _warm(app: FastAPI):
    """Import transformers and build one model before the first request, then move everything alive to the
    garbage collector's permanent generation (gc.freeze): torch and transformers leave ~10^6 objects that every
    full collection would otherwise walk, a pause of tens of milliseconds in the middle of a request."""
    if app.state.settings.warm:
        estimate(EXAMPLES["qlora_t4"]["value"])  # a catalog model: the shipped introspection, no torch
        estimate(EXAMPLES["inline_config"]["value"])  # a pasted config: imports torch and transformers, builds
        freeze_long_lived()
    architecture.model_cache.on_put(freeze_long_lived)
    yield


def create_app(settings: Settings | None = None) -> FastAPI:
    s = settings or Settings.from_env()
    app = FastAPI(title="memplan", version=memplan.__version__, docs_url=None, redoc_url=None, lifespan=_warm,
                  description="GPU memory of LLM fine-tuning and serving jobs, per GPU, before they run. "
                              "Byte counts are integers; the calculator page is at /.")
    app.state.settings = s

    @app.exception_handler(RequestValidationError)
    async def _on_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _validation_response(exc, request.url.path)

    @app.exception_handler(SpecError)
    async def _on_spec(request: Request, exc: SpecError) -> JSONResponse:
        return _spec_error_response(exc, "job." if request.url.path == "/v1/sweep" else "")

    @app.exception_handler(hub.HubError)
    async def _on_hub(request: Request, exc: hub.HubError) -> JSONResponse:
        return _error(404 if exc.not_found else 503, [{"field": "model", "message": str(exc)}])

    compute = Compute(s.max_concurrent, s.request_timeout)

    @app.exception_handler(Busy)
    async def _on_busy(request: Request, exc: Busy) -> JSONResponse:
        return _error(503, [{"field": "body", "message": f"busy: no compute slot came free within "
                                                          f"{s.request_timeout:g} s; retry"}])

    @app.exception_handler(OverBudget)
    async def _on_over_budget(request: Request, exc: OverBudget) -> JSONResponse:
        return _error(504, [{"field": "body", "message": f"the computation ran past {s.request_timeout:g} s "
                                                          "(MEMPLAN_REQUEST_TIMEOUT) and was abandoned"}])

    async def with_hub(call, job: JobSpec, *args):
        """Run call(job) off the event loop (Compute: bounded threads, a time budget); when the model id is not in
        the catalog and hub access is on, fetch its config.json (in a worker thread: it waits on the network) and
        run it again on that config."""
        try:
            return await compute.run(call, job, *args)
        except UnknownIdError as exc:
            if exc.field != "model" or not s.hub_access or job.model is None:
                raise
            config = await run_in_threadpool(hub.fetch_config, job.model, s.hub_timeout)
            data = job.model_dump(by_alias=True, exclude_unset=True)
            data.pop("model")
            return await compute.run(call, JobSpec.model_validate({**data, "model_config": config}), *args)

    def json_response(model: BaseModel) -> Response:
        return Response(model.model_dump_json(), media_type="application/json")

    @app.post("/v1/estimate", response_model=Estimate, tags=["estimate"], responses=ERRORS)
    async def post_estimate(job: Annotated[JobSpec, Body(openapi_examples=EXAMPLES)]) -> Response:
        """Per-GPU memory of the job: peak allocated / reserved / on the GPU, the breakdown by term, the phases."""
        return json_response(await with_hub(estimate, job))

    @app.post("/v1/check", response_model=CheckResult, tags=["estimate"], responses=ERRORS)
    async def post_check(job: Annotated[JobSpec, Body(openapi_examples=EXAMPLES)],
                   margin_pct: Annotated[float, Query(ge=0, lt=100, description="required free share of the "
                                                                                "usable memory, %")] = 0.0,
                   accept_borderline: Annotated[bool, Query(description="a borderline verdict passes")] = False
                   ) -> Response:
        """Does the job fit its GPU with `margin_pct` percent of the usable memory left free? `verdict` weighs the
        calibrated range; `passed` is what `memplan check` exits on (borderline fails unless accepted)."""
        return json_response(await with_hub(check, job, margin_pct, False, accept_borderline))

    @app.post("/v1/sweep", response_model=Sweep, tags=["estimate"], responses=ERRORS)
    async def post_sweep(req: SweepRequest) -> Response:
        """Peak memory against micro-batch, sequence length, inference batch or prompt length, and the largest
        value that fits."""
        return json_response(await with_hub(lambda job: sweep(job, req.field, req.values), req.job))

    @app.post("/v1/serving-sweep", response_model=ServingSweep, tags=["estimate"], responses=ERRORS)
    async def post_serving_sweep(req: ServingSweepRequest) -> Response:
        """A serve job's KV cache tokens and maximum concurrency against max_model_len or gpu_memory_utilization
        (the page's serving charts)."""
        return json_response(await with_hub(lambda job: serving_sweep(job, req.field, req.values), req.job))

    @app.post("/v1/plan", response_model=Plan, tags=["estimate"], responses=ERRORS)
    async def post_plan(req: Annotated[PlanRequest, Body(openapi_examples=PLAN_EXAMPLES)]) -> Response:
        """What fits a target (GPU, GPU count, global batch): ranked configurations, each re-estimated; the
        single changes that make the job fit; the largest micro-batch, longest sequence, fewest GPUs, the GPU
        with the smallest total memory and the fastest one (inference: largest batch, vLLM KV budget and
        concurrent sequences)."""
        try:
            return json_response(await with_hub(lambda job: plan(job, req.target, req.limit), req.job))
        except SpecError as exc:
            raise _plan_prefixed(exc) from None

    @app.get("/v1/models", response_model=list[ModelRow], tags=["catalog"],
             responses={k: ERRORS[k] for k in (400, 422)})
    async def get_models(search: Annotated[str | None, Query(max_length=200, description="substring of the id, "
                                                       "an alias or the model_type, case-insensitive")] = None
                   ) -> list[ModelRow]:
        """The bundled model catalog (config.json snapshots), with parameter counts."""
        needle = (search or "").lower()
        rows = []
        for m in catalog.list_models():
            model_type = str(m.config.get("model_type", ""))
            haystack = " ".join([m.id, model_type, *m.aliases]).lower()
            if needle in haystack:
                rows.append(ModelRow(id=m.id, model_type=model_type, params=m.params,
                                     published_params=m.published_params, aliases=list(m.aliases)))
        return rows

    @app.get("/v1/gpus", response_model=list[GpuRow], tags=["catalog"], responses={400: ERRORS[400]})
    async def get_gpus() -> list[GpuRow]:
        """The bundled GPU catalog: memory as the driver reports it, dense TFLOP/s, bandwidth."""
        return [GpuRow(id=g.id, name=g.name, vendor=g.vendor, memory_bytes=g.memory_bytes,
                       memory_gib=round(g.memory_gib, 3), dense_tflops=g.dense_tflops,
                       memory_bandwidth_gb_s=g.memory_bandwidth_gb_s, aliases=list(g.aliases))
                for g in catalog.list_gpus()]

    @app.get("/healthz", tags=["service"])
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "version": memplan.__version__, "models": len(catalog.list_models()),
                "gpus": len(catalog.list_gpus()), "hub_access": s.hub_access}

    _docs(app)
    web_dir = Path(s.web_dir) if s.web_dir else REPO_WEB_DIR
    if web_dir.is_dir():
        app.mount("/", StaticFiles(directory=web_dir, html=True), name="web")
    if s.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(s.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["content-type"])
    app.add_middleware(BodyLimit, limit=s.body_limit)
    app.add_middleware(Guards, allowed_hosts=s.hosts())
    return app


def _docs(app: FastAPI) -> None:
    """Swagger UI at /docs from assets on disk (fastapi-offline's copy), since the default CDN is unreachable
    offline."""
    import fastapi_offline

    assets = Path(fastapi_offline.__file__).parent / "static"
    app.mount("/_docs", StaticFiles(directory=assets), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs() -> Response:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="memplan API",
                                   swagger_js_url="/_docs/swagger-ui-bundle.js",
                                   swagger_css_url="/_docs/swagger-ui.css", swagger_favicon_url="/_docs/favicon.png")
