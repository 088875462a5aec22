"""FSDP2's model states against torch's own FSDP2 run on a fake process group (tests/trace/fsdp_fake_pg.py: real
fully_shard, fake tensors, FSDPMemTracker): the formula's sharded parameters and optimizer states, the root's
unsharded parameters and one block's all-gather output (FULL_SHARD), all unsharded parameters (SHARD_GRAD_OP).
World sizes 2, 3 (padded shards), 4 and 8."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import memplan
from memplan.engines.formula.placement import fsdp_sums
from memplan.engines.formula.static import static_terms
from memplan.job import resolve
from memplan.terms import sharding as sh

CONFIG = {"model_type": "llama", "hidden_size": 512, "intermediate_size": 1376, "num_hidden_layers": 4,
          "num_attention_heads": 8, "num_key_value_heads": 4, "vocab_size": 8000}
CASES = [(2, True), (3, True), (4, True), (8, True), (4, False), (3, False)]


def traced(world: int, reshard: bool) -> dict:
    case = {"config": CONFIG, "world": world, "reshard": reshard, "batch": 2, "seq": 256}
    out = subprocess.run([sys.executable, "-m", "tests.trace.fsdp_fake_pg", json.dumps(case)], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("world, reshard", CASES)
def test_fsdp2_model_states_match_torchs_own_run(world, reshard):
    job = {"model_config": CONFIG, "method": "full", "weight_dtype": "fp32", "mixed_precision": "bf16",
           "parallelism": "fsdp", "zero_stage": 3 if reshard else 2, "num_gpus": world, "micro_batch_size": 2,
           "seq_len": 256, "optimizer_impl": "for_loop"}
    e = memplan.estimate(job)
    peak = traced(world, reshard)
    info = resolve(job).info
    assert e.components["weights"] == peak["Sharded Param"]  # padded Shard(0) chunks, fp32
    # AdamW's two moments per sharded element; the tracker adds the per-parameter step counters (4 B each)
    assert peak["OptState"] - e.components["optimizer_states"] == 4 * len(info.params)
    sums = fsdp_sums(info, world, 2)  # blocks and a root of everything else, as this script wraps them
    block, root = sums.largest_block, sums.root
    if reshard:  # the root stays unsharded through the step; the block being computed is gathered
        assert peak["Unsharded Param"] == root
        assert peak["All Gather"] == block
    else:
        blocks_and_root = sh.fsdp_unsharded_bytes([p.shape for p in info.params], world, 2)
        assert peak["Unsharded Param"] == blocks_and_root


GPT2 = {"model_type": "gpt2", "n_embd": 256, "n_layer": 3, "n_head": 4, "vocab_size": 5000, "n_positions": 512}
CROSS = [  # (config, world, zero_stage, method, gradient checkpointing)
    (CONFIG, 2, 3, "full", False), (CONFIG, 4, 3, "full", False), (CONFIG, 8, 3, "full", False),
    (CONFIG, 2, 2, "full", False), (CONFIG, 4, 2, "full", True), (CONFIG, 8, 3, "full", True),
    (CONFIG, 2, 3, "lora", False), (CONFIG, 4, 3, "lora", True), (CONFIG, 4, 2, "lora", False),
    (CONFIG, 8, 2, "lora", True),
    (GPT2, 2, 3, "full", False), (GPT2, 4, 2, "full", False), (GPT2, 8, 3, "full", True),
    (GPT2, 2, 3, "lora", False), (GPT2, 4, 3, "lora", True), (GPT2, 8, 2, "lora", False),
]


@pytest.mark.parametrize("config, world, stage, method, gc", CROSS,
                         ids=[f"{c['model_type']}-n{w}-z{z}-{m}{'-gc' if g else ''}" for c, w, z, m, g in CROSS])
def test_formula_fsdp2_peak_against_the_traced_fsdp2_step(config, world, stage, method, gc):
    """The trace engine runs the real step with torch's FSDP2 on a fake process group (memplan.engines.trace.fsdp);
    the formula's per-GPU peak allocated must lie within 2% of it."""
    job = {"model_config": config, "method": method, "weight_dtype": "fp32", "mixed_precision": "bf16",
           "parallelism": "fsdp", "zero_stage": stage, "num_gpus": world, "micro_batch_size": 2, "seq_len": 256,
           "gradient_checkpointing": gc, "optimizer_impl": "for_loop"}
    formula = memplan.estimate(job).peak_allocated_bytes
    traced = memplan.estimate(job, engine="trace").peak_allocated_bytes
    assert abs(formula - traced) <= 0.02 * traced, (formula, traced, f"{100 * (formula / traced - 1):+.2f}%")


@pytest.mark.parametrize("method, world", [("full", 4), ("lora", 2)])
def test_an_fp32_reduce_dtype_against_the_traced_step(method, world):
    """MixedPrecisionPolicy(reduce_dtype=fp32): the reduce-scatter input is an fp32 copy of a block's bf16
    gradients (memplan.terms.sharding.fsdp_block_backward_bytes); the formula's peak stays within 2% of the trace
    that runs the policy."""
    job = {"model_config": CONFIG, "method": method, "parallelism": "fsdp", "zero_stage": 3, "num_gpus": world,
           "micro_batch_size": 2, "seq_len": 256, "gradient_checkpointing": True, "optimizer_impl": "for_loop",
           "fsdp_reduce_dtype": "fp32"}
    formula, traced = memplan.estimate(job), memplan.estimate(job, engine="trace")
    assert abs(formula.peak_allocated_bytes - traced.peak_allocated_bytes) <= 0.02 * traced.peak_allocated_bytes


