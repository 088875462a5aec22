"""memplan.estimate(job, engine="auto"): the public entry point. The spec is resolved once (memplan.job) and
handed to the engine of that name (memplan.engines), which returns the Estimate (memplan.result)."""

from __future__ import annotations

from typing import Any

from memplan import engines
from memplan.job import resolve
from memplan.result import Estimate
from memplan.spec import JobSpec


def estimate(job: dict[str, Any] | JobSpec, engine: str = "auto", allow_path: bool = False,
             progress: Any = None) -> Estimate:
    """Estimate per-GPU memory of the job. Raises SpecError naming the field on bad input (an unknown model or GPU
    id: UnknownIdError, with suggestions).

    engine "auto" is the fast engine of the job's task: "formula" for train and inference (closed-form terms,
    milliseconds), "serving" for serve (the serving engine's budget rules); "trace" runs the real training step or
    generation on fake tensors (seconds; memplan.engines.trace), calling `progress(message)` as it goes when
    given."""
    if engine != "auto":
        engines.get(engine)  # an unknown name is reported before the job is resolved
    resolved = resolve(job, allow_path)
    return engines.for_task(engine, resolved.spec.task).estimate(resolved, progress)
