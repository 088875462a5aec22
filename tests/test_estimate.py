"""The estimator end to end: reference points, the QLoRA headline, and the JSON contract."""

import pytest

import memplan
from memplan.spec import SpecError

GIB = 2**30
LLAMA8B = "meta-llama/Llama-3.1-8B"
CONTRACT_KEYS = {"peak_allocated_bytes", "peak_reserved_bytes", "peak_bytes", "components", "peak_phase", "params",
                 "gpu", "fits", "headroom_bytes", "range", "assumptions"}


def allocated_without_workspace(spec: dict) -> float:
    e = memplan.estimate({"gpu": "H200-141GB", **spec})
    return (e.peak_allocated_bytes - e.components.get("cublas_workspace", 0)) / GIB


# Peaks of a Llama-3-8B-shaped step (b=1, V=128,256, pure bf16, 2 steps) traced on fake CPU tensors with a
# storage-tracking dispatch mode: shared/reference/memory-mechanics.md part B3. The trace sees no cuBLAS
# workspace, so it is taken off the estimate. A CPU trace is not a GPU measurement: profiles/ will hold those.
TRACED = [
    ({"method": "full", "seq_len": 4096, "optimizer_impl": "for_loop"}, 75.39),
    ({"method": "full", "seq_len": 4096, "optimizer_impl": "for_loop", "gradient_checkpointing": True}, 61.79),
    ({"method": "full", "seq_len": 4096, "optimizer_impl": "foreach", "gradient_checkpointing": True}, 74.79),
    ({"method": "full", "seq_len": 2048, "optimizer_impl": "for_loop"}, 61.79),
    ({"method": "full", "seq_len": 2048, "optimizer_impl": "for_loop", "attention": "eager"}, 84.87),
    ({"method": "lora", "seq_len": 4096, "lora": {"r": 16, "dropout": 0.0}}, 57.37),
    ({"method": "lora", "seq_len": 4096, "lora": {"r": 16, "dropout": 0.0}, "gradient_checkpointing": True}, 22.38),
]


@pytest.mark.parametrize("spec,traced_gib", TRACED)
def test_agrees_with_fake_tensor_traces(spec, traced_gib):
    got = allocated_without_workspace({"model": LLAMA8B, "mixed_precision": "no", **spec})
    assert abs(got - traced_gib) / traced_gib < 0.01, f"{got:.2f} GiB vs traced {traced_gib} GiB"


def test_qlora_paper_headline():
    """QLoRA (Dettmers et al. 2023): a 65B LLaMA fine-tunes on one 48 GB GPU, while regular 16-bit fine-tuning
    (mixed precision over fp32 master weights, Adam) needs more than 780 GB."""
    qlora = memplan.estimate({"model": "huggyllama/llama-65b", "method": "qlora", "optimizer": "paged_adamw_8bit",
                              "gradient_checkpointing": True, "seq_len": 512, "gpu": {"memory_gib": 48 * 1e9 / GIB}})
    assert qlora.fits and qlora.peak_bytes < 48e9
    full = memplan.estimate({"model": "huggyllama/llama-65b", "method": "full", "weight_dtype": "fp32",
                             "mixed_precision": "bf16", "gradient_checkpointing": True, "seq_len": 512})
    assert full.peak_bytes > 780e9 and not full.fits


def test_json_contract_and_components_add_up():
    e = memplan.estimate({"model": LLAMA8B, "method": "qlora", "gpu": "T4-16GB"})
    data = e.model_dump(mode="json")
    assert CONTRACT_KEYS <= set(data)
    assert set(data["params"]) == {"total", "trainable"} and set(data["range"]) == {"low_bytes", "high_bytes"}
    assert sum(e.components.values()) == e.peak_bytes
    assert e.peak_allocated_bytes <= e.peak_reserved_bytes <= e.peak_bytes
    assert e.range.low_bytes <= e.peak_bytes <= e.range.high_bytes
    assert e.headroom_bytes == e.gpu.usable_bytes - e.peak_bytes
    assert e.peak_phase in e.phases and e.phases[e.peak_phase] == e.peak_allocated_bytes
    assert all(isinstance(v, int) for v in e.components.values())


