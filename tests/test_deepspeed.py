"""ZeRO-2 / ZeRO-3 model-state bytes against DeepSpeed's own estimator functions (they run on CPU)."""

import pytest

pytest.importorskip("deepspeed")
from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs  # noqa: E402
from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs  # noqa: E402

from memplan.architecture import introspect  # noqa: E402
from memplan.terms import sharding as sh  # noqa: E402

ADAM_FP32_STATE = 8  # exp_avg + exp_avg_sq in fp32 per parameter


def model_states(p: int, largest: int, stage: int, n: int, offload_opt: bool, offload_params: bool) -> int:
    total = (sh.zero_param_bytes(p, 2, stage, n, offload_params) + sh.zero_grad_bytes(p, 2, stage, n, offload_opt)
             + sh.zero_optimizer_bytes(p, ADAM_FP32_STATE, 2, stage, n, offload_opt))
    return total + (sh.zero3_live_param_bytes(largest, 2) if stage == 3 else 0)


@pytest.mark.parametrize("model_id", ["meta-llama/Llama-3.1-8B", "meta-llama/Llama-3.1-70B", "Qwen/Qwen2.5-7B"])
@pytest.mark.parametrize("gpus", [1, 2, 8, 64])
@pytest.mark.parametrize("offload", [False, True])
def test_zero2_matches_deepspeed(model_id, gpus, offload):
    p = introspect(model_id).total_params
    _, ds_gpu = estimate_zero2_model_states_mem_needs(p, num_gpus_per_node=gpus, cpu_offload=offload)
    assert abs(model_states(p, 0, 2, gpus, offload, False) - ds_gpu) <= 16  # integer rounding only


@pytest.mark.parametrize("model_id", ["meta-llama/Llama-3.1-8B", "meta-llama/Llama-3.1-70B", "Qwen/Qwen2.5-7B"])
@pytest.mark.parametrize("gpus", [1, 8, 64])
@pytest.mark.parametrize("offload_opt,offload_params", [(False, False), (True, False), (True, True)])
def test_zero3_matches_deepspeed(model_id, gpus, offload_opt, offload_params):
    info = introspect(model_id)
    _, ds_gpu, _ = estimate_zero3_model_states_mem_needs(
        info.total_params, info.largest_module_params, num_gpus_per_node=gpus, cpu_offload=offload_opt,
        cpu_offload_params=offload_params)
    ours = model_states(info.total_params, info.largest_module_params, 3, gpus, offload_opt, offload_params)
    assert abs(ours - ds_gpu) <= 16


from memplan.terms import host  # noqa: E402


def test_host_docstring_examples():
    assert host.nodes_for(4) == (4, 1) and host.nodes_for(64) == (8, 8)
    assert host.zero_host_bytes(8_030_261_248, 0, 2, 8, 1, True, False) == 385_452_539_904


@pytest.mark.parametrize("model_id", ["meta-llama/Llama-3.1-8B", "meta-llama/Llama-3.1-70B"])
@pytest.mark.parametrize("gpus_per_node,nodes", [(1, 1), (4, 1), (8, 1), (8, 4)])
@pytest.mark.parametrize("offload", [False, True])
def test_host_bytes_match_deepspeed_zero2(model_id, gpus_per_node, nodes, offload):
    p = introspect(model_id).total_params
    ds_cpu, _ = estimate_zero2_model_states_mem_needs(p, gpus_per_node, nodes, cpu_offload=offload)
    assert abs(host.zero_host_bytes(p, 0, 2, gpus_per_node, nodes, offload, False) - ds_cpu) <= 1


@pytest.mark.parametrize("model_id", ["meta-llama/Llama-3.1-8B", "Qwen/Qwen2.5-7B"])
@pytest.mark.parametrize("gpus_per_node,nodes", [(1, 1), (8, 1), (8, 4)])
@pytest.mark.parametrize("offload_opt,offload_params", [(False, False), (True, False), (True, True)])
@pytest.mark.parametrize("zero_init", [True, False])
def test_host_bytes_match_deepspeed_zero3(model_id, gpus_per_node, nodes, offload_opt, offload_params, zero_init):
    info = introspect(model_id)
    ds_cpu, _, _ = estimate_zero3_model_states_mem_needs(
        info.total_params, info.largest_module_params, gpus_per_node, nodes, cpu_offload=offload_opt,
        cpu_offload_params=offload_params, zero_init=zero_init)
    ours = host.zero_host_bytes(info.total_params, info.largest_module_params, 3, gpus_per_node, nodes, offload_opt,
                                offload_params, zero_init)
    assert abs(ours - ds_cpu) <= 1
