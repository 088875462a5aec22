"""check(job) -> CheckResult: does the job fit its GPU with a required margin? The verdict the CLI's
`memplan check` exit code, `POST /v1/check` and CI gates all report. No formulas: it compares the estimate's
calibrated range (and its peak) with the GPU's usable memory less the margin.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from memplan.estimate import estimate
from memplan.result import VERDICT_LABELS, Estimate, Verdict, verdict
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
    required_bytes: int = Field(description="peak_bytes + margin_pct% of usable_bytes")
    usable_bytes: int
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
    usable = e.gpu.usable_bytes
    reserve = int(usable * margin_pct / 100)
    required = e.peak_bytes + reserve
    ok = required <= usable
    v = verdict(e.range.low_bytes, e.range.high_bytes, usable - reserve)
    passed = v == "fits" or (v == "borderline" and accept_borderline)
    pct = 100 * e.headroom_bytes / usable
    margin = f", margin {margin_pct:g}%" if margin_pct else ""
    label = VERDICT_LABELS[v]
    if v == "borderline":
        label += " (accepted)" if accept_borderline else " (fails the check; --accept-borderline passes it)"
    message = (f"{label}: {e.model.id} on {e.gpu.id}: peak {e.peak_bytes / GIB:.2f} GiB (range "
               f"{e.range.low_bytes / GIB:.2f} to {e.range.high_bytes / GIB:.2f}) of {usable / GIB:.2f} GiB usable, "
               f"headroom {e.headroom_bytes / GIB:.2f} GiB ({pct:.1f}%{margin}), peak in {e.peak_phase}")
    return CheckResult(fits=ok, verdict=v, passed=passed, accept_borderline=accept_borderline, margin_pct=margin_pct,
                       required_bytes=required, usable_bytes=usable, headroom_bytes=e.headroom_bytes,
                       message=message, estimate=e)
