"""memplan.check and memplan.sweep: the verdict with a margin, and the largest value that fits."""

import pytest

import memplan
from memplan.check import check
from memplan.spec import SpecError
from memplan.sweep import largest_fitting, sweep, with_value

EXAMPLE = {"model": "meta-llama/Llama-3.1-8B", "method": "qlora", "optimizer": "paged_adamw_8bit",
           "gradient_checkpointing": True, "gpu": "T4-16GB"}
GIB = 2**30


def test_check_docstring_example():
    """peak 14.44 GiB on a T4 (14.50 GiB usable): margin 0% needs 14.44 GiB (fits as a point estimate), but the
    range reaches 16.41 GiB: borderline, which does not pass unless accepted; 10% needs 15.89 (not)."""
    zero = check(EXAMPLE, 0)
    assert round(zero.estimate.peak_bytes / GIB, 2) == 14.44 and round(zero.usable_bytes / GIB, 2) == 14.50
    assert zero.fits and round(zero.required_bytes / GIB, 2) == 14.44
    assert round(zero.estimate.range.high_bytes / GIB, 2) == 16.41
    assert (zero.verdict, zero.passed) == ("borderline", False)
    accepted = check(EXAMPLE, 0, accept_borderline=True)
    assert (accepted.verdict, accepted.passed) == ("borderline", True)
    ten = check(EXAMPLE, 10)
    assert not ten.fits and round(ten.required_bytes / GIB, 2) == 15.89
    assert ten.message.startswith("DOES NOT FIT: meta-llama/Llama-3.1-8B on T4-16GB: peak 14.44 GiB")


@pytest.mark.parametrize("margin", [0.0, 5.0, 20.0])
def test_verdict_follows_the_range_and_the_margin(margin):
    """On GPUs sized around the job's range: capacity above range.high fits, inside the range is borderline,
    below range.low does not fit (capacity = usable less the margin); `passed` only for fits unless accepted."""
    e = memplan.estimate(EXAMPLE)
    low, high = e.range.low_bytes, e.range.high_bytes
    driver = e.gpu.memory_bytes - e.gpu.usable_bytes
    for capacity, want in ((high + 2**20, "fits"), ((low + high) // 2, "borderline"), (low - 2**20, "does_not_fit")):
        usable = int(capacity / (1 - margin / 100)) + 1
        r = check({**EXAMPLE, "gpu": {"memory_gib": (usable + driver) / GIB}}, margin)
        assert r.verdict == want, (capacity, want)
        assert r.passed is (want == "fits")
        assert r.estimate.range.low_bytes == low and r.estimate.range.high_bytes == high


@pytest.mark.parametrize("margin", [-1, 100, 250])
def test_check_rejects_bad_margins(margin):
    with pytest.raises(SpecError) as err:
        check(EXAMPLE, margin)
    assert err.value.errors[0][0] == "margin_pct"


@pytest.mark.parametrize("job,field", [
    (EXAMPLE, "micro_batch_size"),
    (EXAMPLE, "seq_len"),
    ({"model": "Qwen/Qwen2.5-7B", "task": "inference", "gpu": "L4-24GB"}, "inference.batch_size"),
    ({"model": "Qwen/Qwen2.5-7B", "task": "inference", "gpu": "L4-24GB"}, "inference.prompt_len"),
])
def test_largest_fitting_is_tight(job, field):
    best = largest_fitting(job, field)
    spec = memplan.parse_spec(job)
    assert best is not None and memplan.estimate(with_value(spec, field, best)).fits
    assert not memplan.estimate(with_value(spec, field, best + 1)).fits


def test_largest_fitting_none_when_nothing_fits():
    assert largest_fitting({**EXAMPLE, "method": "full", "weight_dtype": "bf16"}, "micro_batch_size") is None


def test_with_value_keeps_unset_fields_unset():
    # attention left out stays defaulted, so Gemma 2 still falls back to eager instead of rejecting sdpa
    spec = memplan.parse_spec({"model": "google/gemma-2-2b", "method": "lora"})
    changed = with_value(spec, "micro_batch_size", 4)
    assert changed.micro_batch_size == 4 and "attention" not in changed.model_fields_set
    assert with_value(changed, "inference.prompt_len", 99).inference.prompt_len == 99


def test_sweep_grid_reaches_past_the_largest_fit():
    s = sweep(EXAMPLE, "seq_len")
    values = [p.value for p in s.points]
    assert values == sorted(values) and values[0] == 128 and values[-1] > s.largest_fitting
    peaks = [p.peak_bytes for p in s.points]
    assert peaks == sorted(peaks)  # more tokens never lower the peak
    assert [p.fits for p in s.points] == [p.value <= s.largest_fitting for p in s.points]


def test_sweep_rejects_unknown_fields_and_bad_values():
    with pytest.raises(SpecError, match="allowed: micro_batch_size"):
        sweep(EXAMPLE, "lora.r")
    with pytest.raises(SpecError, match="values"):
        sweep(EXAMPLE, "micro_batch_size", [0])
    with pytest.raises(SpecError, match="1 to 64 values"):
        sweep(EXAMPLE, "micro_batch_size", list(range(1, 70)))


def test_searches_stop_at_a_learned_position_table():
    """GPT-2's 1,024 learned positions bound the sequence searches where memory does not: the longest fitting
    seq_len is the table, and the default grid stops there instead of asking for jobs the model cannot run."""
    from memplan.plan import longest_seq_len

    job = {"model": "openai-community/gpt2", "method": "full", "seq_len": 512, "gpu": "H200-141GB"}
    assert largest_fitting(job, "seq_len") == 1024
    assert longest_seq_len(job, margin_pct=10) == 1024
    assert [p.value for p in sweep(job, "seq_len").points] == [128, 256, 512, 1024]
    prompt = {**job, "method": "prompt_tuning"}  # 20 virtual tokens take 20 of the positions
    assert largest_fitting(prompt, "seq_len") == 1004
    generation = {"model": "openai-community/gpt2", "task": "inference", "gpu": "H200-141GB",
                  "inference": {"prompt_len": 128, "max_new_tokens": 24}}
    assert largest_fitting(generation, "inference.prompt_len") == 1000
