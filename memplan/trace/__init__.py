"""The trace engine: run the real training step (or generation) on fake tensors and count what it allocates.

    memplan.estimate(job, engine="trace")    -> the same Estimate as the formula engine, engine "trace"

build.py builds the stack on meta and makes it fake; run.py runs the CUDA harness's own loop under tracker.py's
storage tracker with CUDA's autocast rules (autocast.py), SDPA and dropout kernels (sdpa.py) and bitsandbytes
stand-ins (standins.py), taking fastfake.py's shortcuts past FakeTensorMode (the same tensors, sooner);
allocator.py replays the log for peak reserved; engine.py assembles the Estimate.
"""