@pytest.mark.parametrize("method, world", [("full", 4), ("lora", 8)])
def test_bf16_weights_trainable_upcast_as_accelerate_does(method, world):
    """The common job (bf16 weights, bf16 mixed precision): accelerate (1.14+) upcasts the trainable parameters to
    fp32 before sharding and leaves the frozen ones in bf16, in the trace as in the formula: a full fine-tune keeps
    4 bytes per sharded element, LoRA 2 per frozen base element plus its fp32 adapters; the peaks agree within
    2%."""
    job = {"model_config": CONFIG, "method": method, "parallelism": "fsdp", "zero_stage": 3, "num_gpus": world,
           "micro_batch_size": 2, "seq_len": 256}
    formula = memplan.estimate(job)
    traced = memplan.estimate(job, engine="trace")
    info = resolve(job).info
    base = [p.shape for p in info.params]
    if method == "full":
        assert formula.components["weights"] == sh.fsdp_sharded_bytes(base, world, 4)
    else:
        frozen = sh.fsdp_sharded_bytes(base, world, 2)
        assert frozen < formula.components["weights"] < frozen + sh.fsdp_sharded_bytes(base, world, 4) // 20
    # (the trace rounds each small adapter shard up to CUDA's 512-byte blocks)
    assert abs(formula.components["weights"] - traced.components["weights"]) <= 0.002 * traced.components["weights"]
    assert abs(formula.peak_allocated_bytes - traced.peak_allocated_bytes) <= 0.02 * traced.peak_allocated_bytes


QLORA = [(2, 3, False, "auto", 2), (4, 3, True, "auto", 2), (4, 2, False, "auto", 2), (8, 3, True, "uint8", 2),
         (8, 3, True, "auto", 1)]


@pytest.mark.parametrize("world, stage, gc, storage, version", QLORA,
                         ids=[f"v{v}-n{w}-z{z}{'-gc' if g else ''}-{s}" for w, z, g, s, v in QLORA])
def test_qlora_under_fsdp_against_the_traced_step(world, stage, gc, storage, version):
    """QLoRA under FSDP: the packed 4-bit weights are [n/4, 1] bf16 parameters (quant_storage = the compute
    dtype) sharded by FSDP2 itself, or with uint8 storage left out of sharding (accelerate's ignored_params); the
    quantization state is replicated. The formula's sharded weights equal the trace's to the byte (up to CUDA's
    512-byte rounding of the adapters' shards), its peak lies within 2%, and its load phase (FSDP2: the whole
    quantized model on every GPU before fully_shard; FSDP1, traced by its stand-in wrapping: the shards) equals
    the traced one."""
    job = {"model_config": CONFIG, "method": "qlora", "parallelism": "fsdp", "zero_stage": stage, "num_gpus": world,
           "micro_batch_size": 2, "seq_len": 256, "gradient_checkpointing": gc, "optimizer_impl": "for_loop",
           "quant_storage": storage, "fsdp_version": version}
    formula, traced = memplan.estimate(job), memplan.estimate(job, engine="trace")
    r = resolve(job)
    tensors = len(r.info.params) + len(static_terms(r.info, r.spec).tr.tensors)
    # (the trace rounds each shard up to CUDA's 512-byte blocks: at most 512 B per tensor)
    assert abs(formula.components["weights"] - traced.components["weights"]) <= 512 * tensors
    assert abs(formula.peak_allocated_bytes - traced.peak_allocated_bytes) <= 0.02 * traced.peak_allocated_bytes
    assert abs(formula.phases["load"] - traced.phases["load"]) <= 512 * tensors
    if storage == "uint8":  # the 4-bit weights stay whole: more per GPU than sharded bf16 storage
        sharded = memplan.estimate({**job, "quant_storage": "auto"})
        assert formula.components["weights"] > sharded.components["weights"]


def test_the_fsdp_trace_refuses_a_process_that_already_has_a_process_group():
    import torch.distributed as dist
    from torch.testing._internal.distributed.fake_pg import FakeStore

    job = {"model_config": CONFIG, "method": "lora", "parallelism": "fsdp", "zero_stage": 3, "num_gpus": 2,
           "micro_batch_size": 1, "seq_len": 64}
    dist.init_process_group("fake", rank=0, world_size=2, store=FakeStore())
    try:
        with pytest.raises(memplan.SpecError) as exc:
            memplan.estimate(job, engine="trace")
        assert exc.value.errors[0][0] == "engine" and "process group" in exc.value.errors[0][1]
    finally:
        dist.destroy_process_group()
    assert memplan.estimate(job, engine="trace").peak_allocated_bytes > 0  # and runs once it is gone


def test_the_final_norm_is_found_as_accelerate_finds_it():
    """The trace wraps the final norm into the tail group as accelerate's fsdp2_prepare_model does: its
    `_find_final_norm` rule, restated in memplan.engines.trace.fsdp, agrees with the installed accelerate on a plain
    model (the norm) and on a PEFT model (none: the lookups go through to the wrapped task model)."""
    import peft
    import torch
    import transformers

    fsdp_utils = pytest.importorskip("accelerate.utils.fsdp_utils")
    if not hasattr(fsdp_utils, "_find_final_norm"):
        pytest.skip("this accelerate predates the embedding / tail carve-out (1.14)")
    from memplan.engines.trace.fsdp import final_norm

    cfg = transformers.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                   vocab_size=100)
    with torch.device("meta"):
        plain = transformers.LlamaForCausalLM(cfg)
        wrapped = peft.get_peft_model(transformers.LlamaForCausalLM(cfg),
                                      peft.LoraConfig(r=4, target_modules="all-linear"))
    assert final_norm(plain) is fsdp_utils._find_final_norm(plain) is plain.model.norm
    assert final_norm(wrapped) is fsdp_utils._find_final_norm(wrapped) is None
