"""generate() options (task inference): beam search multiplies the batch from the prefill on and adds its fp32
scores; a static cache is allocated whole before the prefill and written in place."""

import pytest

import memplan
from memplan.spec import SpecError
from memplan.terms import logits as lg

BASE = {"model": "meta-llama/Llama-3.1-8B", "task": "inference",
        "inference": {"batch_size": 1, "prompt_len": 4096, "max_new_tokens": 512}}


def job(**inference):
    return {**BASE, "inference": {**BASE["inference"], **inference}}


def test_beams_multiply_the_batch_and_add_their_scores():
    beams = memplan.estimate(job(num_beams=4))
    batch = memplan.estimate(job(batch_size=4))
    for phase in ("prefill", "decode"):
        assert beams.phases[phase] - batch.phases[phase] == lg.beam_search_scores_bytes(4, 128_256) == 4_104_192


def test_a_static_cache_is_whole_from_the_prefill_and_written_in_place():
    dynamic = memplan.estimate(job())
    static = memplan.estimate(job(cache_implementation="static"))
    full = 2 * 32 * 8 * 128 * (4096 + 512) * 2  # K and V, 32 layers, 8 heads of 128, bf16
    assert static.phases["prefill"] - dynamic.phases["prefill"] == full - 2 * 32 * 8 * 128 * 4096 * 2
    # decode: the same cache, without torch.cat's copy of one layer's keys
    assert dynamic.phases["decode"] - static.phases["decode"] == 8 * 128 * (4096 + 512) * 2


def test_the_trace_refuses_what_it_does_not_run():
    with pytest.raises(SpecError) as err:
        memplan.estimate(job(num_beams=2), engine="trace")
    assert err.value.errors[0][0] == "engine" and "formula" in err.value.errors[0][1]