def test_qlora_weights_are_4127_bits_for_the_linears():
    e = memplan.estimate({"model": LLAMA8B, "method": "qlora", "task": "inference", "weight_dtype": "nf4"})
    # 6.98B quantized linear params at 4.127 bits + 1.05B embedding + 1.05B lm_head + norms in bf16
    linear = 6_979_321_856 * 0.51587
    floats = (2 * 525_336_576 + 65 * 4096) * 2
    assert abs(e.components["weights"] - (linear + floats)) / e.components["weights"] < 0.001


def test_gradient_accumulation_keeps_gradients_through_forward():
    one = memplan.estimate({"model": LLAMA8B, "method": "full", "gpu": "H200-141GB"})
    many = memplan.estimate({"model": LLAMA8B, "method": "full", "gpu": "H200-141GB",
                             "gradient_accumulation_steps": 4})
    assert many.phases["forward"] - one.phases["forward"] == 16_060_522_496  # bf16 gradients stay allocated


def test_paged_optimizer_is_outside_pytorch():
    e = memplan.estimate({"model": LLAMA8B, "method": "qlora", "optimizer": "paged_adamw_8bit"})
    assert e.components["paged_optimizer_states"] > 0
    assert e.peak_bytes - e.peak_reserved_bytes == e.components["cuda_context"] + e.components["paged_optimizer_states"]


def test_inference_kv_cache():
    e = memplan.estimate({"model": LLAMA8B, "task": "inference",
                          "inference": {"prompt_len": 4096, "max_new_tokens": 0}})
    assert e.peak_phase == "prefill" and e.components["kv_cache"] == 4096 * 131_072
    fp8 = memplan.estimate({"model": LLAMA8B, "task": "inference",
                            "inference": {"prompt_len": 4096, "max_new_tokens": 0, "kv_cache_dtype": "fp8"}})
    assert fp8.components["kv_cache"] == 4096 * 65_536


@pytest.mark.parametrize("model_id", ["google/flan-t5-base", "google-bert/bert-base-uncased", "openai-community/gpt2",
                                      "mistralai/Mixtral-8x7B-v0.1", "google/gemma-2-2b", "tiiuae/falcon-7b"])
@pytest.mark.parametrize("method", ["full", "lora", "prompt_tuning", "ia3", "adapter", "freeze"])
def test_every_family_and_method_estimates(model_id, method):
    # lora dropout 0: PEFT refuses dropout on Mixtral's fused experts (tests/test_moe.py)
    e = memplan.estimate({"model": model_id, "method": method, "seq_len": 256, "gpu": "H200-141GB",
                          "lora": {"dropout": 0.0}})
    assert e.peak_bytes > e.components["weights"] > 0
    assert 0 < e.params.trainable <= e.params.total + e.params.trainable


def test_bad_input_names_the_field():
    with pytest.raises(SpecError) as err:
        memplan.estimate({"model": LLAMA8B, "method": "qlora", "weight_dtype": "bf16"})
    assert "qlora" in str(err.value) and "nf4" in str(err.value)
    with pytest.raises(SpecError) as err:
        memplan.estimate({"model": LLAMA8B, "gpu": "H100-SXM-81GB"})
    assert err.value.errors[0][0] == "gpu" and "H100-SXM-80GB" in err.value.errors[0][1]
    with pytest.raises(SpecError) as err:
        memplan.estimate({"model": LLAMA8B, "lora": {"target_modules": ["qkv"]}})
    assert err.value.errors[0][0] == "lora.target_modules"
    with pytest.raises(SpecError) as err:
        memplan.estimate({"model": "google-t5/t5-base", "attention": "flash_attention_2"})
    assert err.value.errors[0][0] == "attention"


