import pytest

from memplan.spec import SpecError, parse_spec


def test_defaults_and_qlora_nf4():
    s = parse_spec({"model": "meta-llama/Llama-3.1-8B"})
    # weight_dtype defaults to auto (DESIGN: the checkpoint's quantization_config, else bf16), resolved by the job
    assert (s.method, s.weight_dtype, s.mixed_precision, s.seq_len, s.lora.r) == ("lora", "auto", "bf16", 2048, 16)
    from memplan.job import resolve, with_weights

    assert resolve(s).spec.weight_dtype == with_weights(s).weight_dtype == "bf16"
    quantized = {"model_config": {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
                                  "num_hidden_layers": 1, "num_attention_heads": 4, "vocab_size": 100,
                                  "quantization_config": {"quant_method": "gptq", "bits": 4}}, "task": "inference"}
    assert with_weights(parse_spec(quantized)).weight_dtype == "int4"
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
    # QLoRA under FSDP: what the real stack refuses, and what would corrupt the packed weights
    ({"model": "x", "method": "qlora", "parallelism": "fsdp", "zero_stage": 3, "num_gpus": 2, "fsdp_version": 1,
      "quant_storage": "uint8"}, "quant_storage", "uniform dtype"),
    ({"model": "x", "method": "qlora", "parallelism": "fsdp", "zero_stage": 3, "num_gpus": 2,
      "quant_storage": "fp32"}, "quant_storage", "param_dtype ('bf16'"),
    ({"model": "x", "weight_dtype": "bf16", "quant_storage": "bf16"}, "quant_storage", "nf4 or fp4"),
    ({"model": "x", "method": "lora", "weight_dtype": "int8", "parallelism": "fsdp", "zero_stage": 3,
      "num_gpus": 2}, "weight_dtype", "floating-point"),
    ({"model": "x", "method": "qlora", "zero_stage": 3, "num_gpus": 2, "quant_storage": "uint8"}, "quant_storage",
     "ZeRO-3"),
    ({"model": "x", "quant_storage": "int8"}, "quant_storage", "'bf16'"),
    # sequence parallelism: where it runs and what it needs
    ({"model": "x", "num_gpus": 4, "sequence_parallel_size": 4}, "sequence_parallel_size", "'deepspeed'"),
    ({"model": "x", "num_gpus": 4, "zero_stage": 3, "sequence_parallel_size": 3}, "sequence_parallel_size",
     "must divide num_gpus"),
    ({"model": "x", "num_gpus": 4, "zero_stage": 3, "sequence_parallel_size": 4, "seq_len": 1001},
     "sequence_parallel_size", "multiple"),
    ({"model": "x", "num_gpus": 4, "zero_stage": 3, "sequence_parallel_size": 4, "attention": "eager"},
     "attention", "Ulysses"),
    ({"model": "x", "num_gpus": 4, "parallelism": "fsdp", "zero_stage": 3, "sequence_parallel_size": 4,
      "attention": "flash_attention_2"}, "attention", "'sdpa'"),
    ({"model": "x", "num_gpus": 4, "parallelism": "fsdp", "zero_stage": 3, "sequence_parallel_size": 4,
      "fsdp_version": 1}, "sequence_parallel_size", "FSDP2"),
    ({"model": "x", "zero_stage": 2, "num_gpus": 2, "zero3_max_live_parameters": 10**8}, "zero3_max_live_parameters",
     "ZeRO-3"),
    ({"model": "x", "parallelism": "fsdp", "zero_stage": 3, "num_gpus": 2, "zero3_init": False}, "zero3_init",
     "ZeRO-3"),
    # a list for a plain choice is named (only a union's list member is dropped as noise; hypothesis found it)
    ({"model": "x", "task": [], "optimizer_impl": []}, "task", "'train', 'inference' or 'serve'"),
])
def test_errors_name_the_field(data, field, words):
    with pytest.raises(SpecError) as err:
        parse_spec(data)
    locs = [loc for loc, _ in err.value.errors]
    assert field in locs
    assert words in str(err.value)


def test_quant_storage_auto_follows_sharding():
    """auto: the compute dtype where FSDP or ZeRO-3 shards the 4-bit weights (the recipes' setting), else uint8."""
    base = {"model": "x", "method": "qlora"}
    assert parse_spec(base).quant_storage_dtype == "uint8"
    assert parse_spec({**base, "parallelism": "fsdp", "zero_stage": 3, "num_gpus": 4}).quant_storage_dtype == "bf16"
    assert parse_spec({**base, "zero_stage": 3, "num_gpus": 4, "mixed_precision": "fp16"}).quant_storage_dtype == "fp16"
    assert parse_spec({**base, "zero_stage": 2, "num_gpus": 4}).quant_storage_dtype == "uint8"
