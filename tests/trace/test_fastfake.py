"""memplan.engines.trace.fastfake's shortcuts past FakeTensorMode change no byte of a trace: on cross-check shapes that
exercise every shortcut (views, cached functional ops, device queries) through LoRA, QLoRA's stand-ins,
checkpointing's recompute, autocast, eager attention, an encoder-decoder and inference, every allocation, the
frees between each two allocations, every phase's peak and breakdown, and the allocator replay's peak reserved
are the same with and without them. (Tensors that die together, at the end of one statement, may be collected in
another order: the frees between two allocations are compared as a multiset.)"""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from memplan.job import resolve  # noqa: E402
from memplan.engines.trace.allocator import replay  # noqa: E402
from memplan.engines.trace.run import trace_job  # noqa: E402
from tests.trace.crosscheck_configs import CONFIGS  # noqa: E402

SHAPES = ["llama-lora-all", "llama-qlora-nf4-gc", "gpt2-full-eager-gc", "phi-lora-all-gc", "t5-ia3",
          "gemma2-infer-eager"]


def _trace(job, shortcuts):
    r = resolve(job)
    return trace_job(r.spec, r.attention, r.info.head_params, shortcuts=shortcuts)


def _allocations_and_frees(log):
    """[(frees since the previous allocation, sorted), allocation bytes, phase] for every allocation."""
    steps, frees = [], []
    for e in log.events:
        if e.nbytes < 0:
            frees.append(e.nbytes)
        else:
            steps.append((sorted(frees), e.nbytes, e.phase))
            frees = []
    return steps, sorted(frees)


@pytest.mark.parametrize("name", SHAPES)
def test_shortcuts_change_nothing(name):
    job = dict(CONFIGS)[name]
    fast, slow = _trace(job, True), _trace(job, False)
    assert len(fast.events) > 1000  # a real step ran
    assert _allocations_and_frees(fast) == _allocations_and_frees(slow)
    assert [(p.name, p.peak_bytes, p.breakdown) for p in fast.phases] == \
        [(p.name, p.peak_bytes, p.breakdown) for p in slow.phases]
    assert fast.peak_bytes == slow.peak_bytes and fast.breakdown == slow.breakdown
    assert replay((e.key, e.nbytes) for e in fast.events).max_reserved_bytes == \
        replay((e.key, e.nbytes) for e in slow.events).max_reserved_bytes
    assert fast.ops < slow.ops  # device queries are answered before counting; everything else is one op each