def test_pre_ampere_gpus_have_no_bf16_and_no_flash_attention():
    """T4 / V100: an explicit bf16 or flash_attention_2 is bad input naming the field and what to use; a defaulted
    bf16 becomes fp16 (weights, autocast, an inference KV cache), said in the assumptions, and estimates as the
    same job written in fp16."""
    with pytest.raises(SpecError) as err:
        memplan.estimate({"model": "Qwen/Qwen2.5-0.5B", "gpu": "T4-16GB", "mixed_precision": "bf16"})
    assert err.value.errors[0][0] == "mixed_precision" and "use mixed_precision fp16" in err.value.errors[0][1]
    with pytest.raises(SpecError) as err:
        memplan.estimate({"model": "Qwen/Qwen2.5-0.5B", "gpu": "V100-SXM2-16GB", "mixed_precision": "no",
                          "weight_dtype": "bf16"})
    assert err.value.errors[0][0] == "weight_dtype" and "fp16 or fp32" in err.value.errors[0][1]
    with pytest.raises(SpecError) as err:
        memplan.estimate({"model": "Qwen/Qwen2.5-0.5B", "gpu": "T4-16GB", "mixed_precision": "fp16",
                          "attention": "flash_attention_2"})
    assert err.value.errors[0][0] == "attention" and "use sdpa" in err.value.errors[0][1]
    for job, written in (({"method": "lora"}, {"weight_dtype": "fp16", "mixed_precision": "fp16"}),
                         ({"task": "inference"}, {"weight_dtype": "fp16", "mixed_precision": "fp16",
                                                  "inference": {"kv_cache_dtype": "fp16"}})):
        base = {"model": "Qwen/Qwen2.5-0.5B", "gpu": "T4-16GB", **job}
        defaulted, explicit = memplan.estimate(base), memplan.estimate({**base, **written})
        assert defaulted.peak_bytes == explicit.peak_bytes
        assert any("T4-16GB (compute capability 7.5) has no bf16" in a for a in defaulted.assumptions)
        assert not any("has no bf16" in a for a in explicit.assumptions)
    # Ampere and newer, a custom GPU and an AMD one keep bf16
    for gpu in ("A10G-24GB", {"memory_gib": 16}, "MI300X-192GB"):
        e = memplan.estimate({"model": "Qwen/Qwen2.5-0.5B", "gpu": gpu, "mixed_precision": "bf16"})
        assert not any("has no bf16" in a for a in e.assumptions)


def test_a_length_past_the_trained_positions_is_a_warning():
    e = memplan.estimate({"model": "Qwen/Qwen2.5-0.5B", "seq_len": 65_536})
    assert ("warning: 65,536 tokens per sequence exceed qwen2's max_position_embeddings (32,768): the memory "
            "estimate holds, but the model was not trained that long") in e.assumptions
    inference = memplan.estimate({"model": "Qwen/Qwen2.5-0.5B", "task": "inference",
                                  "inference": {"prompt_len": 32_000, "max_new_tokens": 1_000}})
    assert any(a.startswith("warning: 33,000 tokens") for a in inference.assumptions)
    for job in ({"model": "Qwen/Qwen2.5-0.5B", "seq_len": 32_768},
                {"model": "google-t5/t5-base", "task": "inference", "inference": {"prompt_len": 512}}):
        assert not any(a.startswith("warning:") for a in memplan.estimate(job).assumptions)


def test_a_lora_target_that_matches_nothing_is_named():
    """PEFT adapts the targets that match and says nothing of a typo among them: memplan names it."""
    with pytest.raises(SpecError) as err:
        memplan.estimate({"model": "meta-llama/Llama-3.1-8B", "lora": {"target_modules": ["q_proj", "v_prj"]}})
    field, message = err.value.errors[0]
    assert field == "lora.target_modules" and message.startswith("['v_prj'] match no linear layer")
    assert "'v_proj'" in message
    full_path = {"target_modules": ["model.layers.0.self_attn.q_proj", "v_proj"]}
    assert memplan.estimate({"model": "meta-llama/Llama-3.1-8B", "lora": full_path}).params.trainable > 0


