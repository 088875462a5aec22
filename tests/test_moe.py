"""Mixture of experts as transformers 5 stores it and PEFT 0.21 adapts it: the terms' worked examples, PEFT's
target conversion (trainable counts equal PEFT's own), and what the real stack refuses, refused by name."""

from __future__ import annotations

import pytest

import memplan
from memplan.architecture import introspect
from memplan.spec import SpecError
from memplan.terms import activations as act
from memplan.terms import kv_cache as kv
from memplan.terms import trainable as tt

QWEN_MOE = "Qwen/Qwen3-30B-A3B"


def test_worked_examples():
    assert tt.expert_lora_params(128, 1536, 2048, 32) == 14_680_064
    assert act.merged_params_saved_bytes(402_653_184 + 201_326_592 + 262_144, 2) == 1_208_483_840
    assert act.merged_params_backward_transient_bytes([201_326_592, 402_653_184], 2) == 402_653_184
    assert act.merged_params_backward_transient_bytes([], 2) == 0
    assert kv.moe_prefill_transient_bytes(1024, 2048, 768, 8, 2) == 150_994_944


def test_expert_width_comes_from_the_stacks():
    """Qwen3-30B-A3B's experts are 768 wide (moe_intermediate_size); its config's intermediate_size (6144) is a dense
    MLP no layer has."""
    info = introspect(QWEN_MOE)
    assert {s.intermediate_size for s in info.layers} == {768}
    assert info.active_params == 3_353_032_704  # the card: "3.3B activated"


def test_lora_all_linear_adapts_the_experts_as_peft_does():
    """Per layer at r 16: the fused gate/up stack at rank 32 (128 x 32 x (1536 + 2048)), the down stack at rank 16
    (128 x 16 x (768 + 2048)), the router's weight (16 x (128 + 2048)) and the attention's four projections
    (16 x (2048 + 4096) for q and o, 16 x (2048 + 512) for k and v): 14,680,064 + 5,767,168 + 34,816 + 196,608 +
    81,920 = 20,760,576 per layer, 48 layers."""
    per_layer = (tt.expert_lora_params(128, 1536, 2048, 32) + tt.expert_lora_params(128, 2048, 768, 16)
                 + tt.expert_lora_params(1, 128, 2048, 16) + 2 * 16 * (2048 + 4096) + 2 * 16 * (2048 + 512))
    assert per_layer == 20_760_576
    e = memplan.estimate({"model": QWEN_MOE, "lora": {"dropout": 0.0}, "gradient_checkpointing": True,
                          "gpu": "H200-141GB"})
    assert e.params.trainable == 48 * per_layer
    attention_only = memplan.estimate({"model": QWEN_MOE, "gpu": "H200-141GB",
                                       "lora": {"target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}})
    assert attention_only.params.trainable == 48 * (2 * 16 * (2048 + 4096) + 2 * 16 * (2048 + 512))


def test_what_the_stack_refuses_is_refused_by_name():
    with pytest.raises(SpecError) as err:  # memplan's default lora.dropout 0.05: PEFT's ParamWrapper refuses it
        memplan.estimate({"model": QWEN_MOE})
    assert err.value.errors[0][0] == "lora.dropout" and "ParamWrapper" in err.value.errors[0][1]
    with pytest.raises(SpecError) as err:  # gate_proj is fused with up_proj
        memplan.estimate({"model": QWEN_MOE, "lora": {"dropout": 0.0, "target_modules": ["gate_proj"]}})
    assert err.value.errors[0][0] == "lora.target_modules" and "up_proj" in err.value.errors[0][1]
    with pytest.raises(SpecError) as err:
        memplan.estimate({"model": "mistralai/Mixtral-8x7B-v0.1", "method": "qlora", "lora": {"dropout": 0.0}})
    assert err.value.errors[0][0] == "method" and "grouped_mm" in err.value.errors[0][1]


def test_bitsandbytes_leaves_fused_experts_in_the_load_dtype():
    """Mixtral-8x7B's 45B expert parameters stay bf16 under nf4 (bitsandbytes replaces nn.Linear only): the nf4
    weights are the experts' 90 GB plus the quantized attention."""
    info = introspect("mistralai/Mixtral-8x7B-v0.1")
    experts = sum(p.numel for p in info.params if p.kind == "expert")
    nf4 = memplan.estimate({"model": "mistralai/Mixtral-8x7B-v0.1", "task": "inference", "weight_dtype": "nf4"})
    bf16 = memplan.estimate({"model": "mistralai/Mixtral-8x7B-v0.1", "task": "inference"})
    assert 2 * experts < nf4.components["weights"] < bf16.components["weights"]


def test_gpt_oss_serves_its_mxfp4_experts_and_refuses_training_them():
    """gpt-oss-20b's config carries quant_method mxfp4: its 19.1B expert weights at 4.25 bits and the rest (embedding,
    head, attention, router) in bf16; fine-tuning dequantizes them, so a train job must say bf16."""
    info = introspect("openai/gpt-oss-20b")
    experts = sum(p.numel for p in info.params if p.kind == "expert")
    rest = info.total_params - experts
    e = memplan.estimate({"model": "openai/gpt-oss-20b", "task": "inference"})
    assert abs(e.components["weights"] - (experts * 4.25 / 8 + 2 * rest)) < 2**20
    with pytest.raises(SpecError) as err:
        memplan.estimate({"model": "openai/gpt-oss-20b"})
    assert err.value.errors[0][0] == "weight_dtype" and "dequantize" in err.value.errors[0][1]
    trained = memplan.estimate({"model": "openai/gpt-oss-20b", "weight_dtype": "bf16", "lora": {"dropout": 0.0},
                                "gradient_checkpointing": True, "gpu": "H200-141GB"})
    assert trained.components["weights"] > 2 * info.total_params
