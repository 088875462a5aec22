"""Trust the tracer: on a small Llama with real tensors on CPU, the storage tracker counts exactly the bytes the CPU
allocator reports (the profiler's memory events), and the same step traced on fake tensors counts the same.

Method of shared/reference/memory-mechanics.md B1: `torch.profiler` with profile_memory=True records one memory
event per allocation and free of the CPU allocator (signed byte counts); their running sum's maximum is the
allocator's peak above what existed before profiling started (the parameters).
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from memplan.engines.trace.build import to_fake  # noqa: E402
from memplan.engines.trace.tracker import StorageTracker  # noqa: E402


def _config(**extra):
    return transformers.LlamaConfig(hidden_size=64, intermediate_size=172, num_hidden_layers=2,
                                    num_attention_heads=4, num_key_value_heads=2, vocab_size=512, **extra)


def _steps(model, tracker, ids, steps=2):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, foreach=False)
    for _ in range(steps):
        tracker.begin("forward")
        loss = model(input_ids=ids, labels=ids).loss
        tracker.end()
        tracker.begin("backward")
        loss.backward()
        del loss
        tracker.end()
        tracker.begin("optimizer_step")
        opt.step()
        opt.zero_grad(set_to_none=True)
        tracker.end()


def _raw_peak_above_params(log, n_params):
    """Peak of the running sum of raw (unrounded) bytes, after the parameters registered up front."""
    current = peak = 0
    for event in log.events[n_params:]:
        current += event.nbytes
        peak = max(peak, current)
    return peak


def _real_run(gradient_checkpointing=False):
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(_config())
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    ids = torch.randint(0, 512, (2, 64))
    tracker = StorageTracker()
    params = list(model.parameters())
    for p in params:
        tracker.register(p, "weights")
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        with tracker:
            _steps(model, tracker, ids)
    log = tracker.close()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    current = allocator_peak = 0
    for e in events:
        current += e.nbytes()
        allocator_peak = max(allocator_peak, current)
    return _raw_peak_above_params(log, len(params)), allocator_peak


@pytest.mark.parametrize("gradient_checkpointing", [False, True])
def test_tracker_counts_what_the_cpu_allocator_allocates(gradient_checkpointing):
    traced, allocator = _real_run(gradient_checkpointing)
    assert allocator > 1_000_000  # the step really ran: megabytes of activations and optimizer state
    # checkpointing saves the CPU generator's state (torch.get_rng_state(): 5,056 bytes of mt19937 state), made
    # outside the dispatcher; on a GPU that tensor lives in host memory, so the trace is right not to count it
    rng_state = torch.get_rng_state().numel() if gradient_checkpointing else 0
    assert traced + rng_state == allocator


def test_fake_tensors_count_what_real_tensors_count():
    """The fake path of the engine (built on meta, converted by to_fake) gives the real run's peak."""
    traced_real, _ = _real_run()
    from torch._subclasses.fake_tensor import FakeTensorMode

    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(_config())
    fake_mode = FakeTensorMode(allow_non_fake_inputs=True)
    to_fake(model, fake_mode)
    model.train()
    tracker = StorageTracker()
    params = list(model.parameters())
    for p in params:
        tracker.register(p, "weights")
    with fake_mode, tracker:
        ids = torch.randint(0, 512, (2, 64))
        _steps(model, tracker, ids)
    log = tracker.close()
    # the fake run also counts the input ids (its own allocation inside the mode): 2*64 int64
    assert _raw_peak_above_params(log, len(params)) == traced_real + 2 * 64 * 8


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_adds_cuda_softmax_backward_temporary(dtype):
    """CUDA's softmax backward allocates `grad * output` before its kernel; the CPU kernel the trace runs does not.
    With cuda_temporaries the tracker holds that tensor while the op runs: the peak (output, incoming gradient,
    input gradient) grows by exactly one softmax-sized tensor of the gradient's dtype."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from memplan.terms.activations import cuda_softmax_backward_tmp_bytes

    peaks = {}
    for cuda in (False, True):
        with FakeTensorMode():
            x = torch.empty(2, 4, 64, 64, dtype=dtype, requires_grad=True)
            tracker = StorageTracker(cuda_temporaries=cuda)
            with tracker:
                tracker.begin("backward")
                y = torch.softmax(x, -1)
                y.backward(torch.ones_like(y))
                tracker.end()
        peaks[cuda] = tracker.close().peak_bytes
    size = x.element_size()
    assert peaks[False] == 3 * size * 2 * 4 * 64 * 64
    assert peaks[True] - peaks[False] == cuda_softmax_backward_tmp_bytes(2 * 4 * 64 * 64, size) == size * 32_768
