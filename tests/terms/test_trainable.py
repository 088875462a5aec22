from memplan.terms.trainable import (
    bottleneck_adapter_params,
    ia3_params,
    lora_params,
    prefix_tuning_params,
    prompt_tuning_params,
)


def test_lora_q_proj_8b():
    assert lora_params(4096, 4096, 16) == 131_072


def test_prompt_and_prefix_8b():
    assert prompt_tuning_params(20, 4096) == 81_920
    assert prompt_tuning_params(20, 768, transformer_submodules=2) == 30_720
    assert prefix_tuning_params(20, 32, 8 * 128) == 1_310_720


def test_ia3_8b_defaults():
    per_layer = ia3_params(1024, 0) + ia3_params(1024, 0) + ia3_params(0, 14336)
    assert per_layer == 16_384 and 32 * per_layer == 524_288


def test_bottleneck_adapter_8b():
    assert bottleneck_adapter_params(4096, 64, 32) == 33_820_672
