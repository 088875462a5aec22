"""check(job) -> CheckResult: does the job fit its GPU with a required margin? The verdict the CLI's
`memplan check` exit code, `POST /v1/check` and CI gates all report. No formulas: it compares the estimate's
peak with the GPU's usable memory.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from memplan.estimate import estimate
from memplan.result import Estimate
from memplan.spec import JobSpec, SpecError
from memplan.terms.dtypes import GIB


class CheckResult(BaseModel):
    fits: bool = Field(description="peak_bytes plus the margin is within the GPU's usable memory")
    margin_pct: float = Field(description="required free share of the usable memory, percent")
    required_bytes: int = Field(description="peak_bytes + margin_pct% of usable_bytes")
    usable_bytes: int
    headroom_bytes: int = Field(description="usable_bytes - peak_bytes (negative: short by that much)")
    message: str = Field(description="one line for people and CI logs")
    estimate: Estimate


def check(job: dict[str, Any] | JobSpec, margin_pct: float = 0.0, allow_path: bool = False) -> CheckResult:
    """Estimate the job and compare peak_bytes + margin with the GPU's usable bytes.

    Example: a peak of 14.44 GiB on a T4 (14.50 GiB usable) fits at margin 0% (needs 14.44 GiB) and does not
    at margin 10% (needs 15.89 GiB).
    """
    if not 0 <= margin_pct < 100:
        raise SpecError([("margin_pct", f"must be a percentage in [0, 100), got {margin_pct:g}")])
    e = estimate(job, allow_path=allow_path)
    usable = e.gpu.usable_bytes
    required = e.peak_bytes + int(usable * margin_pct / 100)
    ok = required <= usable
    pct = 100 * e.headroom_bytes / usable
    margin = f", margin {margin_pct:g}%" if margin_pct else ""
    message = (f"{'FITS' if ok else 'DOES NOT FIT'}: {e.model.id} on {e.gpu.id}: peak {e.peak_bytes / GIB:.2f} GiB "
               f"of {usable / GIB:.2f} GiB usable, headroom {e.headroom_bytes / GIB:.2f} GiB ({pct:.1f}%{margin}), "
               f"peak in {e.peak_phase}")
    return CheckResult(fits=ok, margin_pct=margin_pct, required_bytes=required, usable_bytes=usable,
                       headroom_bytes=e.headroom_bytes, message=message, estimate=e)
