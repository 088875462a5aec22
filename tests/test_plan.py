"""memplan.plan: every number it shows is an estimate that re-runs to the same bytes, its solvers are tight, its
changes save what they say, and bad targets are refused by field name."""

import pytest

import memplan
from memplan.plan import (Plan, PlanTarget, best_gpu, fewest_gpus, kv_cache_budget, largest_micro_batch,
                          longest_seq_len, plan)
from memplan.plan.changes import LOW_HEADROOM
from memplan.plan.solvers import dump, fits
from memplan.plan.speed import training_speed
from memplan.spec import SpecError, parse_spec
from memplan.sweep import with_value
from memplan.terms import compute as cp
from memplan import catalog

GIB = 2**30
SMALL_LORA = {"model": "HuggingFaceTB/SmolLM2-135M", "method": "lora", "seq_len": 1024, "gpu": "L4-24GB"}
# does not fit: full fine-tuning of 1.5B with a micro-batch of 4 on a 24 GB L4
TIGHT_FULL = {"model": "Qwen/Qwen2.5-1.5B", "method": "full", "seq_len": 2048, "micro_batch_size": 4,
              "gpu": "L4-24GB"}
# needs several GPUs (5 when written) with ZeRO-3 on 10 GiB cards
SHARDED = {"model": "Qwen/Qwen2.5-1.5B", "method": "full", "gradient_checkpointing": True, "seq_len": 1024,
           "gpu": {"memory_gib": 10}}


@pytest.fixture(scope="module")
def lora_plan() -> Plan:
    return plan(SMALL_LORA, {"global_batch_size": 48, "num_gpus": 2})


@pytest.fixture(scope="module")
def full_plan() -> Plan:
    return plan(TIGHT_FULL, {"global_batch_size": 16})


def _check_configurations(p: Plan, margin_pct: float = 0.0) -> None:
    assert p.configurations
    for o in p.configurations:
        e = memplan.estimate(o.job)
        assert e.peak_bytes == o.peak_bytes and e.headroom_bytes == o.headroom_bytes, o.label
        assert fits(e, margin_pct), o.label
        s = parse_spec(o.job)
        if s.task == "train":
            assert s.micro_batch_size == o.micro_batch_size and s.gradient_accumulation_steps == o.gradient_accumulation_steps
            assert s.num_gpus == o.num_gpus


@pytest.mark.parametrize("which", ["lora_plan", "full_plan"])
def test_every_configuration_re_estimates_to_its_bytes_and_reaches_the_global_batch(which, request):
    p = request.getfixturevalue(which)
    _check_configurations(p)
    for o in p.configurations:
        assert o.micro_batch_size * o.gradient_accumulation_steps * o.num_gpus == p.target.global_batch_size


def test_configurations_ranked_and_labelled(lora_plan):
    keys = [(o.recipe_changes, o.step_time_s / (48 * o.job["seq_len"])) for o in lora_plan.configurations]
    assert keys == sorted(keys)
    first = lora_plan.configurations[0]
    assert first.recipe_changes == 0 and first.job["method"] == "lora" and first.num_gpus == 2
    assert first.label.startswith("lora r16, ") and "mb " in first.label and first.label.endswith("2 GPUs")
    assert len({o.label for o in lora_plan.configurations}) == len(lora_plan.configurations)
    assert {o.job["method"] for o in lora_plan.configurations} >= {"lora", "full"}


