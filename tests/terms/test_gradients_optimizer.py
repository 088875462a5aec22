from memplan.terms.gradients import gradient_bytes
from memplan.terms.optimizer import (
    adafactor_state_bytes,
    adafactor_step_temp_bytes,
    adam_32bit_bnb_state_bytes,
    adam_8bit_state_bytes,
    adamw_state_bytes,
    adamw_step_temp_bytes,
    momentum_state_bytes,
    single_tensor_update_temp_bytes,
)

P8B = 8_030_261_248


def test_gradients_bf16_8b():
    assert gradient_bytes([(P8B, "bf16")]) == 16_060_522_496


def test_adamw_states():
    assert adamw_state_bytes(P8B, "bf16") == 32_121_044_992
    assert adamw_state_bytes(16 * 4096, "fp32") == 524_288


def test_adam_8bit_blockwise_and_small_tensors():
    assert adam_8bit_state_bytes(65_536) == 2 * (65_536 + 1_024)
    assert adam_8bit_state_bytes(1_024) == 8_192  # under min_8bit_size: two fp32 states
    big = 10**9
    assert abs(adam_8bit_state_bytes(big) / big - 2.031) < 0.001


def test_32bit_bnb_and_momentum():
    assert adam_32bit_bnb_state_bytes(1_048_576) == 8_388_608
    assert momentum_state_bytes(1_048_576, "bf16") == 2_097_152
    assert adam_32bit_bnb_state_bytes(1_000_000) == 2 * 4_000_256  # each state rounded up to 512 B


def test_adafactor():
    assert adafactor_state_bytes((4096, 14336)) == 73_728
    assert adafactor_state_bytes((4096,)) == 16_384
    assert adafactor_step_temp_bytes([525_336_576, 4096]) == 16 * 525_336_576
    mlp = 58_720_256
    assert adafactor_step_temp_bytes([4096, mlp, mlp]) == 4 * 4 * mlp + 4 * mlp == 1_174_405_120
    assert adafactor_step_temp_bytes([4096, mlp, mlp], low_precision=False) == 2 * 4 * mlp + 4 * mlp


def test_adamw_step_temporaries():
    assert adamw_step_temp_bytes("foreach", 16_060_522_496, 1_050_673_152) == 16_060_522_496
    assert adamw_step_temp_bytes("for_loop", 16_060_522_496, 1_050_673_152) == 2_101_346_304
    assert adamw_step_temp_bytes("fused", 16_060_522_496, 1_050_673_152) == 0
    assert single_tensor_update_temp_bytes(1_050_673_152) == 1_050_673_152
