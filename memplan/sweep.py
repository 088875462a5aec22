"""Peak memory against one size field (micro-batch, sequence length, inference batch or prompt length), and the
largest value that fits. Relies on the peak never falling as the field grows (tests/test_properties.py).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from memplan.estimate import estimate
from memplan.job import model_info, position_cap
from memplan.result import Estimate
from memplan.spec import JobSpec, SpecError, parse_spec

SweepField = Literal["micro_batch_size", "seq_len", "inference.batch_size", "inference.prompt_len"]
SWEEP_FIELDS: tuple[str, ...] = SweepField.__args__  # type: ignore[attr-defined]
#: the spec's own upper bound of each field: the search for the largest fitting value stops there
FIELD_LIMITS = {"micro_batch_size": 1_000_000, "seq_len": 10_000_000, "inference.batch_size": 1_000_000,
                "inference.prompt_len": 10_000_000}
#: where the default grid of powers of two starts and the least it reaches
GRID = {"micro_batch_size": (1, 16), "seq_len": (128, 8192), "inference.batch_size": (1, 64),
        "inference.prompt_len": (128, 8192)}
MAX_POINTS = 64


class SweepPoint(BaseModel):
    value: int
    peak_bytes: int
    peak_allocated_bytes: int
    peak_reserved_bytes: int
    peak_phase: str
    fits: bool


class Sweep(BaseModel):
    field: str
    points: list[SweepPoint]
    largest_fitting: int | None = Field(description="largest value of the field that fits (None: not even 1)")
    usable_bytes: int = Field(description="the GPU's usable memory, the line the chart draws")
    gpu_id: str


def with_value(spec: JobSpec, field: str, value: int) -> JobSpec:
    """The spec with one (possibly nested) field changed, validated again; fields left unset stay unset."""
    data = spec.model_dump(by_alias=True, exclude_unset=True)
    if field.startswith("inference."):
        data["inference"] = {**data.get("inference", {}), field.split(".", 1)[1]: value}
    else:
        data[field] = value
    return parse_spec(data)


def field_limit(spec: JobSpec, field: str) -> int:
    """The largest value of `field` the search tries: the spec's own bound, or, for a sequence field of a model with
    a learned position table (GPT-2, BERT, OPT), the longest it can run."""
    cap = position_cap(spec, model_info(spec), field)
    return FIELD_LIMITS[field] if cap is None else max(1, min(cap, FIELD_LIMITS[field]))


def _check_field(field: str) -> None:
    if field not in SWEEP_FIELDS:
        raise SpecError([("field", f"cannot sweep {field!r}; allowed: {', '.join(SWEEP_FIELDS)}")])


def largest_fitting(job: dict[str, Any] | JobSpec, field: str) -> int | None:
    """The largest value of `field` whose estimate fits: doubling from 1, then bisection (about 2*log2(n)
    estimates). None when 1 does not fit."""
    _check_field(field)
    spec = parse_spec(job)
    limit = field_limit(spec, field)

    def fits(v: int) -> bool:
        return estimate(with_value(spec, field, v)).fits

    if not fits(1):
        return None
    lo = 1
    while lo < limit:
        hi = min(lo * 2, limit)
        if not fits(hi):
            break
        lo = hi
    else:
        return limit
    while hi - lo > 1:  # fits(lo), not fits(hi)
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def sweep(job: dict[str, Any] | JobSpec, field: str, values: list[int] | None = None) -> Sweep:
    """Estimate the job at each value of `field` (default: powers of two from the field's start up to twice the
    largest fitting value, at least to the field's usual range) and find the largest value that fits."""
    _check_field(field)
    spec = parse_spec(job)
    best = largest_fitting(spec, field)
    if values is None:
        start, least = GRID[field]
        top = min(max(least, 2 * (best or 0)), field_limit(spec, field))
        values = []
        v = start
        while v <= top and len(values) < MAX_POINTS:
            values.append(v)
            v *= 2
    if not 1 <= len(values) <= MAX_POINTS:
        raise SpecError([("values", f"give 1 to {MAX_POINTS} values, got {len(values)}")])
    points = []
    for v in sorted(set(values)):
        if not 1 <= v <= FIELD_LIMITS[field]:
            raise SpecError([("values", f"{field} must be in 1..{FIELD_LIMITS[field]}, got {v}")])
        e: Estimate = estimate(with_value(spec, field, v))
        points.append(SweepPoint(value=v, peak_bytes=e.peak_bytes, peak_allocated_bytes=e.peak_allocated_bytes,
                                 peak_reserved_bytes=e.peak_reserved_bytes, peak_phase=e.peak_phase, fits=e.fits))
    return Sweep(field=field, points=points, largest_fitting=best, usable_bytes=e.gpu.usable_bytes, gpu_id=e.gpu.id)


ServingSweepField = Literal["serving.max_model_len", "serving.gpu_memory_utilization"]
SERVING_SWEEP_FIELDS: tuple[str, ...] = ServingSweepField.__args__  # type: ignore[attr-defined]
#: the default grid of each serving field: utilization in steps of 0.05, max_model_len in powers of two from 1024
UTILIZATION_GRID = tuple(round(0.5 + 0.05 * i, 2) for i in range(10)) + (0.98,)


class ServingSweepPoint(BaseModel):
    value: float
    kv_cache_tokens: int
    max_concurrency: float
    kv_cache_bytes: int
    fits: bool = Field(description="the engine's share serves one request of max_model_len (the estimate's verdict "
                                   "is fits)")


class ServingSweep(BaseModel):
    field: str
    points: list[ServingSweepPoint]
    max_model_len: int = Field(description="the job's own max_model_len (the concurrency's request length when "
                                           "sweeping the utilization)")
    gpu_id: str


def serving_sweep(job: dict[str, Any] | JobSpec, field: str, values: list[float] | None = None) -> ServingSweep:
    """A serve job's KV cache tokens and maximum concurrency at each value of `field`: max_model_len (default:
    powers of two from 1024 to the model's maximum) or gpu_memory_utilization (default: 0.5 to 0.95 by 0.05, and
    0.98). At most MAX_POINTS values, each one estimate."""
    if field not in SERVING_SWEEP_FIELDS:
        raise SpecError([("field", f"cannot sweep {field!r} of a serve job; allowed: "
                                   f"{', '.join(SERVING_SWEEP_FIELDS)}")])
    spec = parse_spec(job)
    if spec.task != "serve":
        raise SpecError([("task", "serving_sweep applies to serve jobs (task: serve)")])
    base = estimate(spec)
    assert base.serving is not None
    if values is None:
        if field == "serving.gpu_memory_utilization":
            values = list(UTILIZATION_GRID)
        else:
            top = model_info(spec).max_positions or 131072
            values, v = [], 1024
            while v < top and len(values) < MAX_POINTS - 1:
                values.append(v)
                v *= 2
            values.append(top)
    if not 1 <= len(values) <= MAX_POINTS:
        raise SpecError([("values", f"give 1 to {MAX_POINTS} values, got {len(values)}")])
    data = spec.model_dump(by_alias=True, exclude_unset=True)
    name = field.split(".", 1)[1]
    points = []
    for v in sorted(set(values)):
        value: float | int = int(v) if name == "max_model_len" else float(v)
        if name == "max_model_len" and not (value >= 1 and value == v):
            raise SpecError([("values", f"max_model_len takes whole token counts >= 1, got {v}")])
        e = estimate(parse_spec({**data, "serving": {**data.get("serving", {}), name: value}}))
        s = e.serving
        points.append(ServingSweepPoint(value=value, kv_cache_tokens=s.kv_cache_tokens,
                                        max_concurrency=s.max_concurrency, kv_cache_bytes=s.kv_cache_bytes,
                                        fits=e.verdict == "fits"))
    return ServingSweep(field=field, points=points, max_model_len=base.serving.max_model_len, gpu_id=base.gpu.id)
