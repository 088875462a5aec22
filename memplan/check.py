"""check(job) -> CheckResult: does the job fit its GPU with a required margin? The verdict the CLI's
`memplan check` exit code, `POST /v1/check` and CI gates all report. No formulas: it compares the estimate's
calibrated range (and its peak) with the GPU's usable memory less the margin.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from memplan.estimate import estimate
from memplan.result import VERDICT_LABELS, Estimate, Verdict, capacity_bytes, demand_bytes, verdict
from memplan.spec import JobSpec, SpecError
from memplan.terms.dtypes import GIB


class CheckResult(BaseModel):
    fits: bool = Field(description="peak_bytes plus the margin is within the GPU's usable memory (the point "
                                   "estimate; `verdict` also weighs the calibrated range)")
    verdict: Verdict = Field(description="fits: range.high plus the margin within the usable memory; "
                                         "does_not_fit: range.low plus the margin above it; borderline: between")
    passed: bool = Field(description="what the exit code says: verdict fits, or borderline when accepted")
    accept_borderline: bool = Field(False, description="a borderline verdict passes")
    margin_pct: float = Field(description="required free share of the usable memory, percent")
    required_bytes: int = Field(description="peak_bytes + margin_pct% of usable_bytes (a serve job: what the engine "
                                            "needs of its share + the margin)")
    usable_bytes: int = Field(description="the GPU's usable memory (a serve job: the engine's share of it)")
    headroom_bytes: int = Field(description="usable_bytes - peak_bytes (negative: short by that much)")
    message: str = Field(description="one line for people and CI logs")
    estimate: Estimate


def check(job: dict[str, Any] | JobSpec, margin_pct: float = 0.0, allow_path: bool = False,
          accept_borderline: bool = False) -> CheckResult:
    """Estimate the job and compare its range and peak_bytes, plus the margin, with the GPU's usable bytes.

    Example: the README's QLoRA job on a T4 (14.50 GiB usable): peak 14.44 GiB fits as a point estimate at margin 0%
    (needs 14.44 GiB), but its range reaches 16.41 GiB, so the verdict is borderline and the check does not pass
    unless `accept_borderline`; at margin 10% the point estimate needs 15.89 GiB and does not fit either.
    """
    if not 0 <= margin_pct < 100:
        raise SpecError([("margin_pct", f"must be a percentage in [0, 100), got {margin_pct:g}")])
    e = estimate(job, allow_path=allow_path)
    # a serve job's need is what the engine needs of its requested share (see memplan.result.assemble_serving)
    usable, demand = capacity_bytes(e), demand_bytes(e)
    reserve = int(e.gpu.usable_bytes * margin_pct / 100)
    required = demand + reserve
    ok = required <= usable
    v = verdict(e.range.low_bytes, e.range.high_bytes, usable - reserve)
    passed = v == "fits" or (v == "borderline" and accept_borderline)
    pct = 100 * e.headroom_bytes / max(usable, 1)
    margin = f", margin {margin_pct:g}%" if margin_pct else ""
    label = VERDICT_LABELS[v]
    if v == "borderline":
        label += " (accepted)" if accept_borderline else " (fails the check; --accept-borderline passes it)"
    if e.serving is not None:
        s = e.serving
        message = (f"{label}: {e.model.id} on {e.gpu.id} x {s.tensor_parallel_size} ({s.engine}): serving one "
                   f"{s.max_model_len:,}-token request needs {demand / GIB:.2f} GiB (range "
                   f"{e.range.low_bytes / GIB:.2f} to {e.range.high_bytes / GIB:.2f}) of the {usable / GIB:.2f} GiB "
                   f"the engine takes per GPU{margin}; KV cache {s.kv_cache_bytes / GIB:.2f} GiB = "
                   f"{s.kv_cache_tokens:,} tokens, {s.max_concurrency:.2f} requests of max_model_len at once")
    else:
        message = (f"{label}: {e.model.id} on {e.gpu.id}: peak {e.peak_bytes / GIB:.2f} GiB (range "
                   f"{e.range.low_bytes / GIB:.2f} to {e.range.high_bytes / GIB:.2f}) of {usable / GIB:.2f} GiB "
                   f"usable, headroom {e.headroom_bytes / GIB:.2f} GiB ({pct:.1f}%{margin}), peak in {e.peak_phase}")
    return CheckResult(fits=ok, verdict=v, passed=passed, accept_borderline=accept_borderline, margin_pct=margin_pct,
                       required_bytes=required, usable_bytes=usable, headroom_bytes=e.headroom_bytes,
                       message=message, estimate=e)
