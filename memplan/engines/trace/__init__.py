"""The trace engine: run the real training step (or generation) on fake tensors and count what it allocates.

    memplan.estimate(job, engine="trace")    -> the same Estimate as the formula engine, engine "trace"

build.py builds the stack (memplan.stack) on meta and makes it fake; run.py runs memplan.stack's training loop (the
one the CUDA harness runs) under tracker.py's CUDA's autocast rules (autocast.py), SDPA and dropout kernels (sdpa.py)
and bitsandbytes stand-ins (standins.py), taking fastfake.py's shortcuts past FakeTensorMode (the same tensors, sooner);
allocator.py replays the log for peak reserved; engine.py assembles the Estimate.
"""

from memplan.engines.trace.engine import NAME, estimate

#: the trace engine runs training steps and generate(); it is never picked by engine "auto" (seconds, not ms)
TASKS = ("train", "inference")
AUTO = False

__all__ = ["AUTO", "NAME", "TASKS", "estimate"]
