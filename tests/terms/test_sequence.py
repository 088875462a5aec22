"""The worked examples of memplan.terms.sequence, derived by hand in each docstring, and what sequence parallelism
does to a whole estimate."""

import memplan
from memplan.terms import sequence as sq


def test_local_tokens():
    assert sq.local_tokens(1, 32768, 4) == 8192
    assert sq.local_tokens(2, 4096, 8) == 1024


def test_ulysses_kv_replication_only_when_kv_heads_are_fewer_than_the_group():
    assert sq.ulysses_kv_replication_bytes(2048, 128, 8, 16, 2) == 2 * 2 * 2048 * 128 * 8 == 8_388_608
    assert sq.ulysses_kv_replication_bytes(8192, 128, 8, 4, 2) == 0
    assert sq.ulysses_kv_replication_bytes(8192, 128, 8, 8, 2) == 0


def test_ulysses_all_to_all():
    assert sq.ulysses_all_to_all_bytes(8192, 128, 32, 8, 4, 2) == 2 * 8192 * 128 * (32 + 16) == 100_663_296


def test_ring_attention_forward_and_backward():
    assert sq.ring_attention_forward_bytes(1, 32768, 8192, 128, 32, 8, 2) == 134_217_728 + 134_217_728
    assert sq.ring_attention_backward_bytes(1, 32768, 8192, 128, 32, 8, 2) == 134_217_728 + 201_326_592


JOB = {"model": "meta-llama/Llama-3.1-8B", "method": "full", "num_gpus": 8, "zero_stage": 3,
       "gradient_checkpointing": True, "attention": "flash_attention_2", "gpu": "H200-141GB"}


def test_ulysses_holds_the_activations_of_its_local_tokens():
    """Ulysses over 4 GPUs at 32k tokens saves what 8k tokens save without it (Llama-3.1-8B's 8 kv heads divide by
    4: no replicated keys and values), and its peak adds at most the all-to-all buffers."""
    split = memplan.estimate({**JOB, "seq_len": 32768, "sequence_parallel_size": 4})
    local = memplan.estimate({**JOB, "seq_len": 8192})
    assert split.components["activations"] == local.components["activations"]
    assert split.components.get("logits", 0) == local.components.get("logits", 0)
    all_to_all = sq.ulysses_all_to_all_bytes(8192, 128, 32, 8, 4, 2)
    assert local.peak_allocated_bytes <= split.peak_allocated_bytes <= local.peak_allocated_bytes + all_to_all


def test_more_sequence_parallelism_never_raises_the_peak():
    peaks = [memplan.estimate({**JOB, "seq_len": 65536, "sequence_parallel_size": sp}).peak_bytes
             for sp in (1, 2, 4, 8)]
    assert peaks == sorted(peaks, reverse=True) and peaks[-1] < peaks[0]
    fsdp = {**JOB, "parallelism": "fsdp", "attention": "sdpa"}
    peaks = [memplan.estimate({**fsdp, "seq_len": 65536, "sequence_parallel_size": sp}).peak_bytes
             for sp in (1, 2, 4, 8)]
    assert peaks == sorted(peaks, reverse=True) and peaks[-1] < peaks[0]


def test_sequence_parallelism_is_not_traced():
    import pytest

    with pytest.raises(memplan.SpecError) as exc:
        memplan.estimate({**JOB, "seq_len": 1024, "sequence_parallel_size": 2}, engine="trace")
    assert exc.value.errors[0][0] == "engine"


def test_ulysses_needs_heads_the_group_divides():
    """DeepSpeed's UlyssesSPAttentionHF: query heads divisible by the group, key/value heads dividing it or
    divisible by it; Llama-3.1-8B (32 / 8 heads) on 16 GPUs replicates its kv heads, on 6 is refused."""
    import pytest

    ok = memplan.estimate({**JOB, "num_gpus": 16, "seq_len": 65536, "sequence_parallel_size": 16})
    assert ok.peak_bytes > 0
    with pytest.raises(memplan.SpecError) as exc:
        memplan.estimate({**JOB, "num_gpus": 6, "seq_len": 6144, "sequence_parallel_size": 6})
    assert exc.value.errors[0][0] == "sequence_parallel_size" and "32 query and 8 key/value heads" in \
        exc.value.errors[0][1]
