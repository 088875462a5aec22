"""memplan.estimate(job, engine="formula"): the public entry point. The spec is resolved once (memplan.job) and
handed to the engine of that name (memplan.engines), which returns the Estimate (memplan.result)."""

from __future__ import annotations

from typing import Any

from memplan import engines
from memplan.job import resolve
from memplan.result import Estimate
from memplan.spec import JobSpec


def estimate(job: dict[str, Any] | JobSpec, engine: str = "formula", allow_path: bool = False,
             progress: Any = None) -> Estimate:
    """Estimate per-GPU memory of the job. Raises SpecError naming the field on bad input (an unknown model or GPU
    id: UnknownIdError, with suggestions).

    engine "formula" adds the closed-form terms (milliseconds); "trace" runs the real training step or generation
    on fake tensors (seconds; memplan.engines.trace), calling `progress(message)` as it goes when given."""
    runner = engines.get(engine)
    return runner.estimate(resolve(job, allow_path), progress)
