import pytest

from memplan.spec import SpecError, parse_spec


def test_defaults_and_qlora_nf4():
    s = parse_spec({"model": "meta-llama/Llama-3.1-8B"})
    assert (s.method, s.weight_dtype, s.mixed_precision, s.seq_len, s.lora.r) == ("lora", "bf16", "bf16", 2048, 16)
    assert parse_spec({"model": "x", "method": "qlora"}).weight_dtype == "nf4"


@pytest.mark.parametrize("data,field,words", [
    ({}, "model", "model"),
    ({"model": "x", "model_config": {"model_type": "llama"}}, "model", "exactly one"),
    ({"model": "x", "optimizer": "adam"}, "optimizer", "'adamw'"),
    ({"model": "x", "zero_stage": 4}, "zero_stage", "0"),
    ({"model": "x", "lora": {"rank": 8}}, "lora.rank", "did you mean 'r'"),
    ({"model": "x", "inference": {"kv_dtype": "fp8"}}, "inference.kv_dtype", "kv_cache_dtype"),
    ({"model": "x", "method": "full", "weight_dtype": "nf4"}, "method", "qlora"),
    ({"model": "x", "offload_params": True, "zero_stage": 2}, "offload_params", "zero_stage 3"),
    ({"model": "x", "micro_batch_size": 0}, "micro_batch_size", "greater than or equal to 1"),
])
def test_errors_name_the_field(data, field, words):
    with pytest.raises(SpecError) as err:
        parse_spec(data)
    locs = [loc for loc, _ in err.value.errors]
    assert field in locs
    assert words in str(err.value)