def test_remote_code_for_a_model_transformers_ships_is_ignored_with_a_note():
    from memplan import catalog

    cfg = dict(catalog.get_model("microsoft/phi-2").config)
    plain = memplan.estimate({"model_config": cfg})
    for extra in ({"auto_map": {"AutoModelForCausalLM": "modeling_phi.PhiForCausalLM"}}, {"trust_remote_code": True}):
        e = memplan.estimate({"model_config": {**cfg, **extra}})
        assert e.peak_bytes == plain.peak_bytes
        assert any("auto_map / trust_remote_code was ignored: transformers ships phi" in a for a in e.assumptions)
    # a model_type transformers does not ship: approximated as a Llama of its numbers, with a warning (phi-2's 51,200
    # vocabulary, 2560 wide, 32 layers of 32 heads, MLP 10,240; a Llama of those shapes has gated MLPs and no biases)
    custom = {**cfg, "model_type": "phi_custom", "auto_map": {"AutoConfig": "x.Y"}}
    e = memplan.estimate({"model_config": custom})
    assert e.model.model_type == "llama"
    assert e.params.total == 2 * 51_200 * 2560 + 32 * (4 * 2560 * 2560 + 3 * 2560 * 10_240 + 2 * 2560) + 2560
    assert any(a.startswith("warning: approximate: transformers does not ship model_type 'phi_custom'")
               for a in e.assumptions)
    with pytest.raises(SpecError) as err:  # without the numbers it still needs remote code, which never runs
        memplan.estimate({"model_config": {"model_type": "phi_custom", "auto_map": {"AutoConfig": "x.Y"},
                                           "hidden_size": 2560}})
    assert err.value.errors[0][0] == "model_config" and "never executes code" in err.value.errors[0][1]
    assert "layers, attention heads, MLP width, vocabulary" in err.value.errors[0][1]


def test_a_checkpoints_quantization_config_sets_the_weights():
    """weight_dtype auto (or unset) takes a pasted config.json's quantization_config: bitsandbytes 4-bit / 8-bit,
    GPTQ / AWQ 4-bit; an explicit weight_dtype overrides it; a method memplan does not model is bad input naming
    weight_dtype; the job's other rules still apply, saying where the dtype came from."""
    from memplan import catalog

    cfg = dict(catalog.get_model("meta-llama/Llama-3.1-8B").config)
    inf = {"task": "inference"}

    def weights(qc=None, **job):
        conf = {**cfg, "quantization_config": qc} if qc else cfg
        return memplan.estimate({"model_config": conf, **inf, **job}).components["weights"]

    bnb4 = {"quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "nf4",
            "bnb_4bit_use_double_quant": True}
    assert weights(bnb4) == memplan.estimate({"model": "meta-llama/Llama-3.1-8B", "weight_dtype": "nf4",
                                              **inf}).components["weights"]
    assert weights({"quant_method": "bitsandbytes", "load_in_8bit": True}) == weights(weight_dtype="int8")
    assert weights({"quant_method": "gptq", "bits": 4, "group_size": 128}) == weights(weight_dtype="int4")
    assert weights({"quant_method": "awq", "bits": 4}, weight_dtype="auto") == weights(weight_dtype="int4")
    assert weights(bnb4, weight_dtype="bf16") == weights() == weights(weight_dtype="auto")  # explicit wins
    e = memplan.estimate({"model_config": {**cfg, "quantization_config": bnb4}, **inf})
    assert ("weight_dtype nf4: the checkpoint's quantization_config (bitsandbytes 4-bit nf4, double quant); set "
            "weight_dtype to override it") in e.assumptions
    for qc in ({"quant_method": "gptq", "bits": 8}, {"quant_method": "compressed-tensors", "config_groups": {}}):
        with pytest.raises(SpecError) as err:
            weights(qc)
        assert err.value.errors[0][0] == "weight_dtype" and "does not model yet" in err.value.errors[0][1]
    # MXFP4 quantizes expert stacks only: a dense Llama's weights are unchanged by it
    assert weights({"quant_method": "mxfp4"}) == weights()
    with pytest.raises(SpecError) as err:  # an fp8 checkpoint is modelled as served (task serve), not generated
        weights({"quant_method": "fp8"})
    assert err.value.errors[0][0] == "weight_dtype" and "serving only" in err.value.errors[0][1]
    with pytest.raises(SpecError) as err:
        memplan.estimate({"model_config": {**cfg, "quantization_config": {"quant_method": "gptq", "bits": 4}},
                          "method": "full"})
    assert "comes from the checkpoint's quantization_config, GPTQ 4-bit" in err.value.errors[0][1]