def test_micro_batch_is_the_largest_divisor_that_fits(lora_plan):
    """Each option's micro-batch fits and the next divisor of the per-GPU batch (24) does not."""
    divs = [1, 2, 3, 4, 6, 8, 12, 24]
    for o in lora_plan.configurations:
        nxt = [d for d in divs if d > o.micro_batch_size]
        if nxt:
            bigger = {**o.job, "micro_batch_size": nxt[0], "gradient_accumulation_steps": 24 // nxt[0]}
            assert not memplan.estimate(bigger).fits, o.label


def test_step_time_by_hand():
    """Full fine-tuning of SmolLM2-135M, no checkpointing, sdpa (causal: halved), on an L4 (121 bf16 TFLOP/s):
    N = 106,168,320 Linear weights + 28,311,552 tied lm_head = 134,479,872; T = 2 x 1024;
    attention 30 layers, h_q = 576: 4*2*1024^2*576*30 / 2; step = 3 micro-steps of (6*N*T + 3*A) / (121e12 * 0.4)."""
    job = {"model": "HuggingFaceTB/SmolLM2-135M", "method": "full", "seq_len": 1024, "micro_batch_size": 2,
           "gradient_accumulation_steps": 3, "gpu": "L4-24GB"}
    N, T = 106_168_320 + 28_311_552, 2 * 1024
    A = 4 * 2 * 1024**2 * 576 * 30 // 2
    tflops = catalog.get_gpu("L4-24GB").dense_tflops["bf16"]
    expected = 3 * (6 * N * T + 3 * A) / (tflops * 1e12 * 0.4)
    assert training_speed(parse_spec(job)).step_time_s == pytest.approx(expected, rel=1e-12)
    # checkpointing adds one forward of the blocks (not the head)
    gc = training_speed(parse_spec({**job, "gradient_checkpointing": True})).step_time_s
    assert gc == pytest.approx(expected + 3 * (2 * (N - 28_311_552) * T + A) / (tflops * 1e12 * 0.4), rel=1e-12)


def test_margin_is_kept():
    p = plan(SMALL_LORA, {"global_batch_size": 8, "margin_pct": 20, "gpu": "T4-16GB"}, limit=4)
    _check_configurations(p, margin_pct=20)
    for o in p.configurations:
        assert o.headroom_bytes >= 0.2 * memplan.estimate(o.job).gpu.usable_bytes
    assert len(p.configurations) <= 4


# ---------------------------------------------------------------- solvers


def test_largest_micro_batch_is_tight():
    best = largest_micro_batch(TIGHT_FULL)
    spec = parse_spec(TIGHT_FULL)
    assert best is not None and best >= 1
    assert memplan.estimate(with_value(spec, "micro_batch_size", best)).fits
    assert not memplan.estimate(with_value(spec, "micro_batch_size", best + 1)).fits


def test_longest_seq_len_is_tight_to_the_token():
    best = longest_seq_len(TIGHT_FULL)
    spec = parse_spec(TIGHT_FULL)
    assert best is not None
    assert memplan.estimate(with_value(spec, "seq_len", best)).fits
    assert not memplan.estimate(with_value(spec, "seq_len", best + 1)).fits


def test_largest_micro_batch_with_a_margin_is_tight():
    best = largest_micro_batch(SMALL_LORA, margin_pct=30)
    spec = parse_spec(SMALL_LORA)
    assert fits(memplan.estimate(with_value(spec, "micro_batch_size", best)), 30)
    assert not fits(memplan.estimate(with_value(spec, "micro_batch_size", best + 1)), 30)
    assert best < largest_micro_batch(SMALL_LORA)


def test_fewest_gpus_is_tight():
    few = fewest_gpus(SHARDED)
    assert few is not None and few.num_gpus > 2 and few.zero_stage == 3  # 5 GPUs when written
    e = memplan.estimate(few.job)
    assert e.fits and e.peak_bytes == few.peak_bytes
    for stage in range(4):  # one GPU fewer fits at no stage
        assert not memplan.estimate({**SHARDED, "num_gpus": few.num_gpus - 1, "zero_stage": stage}).fits
    assert fewest_gpus(SHARDED, max_gpus=few.num_gpus - 1) is None


def test_fewest_gpus_searches_fsdp_beside_deepspeed():
    """Llama-2-70B QLoRA on 24 GB cards: DeepSpeed ZeRO-3 needs 6 GPUs; FSDP1 with the 4-bit weights sharded
    (bnb_4bit_quant_storage bf16) needs 4, and on 3 neither engine fits at any stage."""
    job = {"model": "meta-llama/Llama-2-70b-hf", "method": "qlora", "gpu": "RTX-4090-24GB",
           "gradient_checkpointing": True, "micro_batch_size": 2}
    own = fewest_gpus(job, other_engines=False)
    either = fewest_gpus(job)
    assert (own.num_gpus, own.parallelism) == (6, "deepspeed")
    assert (either.num_gpus, either.parallelism, either.job["fsdp_version"]) == (4, "fsdp", 1)
    assert memplan.estimate(either.job).peak_bytes == either.peak_bytes
    three = {**either.job, "num_gpus": 3}
    assert not any(memplan.estimate({**three, "zero_stage": z}).fits for z in (0, 2, 3))
    assert not any(memplan.estimate({**job, "num_gpus": 3, "zero_stage": z}).fits for z in (0, 1, 2, 3))


def test_best_gpu_smallest_memory_and_fastest():
    cheap = best_gpu(TIGHT_FULL, "smallest_memory")
    assert best_gpu(TIGHT_FULL, "cheapest") == cheap  # the old name
    assert cheap.basis.startswith("smallest total GPU memory") and "cheapest" not in cheap.basis
    fast = best_gpu(TIGHT_FULL, "fastest")
    assert cheap is not None and fast is not None
    for g in catalog.list_gpus():
        e = memplan.estimate({**TIGHT_FULL, "gpu": g.id})
        if g.memory_bytes < cheap.memory_bytes:
            assert not e.fits, g.id
        if e.fits:
            assert training_speed(parse_spec({**TIGHT_FULL, "gpu": g.id})).step_time_s >= fast.step_time_s
    assert memplan.estimate({**TIGHT_FULL, "gpu": cheap.gpu}).peak_bytes == cheap.peak_bytes


# ---------------------------------------------------------------- changes


def test_changes_save_exactly_what_they_say_and_are_sorted(full_plan):
    assert not full_plan.estimate.fits and full_plan.changes
    base = full_plan.estimate.peak_bytes
    baseline = dump(parse_spec({**TIGHT_FULL, "gradient_accumulation_steps": 16 // 4}))
    assert memplan.estimate(baseline).peak_bytes == base
    for c in full_plan.changes:
        e = memplan.estimate(c.job)
        assert e.peak_bytes == c.peak_bytes and base - e.peak_bytes == c.saves_bytes > 0, c.description
        assert e.fits == c.fits
        # one change: the job is the baseline with only the named fields changed
        changed = {k for k in c.job if c.job[k] != baseline[k]}
        assert changed == {path.split(".")[0] for path in c.fields}, c.description
        for path, value in c.fields.items():
            node = c.job
            for part in path.split("."):
                node = node[part]
            assert node == value
    keys = [(not c.fits, c.slowdown, -c.saves_bytes) for c in full_plan.changes]
    assert keys == sorted(keys)
    kinds = " | ".join(c.description for c in full_plan.changes)
    # (QLoRA is no change here: its fp32 MLP intermediates at micro-batch 4 outweigh the weights it saves)
    for expected in ("gradient checkpointing", "halve the micro-batch", "8-bit AdamW", "LoRA", "offload"):
        assert expected in kinds


def test_change_slowdowns_follow_the_compute_terms(full_plan):
    by = {tuple(c.fields.items()): c for c in full_plan.changes}
    assert by[(("micro_batch_size", 2), ("gradient_accumulation_steps", 8))].slowdown == 1.0  # same FLOPs
    assert by[(("gradient_checkpointing", True),)].slowdown > 1.0  # one more forward of the blocks
    assert by[(("method", "lora"),)].slowdown < 1.0  # LoRA: no weight gradients of the base
    assert by[(("optimizer", "adamw_8bit"),)].slowdown == 1.0


def test_no_changes_with_ample_headroom(lora_plan):
    e = lora_plan.estimate
    assert e.headroom_bytes >= LOW_HEADROOM * e.gpu.usable_bytes and lora_plan.changes == []


def test_custom_gpu_has_slowdowns_but_no_step_times():
    p = plan(SHARDED, {"global_batch_size": 4})
    assert all(o.step_time_s is None for o in p.configurations)
    assert p.changes and all(c.slowdown is not None for c in p.changes)
    assert any("custom GPU" in a for a in p.assumptions)


# ---------------------------------------------------------------- inference


def test_kv_cache_budget_by_hand():
    """Qwen2.5-0.5B, bf16, on an L4, prompt 1000 + 256 new tokens, gpu_memory_utilization 0.9, served by vLLM
    (memplan.engines.serving.vllm) at max_model_len 1256. The L4's memory as CUDA reports it is not in the catalog:
    the driver's 24,152,899,584 B less 512 MiB = 23,616,028,672 B; requested ceil(0.9 x that) = 21,254,425,805 B.
    Weights 988,096,512 B + the rotary table 32,768 x 64 x 2 = 4,194,304 B = 992,290,816 B. The profile run at an
    L4's defaults (2048 batched tokens, 256 sequences): the forward's 2*2048*(3*4864 + 4*896) = 74,448,896 B is
    below the sampler's 2*896*(2048 + 2*256) + 14.5*256*151,936 = 568,573,952 B; with sm89's cuBLAS workspace
    8,519,680 B: 577,093,632 B. Non-torch 268,435,456 B; CUDA graphs (vLLM 0.21 subtracts them): 51 sizes x 2
    modes x (3,575,644 + 24 x 179,306) = 803,656,776 B. Budget 21,254,425,805 - 992,290,816 - 577,093,632 -
    268,435,456 - 803,656,776 = 18,612,949,125 B. A sequence of 1256 tokens takes ceil(1256 / 16) = 79 blocks of
    16 tokens at 2 * 24 layers * 2 KV heads * 64 * 2 B = 12,288 B per token: 15,532,032 B;
    18,612,949,125 // 15,532,032 = 1198 sequences.
    """
    job = {"model": "Qwen/Qwen2.5-0.5B", "task": "inference", "gpu": "L4-24GB",
           "inference": {"prompt_len": 1000, "max_new_tokens": 256}}
    b = kv_cache_budget(job, 0.9)
    assert memplan.estimate(job).components["weights"] + 4_194_304 == b.weights_bytes == 992_290_816
    assert b.profile_activation_bytes == 568_573_952 + 8_519_680 == 577_093_632
    assert b.kv_cache_budget_bytes == 18_612_949_125
    assert b.kv_bytes_per_token == 12_288 and b.kv_bytes_per_sequence == 15_532_032
    assert b.concurrent_sequences == 1198
    p = plan(job, {"gpu_memory_utilization": 0.9})
    inf = p.solvers["inference"]
    assert inf["kv_cache_budget_bytes"] == 18_612_949_125 and inf["concurrent_sequences"] == 1198
    assert p.solvers["largest_micro_batch"] is None


def test_inference_plan_largest_batch_and_context_are_tight():
    job = {"model": "Qwen/Qwen2.5-0.5B", "task": "inference", "gpu": "T4-16GB",
           "inference": {"prompt_len": 2048, "batch_size": 4}}
    p = plan(job, {"global_batch_size": 8})
    inf = p.solvers["inference"]
    spec = parse_spec(job)
    b, L = inf["largest_batch"], inf["longest_prompt_len"]
    assert memplan.estimate(with_value(spec, "inference.batch_size", b)).fits
    assert not memplan.estimate(with_value(spec, "inference.batch_size", b + 1)).fits
    assert memplan.estimate(with_value(spec, "inference.prompt_len", L)).fits
    assert not memplan.estimate(with_value(spec, "inference.prompt_len", L + 1)).fits
    assert inf["longest_context"] == L + 256
    _check_configurations(p)
    assert all(o.micro_batch_size >= 8 for o in p.configurations)
    assert p.configurations[0].recipe_changes == 0


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("target,field", [
    ({"global_batch_size": 30, "num_gpus": 4}, "target.global_batch_size"),
    ({"global_batch_size": 0}, "target.global_batch_size"),
    ({"utilization": 1.5}, "target.utilization"),
    ({"gpu_memory_utilization": 0}, "target.gpu_memory_utilization"),
    ({"margin_pct": 100}, "target.margin_pct"),
    ({"num_gpus": 0}, "target.num_gpus"),
    ({"gpu": "H100-SXM-81GB"}, "target.gpu"),
    ({"global_batch": 32}, "target.global_batch"),
])
def test_bad_targets_name_the_field(target, field):
    with pytest.raises(SpecError) as err:
        plan(SMALL_LORA, target)
    assert err.value.errors[0][0] == field, err.value.errors


def test_bad_target_messages_say_what_is_allowed():
    with pytest.raises(SpecError, match="nearest that are: 28 or 32"):
        plan(SMALL_LORA, {"global_batch_size": 30, "num_gpus": 4})
    with pytest.raises(SpecError, match="allowed fields: global_batch_size"):
        plan(SMALL_LORA, {"global_batch": 32})
    with pytest.raises(SpecError) as err:
        plan(SMALL_LORA, limit=0)
    assert err.value.errors[0][0] == "limit"
    with pytest.raises(SpecError) as err:
        best_gpu(SMALL_LORA, by="priciest")
    assert err.value.errors[0][0] == "by"
    with pytest.raises(SpecError) as err:
        largest_micro_batch({**SMALL_LORA, "task": "inference"})
    assert err.value.errors[0][0] == "task"


def test_micro_batch_that_does_not_divide_the_global_batch_is_rounded_and_said():
    p = plan({**SMALL_LORA, "micro_batch_size": 5}, PlanTarget(global_batch_size=12))
    spec = parse_spec(p.configurations[0].job)
    assert any("micro-batch 5 does not divide the per-GPU batch 12" in a for a in p.assumptions)
    assert memplan.estimate(p.configurations[0].job).peak_bytes == p.configurations[0].peak_bytes
    assert spec.micro_batch_size * spec.gradient_accumulation_steps == 12


def test_plan_json_round_trip(lora_plan):
    data = lora_plan.model_dump(mode="json")
    assert set(data) == {"configurations", "changes", "solvers", "assumptions", "estimate", "target"}
    assert set(data["solvers"]) >= {"largest_micro_batch", "longest_seq_len", "fewest_gpus", "smallest_memory_gpu",
                                    "fastest_gpu", "inference"}
    assert Plan.model_validate(data).configurations[0].label == lora_plan.configurations[0].label
    assert any(f"{cp.MFU:g}" in a and "Llama 3" in a for a in lora_plan.assumptions)


def test_jobs_shown_re_estimate_on_a_model_without_sdpa():
    """BLOOM has no sdpa: the defaulted attention runs as eager, and every job the plan shows says so."""
    job = {"model": "bigscience/bloom-560m", "method": "full", "seq_len": 2048, "micro_batch_size": 8,
           "gpu": "T4-16GB"}
    p = plan(job, {"global_batch_size": 16})
    assert not p.estimate.fits and p.changes
    jobs = [o.job for o in p.configurations] + [c.job for c in p.changes]
    if p.solvers["fewest_gpus"]:
        jobs.append(p.solvers["fewest_gpus"]["job"])
    for j in jobs:
        assert j["attention"] == "eager"
        memplan.estimate(j)  # no SpecError: explicit eager is what the model has


def test_llm_int8_decode_is_never_faster_than_bf16():
    """Users measure bitsandbytes LLM.int8() generation 2-5x slower than 16-bit; memplan times it as no faster
    (the bytes of its int8 GEMM alone would say twice as fast). GPTQ-style int4 stays faster than bf16."""
    from memplan.plan.speed import inference_speed

    def step(weight_dtype: str, batch: int = 4) -> float:
        job = {"model": "meta-llama/Llama-3.1-8B", "task": "inference", "weight_dtype": weight_dtype,
               "inference": {"batch_size": batch}}
        return inference_speed(memplan.parse_spec(job), memplan.estimate(job)).step_time_s

    assert step("int8") >= step("bf16")
    assert step("int4") < step("bf16")
    # the 4-bit gemv kernel serves one token only; a batch dequantizes every weight to 16-bit first
    assert step("nf4", 1) < step("bf16", 1) and step("nf4", 8) > step("bf16", 8)


def test_advice_an_expert_signs():
    """Full fine-tuning of an 8B model on a 24 GB GPU: no row pairs a bitsandbytes optimizer with DeepSpeed's CPU
    offload (DeepSpeed steps an offloaded optimizer with its own CPU Adam), no two rows carry the same numbers,
    more GPUs never come before a change that fits on the job's own GPU, every offload option says its host
    memory, and each suggestion re-estimates to what it says."""
    p = plan({"model": "meta-llama/Llama-3.1-8B", "method": "full", "gpu": "A10G-24GB"})
    bnb = ("adamw_8bit", "paged_adamw_8bit", "paged_adamw_32bit")
    for o in p.configurations:
        assert not (o.job["optimizer"] in bnb and o.job.get("offload_optimizer")), o.label
        e = memplan.estimate(o.job)
        assert e.peak_bytes == o.peak_bytes and e.host_bytes == o.host_bytes
        # loading's CPU copy at least (memplan.terms.host.loading_host_bytes), but bitsandbytes loads onto the GPU
        assert (o.host_bytes > 0) == (o.job["zero_stage"] > 0 or o.job["weight_dtype"] not in ("nf4", "int8"))
    numbers = [(o.peak_bytes, o.step_time_s, o.num_gpus, o.micro_batch_size) for o in p.configurations]
    assert len(numbers) == len(set(numbers))
    fitting = [c for c in p.changes if c.fits]
    more_gpus = [i for i, c in enumerate(fitting) if "num_gpus" in c.fields]
    same_gpus = [i for i, c in enumerate(fitting) if "num_gpus" not in c.fields]
    assert same_gpus and more_gpus and max(same_gpus) < min(more_gpus)
    for c in p.changes:
        if c.fields.get("offload_optimizer"):
            assert c.host_bytes > 0 and f"needs {c.host_bytes / 2**30:.0f} GiB of CPU memory per node" in c.description
    with pytest.raises(memplan.SpecError) as err:
        memplan.estimate({"model": "meta-llama/Llama-3.1-8B", "method": "full", "optimizer": "paged_adamw_8bit",
                          "zero_stage": 2, "offload_optimizer": True})
    assert err.value.errors[0][0] == "optimizer" and "use 'adamw'" in err.value.errors[0][1]


def test_speed_is_of_the_job_as_it_runs():
    """A checkpoint quantized with GPTQ and given as weight_dtype auto is timed as int4, as the estimate counts it;
    a T4 job with a defaulted bf16 is timed at the T4's fp16 rate."""
    from memplan import catalog
    from memplan.plan.speed import inference_speed, training_speed

    cfg = {**catalog.get_model("meta-llama/Llama-3.1-8B").config,
           "quantization_config": {"quant_method": "gptq", "bits": 4}}
    job = {"model_config": cfg, "task": "inference"}
    explicit = {"model": "meta-llama/Llama-3.1-8B", "task": "inference", "weight_dtype": "int4"}
    assert inference_speed(memplan.parse_spec(job), memplan.estimate(job)).step_time_s == \
        inference_speed(memplan.parse_spec(explicit), memplan.estimate(explicit)).step_time_s
    t4 = {"model": "Qwen/Qwen2.5-0.5B", "gpu": "T4-16GB"}
    assert training_speed(memplan.parse_spec(t4)).step_time_s == \
        training_speed(memplan.parse_spec({**t4, "weight_dtype": "fp16", "mixed_precision": "fp16"})).step_time_s


def test_an_fsdp_job_is_planned_under_fsdp():
    """Every configuration and change of an FSDP job is a valid FSDP job (no ZeRO-1, no DeepSpeed optimizer
    offload), re-estimated; the offload change states its host memory."""
    from memplan.plan import plan as make_plan
    from memplan.spec import parse_spec

    job = {"model": "meta-llama/Llama-3.1-8B", "method": "full", "parallelism": "fsdp", "num_gpus": 2,
           "gpu": "A100-SXM-80GB", "seq_len": 4096}
    result = make_plan(job)
    assert result.configurations
    for option in result.configurations:
        spec = parse_spec(option.job)
        assert spec.parallel_engine == "fsdp" and spec.zero_stage in (0, 2, 3) and not spec.offload_optimizer
        assert "fsdp" in option.label
        assert memplan.estimate(spec).peak_bytes == option.peak_bytes
    offload = [c for c in result.changes if c.fields.get("offload_params")]
    assert len(offload) == 1 and offload[0].host_bytes > 0 and "GiB of CPU memory" in offload[0].description
    assert not [c for c in result.changes if c.fields.get("offload_optimizer")]


def test_a_multi_gpu_ddp_job_is_offered_fsdp():
    """A full fine-tune over DDP on 4 GPUs that does not fit: FSDP2 FULL_SHARD is one of the changes, re-estimated
    as an FSDP job."""
    from memplan.plan import plan as make_plan

    job = {"model": "meta-llama/Llama-3.1-8B", "method": "full", "num_gpus": 4, "gpu": "A100-SXM-80GB",
           "seq_len": 2048}
    change = next(c for c in make_plan(job).changes if c.fields.get("parallelism") == "fsdp")
    fsdp_job = {**job, "parallelism": "fsdp", "fsdp_version": 2, "zero_stage": 3, "offload_optimizer": False,
                "offload_params": False}
    assert change.peak_bytes == memplan.estimate(fsdp_job).peak_bytes
    assert change.saves_bytes == memplan.estimate(job).peak_bytes - change.peak_bytes > 0


def test_sequence_parallelism_is_offered_to_long_sequences_on_many_gpus():
    """Llama-3.1-8B full fine-tune at 64k tokens on 8 H100s under ZeRO-3 does not fit; Ulysses over the smallest
    group that fits is offered (4 GPUs), with accumulation x 4 keeping the global batch, and re-estimates to what it
    says; a one-GPU or DDP job is not offered it. A group of P GPUs trains one sequence: 1/P the tokens per step."""
    job = {"model": "meta-llama/Llama-3.1-8B", "method": "full", "num_gpus": 8, "zero_stage": 3, "seq_len": 65536,
           "gradient_checkpointing": True, "attention": "flash_attention_2", "gpu": "H100-SXM-80GB"}
    p = plan(job)
    sp = [c for c in p.changes if "sequence_parallel_size" in c.fields]
    assert len(sp) == 1 and sp[0].fields == {"sequence_parallel_size": 4, "gradient_accumulation_steps": 4}
    assert sp[0].fits and memplan.estimate(sp[0].job).peak_bytes == sp[0].peak_bytes
    assert not memplan.estimate({**job, "sequence_parallel_size": 2}).fits  # 4 is the smallest that fits
    ddp = plan({**job, "zero_stage": 0, "num_gpus": 2, "seq_len": 8192})
    assert not any("sequence_parallel_size" in c.fields for c in ddp.changes)
    one = training_speed(parse_spec({**job, "seq_len": 8192}))
    four = training_speed(parse_spec({**job, "seq_len": 8192, "sequence_parallel_size": 4}))
    assert four.tokens_per_step * 4 == one.tokens_per_step


def test_the_planner_reasons_on_the_weights_the_checkpoint_loads():
    """weight_dtype defaults to auto: a pasted GPTQ checkpoint loads int4, so the planner does not offer 4-bit or
    8-bit weights as a change, and its configurations start from int4."""
    config = {"model_type": "llama", "hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 4,
              "num_attention_heads": 16, "num_key_value_heads": 4, "vocab_size": 32000,
              "quantization_config": {"quant_method": "gptq", "bits": 4}}
    p = plan({"model_config": config, "task": "inference", "gpu": "T4-16GB",
              "inference": {"batch_size": 64, "prompt_len": 8192}})
    assert not any(c.fields.get("weight_dtype") in ("int4", "int8") for c in p.changes)
    assert p.configurations and all(o.job["weight_dtype"] == "int4" for o in p.configurations
                                    if o.recipe_changes == 0)
    # a catalog model (no quantization_config) loads bf16: quantized weights are offered
    bf16 = plan({"model": "Qwen/Qwen2.5-7B", "task": "inference", "gpu": "T4-16GB",
                 "inference": {"batch_size": 8, "prompt_len": 8192}})
    offered = {c.fields.get("weight_dtype") for c in bf16.changes}
    assert {"int8", "int4"} <= offered
