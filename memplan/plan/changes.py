"""What to change to fit: each single change to the job, re-estimated with memplan.estimate (the bytes it saves are
the difference of two estimates, never a guess), with its cost in speed from `memplan.terms.compute`.

Ranked: changes that fit first, then the smallest slowdown, then the most bytes saved.
"""

from __future__ import annotations

from typing import Any

from memplan.estimate import estimate
from memplan.job import resolve_attention
from memplan.result import Estimate
from memplan.plan.configurations import Search, divisors, flash_attention_ok, merge
from memplan.plan.models import Change
from memplan.plan.solvers import dump, fewest_gpus, fits, largest_within_margin, parallel_engines
from memplan.plan.speed import Speed, job_speed
from memplan.spec import FSDP_STRATEGY, JobSpec, SpecError, parse_spec

GIB = 2**30
#: a job that fits with less than this share of usable memory free still gets changes
LOW_HEADROOM = 0.10
SEQ_ROUND = 128


def needs_changes(e: Estimate, margin_pct: float) -> bool:
    return not fits(e, margin_pct) or e.headroom_bytes < LOW_HEADROOM * e.gpu.usable_bytes


def _sequence_parallel_change(s: JobSpec, goal: float) -> tuple[str, dict[str, Any]] | None:
    """Sequence parallelism over the job's own GPUs (Ulysses under DeepSpeed, context parallelism under FSDP2):
    the smallest group that fits, else the largest the job allows; None when the job cannot split its
    sequences (one GPU, DDP, FSDP1, or no group size the model and seq_len accept)."""
    if s.num_gpus < 2 or s.sequence_parallel_size > 1 or s.parallel_engine not in ("deepspeed", "fsdp"):
        return None
    # torch's context parallelism runs under sdpa only
    attention = {"attention": "sdpa"} if s.parallel_engine == "fsdp" and s.attention != "sdpa" else {}
    size = None  # the largest group tried that the job allows
    for candidate in divisors(s.num_gpus)[1:]:
        try:
            e = estimate(parse_spec({**dump(s), "sequence_parallel_size": candidate, **attention}))
        except SpecError:
            continue
        size = candidate
        if fits(e, goal):
            break
    if size is None:
        return None
    scheme = "DeepSpeed Ulysses" if s.parallel_engine == "deepspeed" else "torch context parallelism (sdpa)"
    # a group of `size` GPUs trains one sequence: accumulation x size keeps the global batch
    ga = s.gradient_accumulation_steps * size
    return (f"sequence parallelism over {size} GPUs ({scheme}): each GPU holds {s.seq_len // size} tokens; "
            f"accumulation {s.gradient_accumulation_steps} -> {ga} keeps the global batch",
            {"sequence_parallel_size": size, "gradient_accumulation_steps": ga, **attention})


def _candidates(search: Search, base_e: Estimate) -> list[tuple[str, dict[str, Any]]]:
    s, info = search.spec, search.info
    # when the job fits already, the aim is 10% headroom: solvers then look for that margin
    goal = search.target.margin_pct if not fits(base_e, search.target.margin_pct) else \
        max(search.target.margin_pct, 100 * LOW_HEADROOM)
    attention = resolve_attention(info, s, [])
    out: list[tuple[str, dict[str, Any]]] = []
    if attention != "flash_attention_2" and flash_attention_ok(info, s):
        out.append(("flash_attention_2 attention", {"attention": "flash_attention_2"}))
    if attention == "eager" and info.supports_sdpa:
        out.append(("sdpa attention", {"attention": "sdpa"}))
    if s.allocator == "default":
        out.append(("PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True (allocator: expandable_segments; no speed "
                    "cost)", {"allocator": "expandable_segments"}))
    if s.task == "train":
        mb, ga = s.micro_batch_size, s.gradient_accumulation_steps
        if not s.gradient_checkpointing:
            out.append(("gradient checkpointing on", {"gradient_checkpointing": True}))
        if mb % 2 == 0:
            out.append((f"halve the micro-batch ({mb} -> {mb // 2}), double accumulation ({ga} -> {2 * ga}): same "
                        "global batch", {"micro_batch_size": mb // 2, "gradient_accumulation_steps": 2 * ga}))
        elif mb > 1:
            out.append((f"micro-batch 1, accumulation {ga} -> {mb * ga}: same global batch",
                        {"micro_batch_size": 1, "gradient_accumulation_steps": mb * ga}))
        if s.optimizer in ("adamw", "paged_adamw_32bit"):
            out.append(("8-bit AdamW (bitsandbytes adamw_8bit)", {"optimizer": "adamw_8bit"}))
        if s.method == "full":
            out.append((f"LoRA r{s.lora.r} instead of full fine-tuning", {"method": "lora"}))
        if s.method in ("full", "lora", "freeze") and s.weight_dtype not in ("nf4", "fp4"):
            out.append((f"QLoRA r{s.lora.r}: nf4 base weights", {"method": "qlora", "weight_dtype": "nf4"}))
        fsdp = s.parallel_engine == "fsdp"
        four_bit = s.weight_dtype in ("nf4", "fp4")
        if fsdp:
            if s.zero_stage < 3:
                nxt = 2 if s.zero_stage == 0 else 3
                out.append((f"FSDP {FSDP_STRATEGY[nxt]} (zero_stage {s.zero_stage} -> {nxt})", {"zero_stage": nxt}))
            if not s.offload_params:
                out.append(("FSDP CPU offload (parameters, gradients and optimizer states; FULL_SHARD)",
                            {"zero_stage": 3, "offload_params": True}))
            if four_bit and s.fsdp_version == 2:
                out.append(("FSDP1 instead of FSDP2 (FSDP2 loads the 4-bit model whole on every GPU before "
                            "sharding it; FSDP1 loads it on rank 0's CPU)", {"fsdp_version": 1}))
        else:
            if s.zero_stage < 3:
                out.append((f"ZeRO stage {s.zero_stage} -> {s.zero_stage + 1}", {"zero_stage": s.zero_stage + 1}))
            for engine in parallel_engines(s, s.num_gpus)[1:]:  # FSDP beside the job's engine, as plans search it
                version = engine["fsdp_version"]
                what = " with bnb_4bit_quant_storage = the compute dtype" if four_bit else ""
                out.append((f"torch FSDP{version} FULL_SHARD instead of {s.parallel_engine} (accelerate fsdp_version "
                            f"{version}){what}",
                            {**engine, "zero_stage": 3, "offload_optimizer": False, "offload_params": False,
                             **({"quant_storage": "auto"} if four_bit else {})}))
        # DeepSpeed steps an offloaded optimizer on the CPU with its own Adam: a bitsandbytes optimizer cannot come
        bnb = s.optimizer in ("adamw_8bit", "paged_adamw_8bit", "paged_adamw_32bit")
        cpu_adam = {"optimizer": "adamw"} if bnb else {}
        with_adam = f" with adamw instead of {s.optimizer} (DeepSpeed's CPU Adam)" if bnb else ""
        if not s.offload_optimizer and not fsdp:
            z = max(s.zero_stage, 2)
            out.append((f"offload the optimizer to CPU (DeepSpeed ZeRO-{z} offload_optimizer){with_adam}",
                        {"zero_stage": z, "offload_optimizer": True, **cpu_adam}))
        if not s.offload_params and not fsdp:
            out.append((f"offload parameters and optimizer to CPU (ZeRO-3 offload_params + offload_optimizer)"
                        f"{with_adam}", {"zero_stage": 3, "offload_optimizer": True, "offload_params": True,
                                          **cpu_adam}))
        more = fewest_gpus(s, margin_pct=goal, other_engines=False)  # switching engines is its own change
        if more is not None and more.num_gpus > s.num_gpus:
            per = search.global_batch // more.num_gpus if search.global_batch % more.num_gpus == 0 else 0
            upd: dict[str, Any] = {"num_gpus": more.num_gpus, "zero_stage": more.zero_stage}
            text = (f"{more.num_gpus} GPUs with FSDP zero_stage {more.zero_stage}" if fsdp
                    else f"{more.num_gpus} GPUs with ZeRO-{more.zero_stage}")
            if per and per % mb == 0:
                upd["gradient_accumulation_steps"] = per // mb
                text += f", accumulation {per // mb} (same global batch {search.global_batch})"
            else:
                text += f" (global batch becomes {mb * ga * more.num_gpus})"
            out.append((text, upd))
        sp = _sequence_parallel_change(s, goal)
        if sp is not None:
            out.append(sp)
        longest = largest_within_margin(s, "seq_len", goal)
        if longest is not None and longest < s.seq_len:
            new = longest // SEQ_ROUND * SEQ_ROUND if longest >= SEQ_ROUND else longest
            out.append((f"shorter sequences: seq_len {s.seq_len} -> {new} (the longest that fits, rounded down to "
                        f"{SEQ_ROUND})" if new != longest else f"shorter sequences: seq_len {s.seq_len} -> {new}",
                        {"seq_len": new}))
    else:
        inf = s.inference
        if inf.kv_cache_dtype not in ("fp8", "int8"):
            out.append(("fp8 KV cache", {"inference.kv_cache_dtype": "fp8"}))
        if s.weight_dtype in ("fp32", "bf16", "fp16"):
            out.append(("int8 weights (bitsandbytes LLM.int8)", {"weight_dtype": "int8"}))
            out.append(("4-bit weights (GPTQ/AWQ int4)", {"weight_dtype": "int4"}))
        if inf.batch_size > 1:
            out.append((f"halve the batch ({inf.batch_size} -> {inf.batch_size // 2})",
                        {"inference.batch_size": inf.batch_size // 2}))
        longest = largest_within_margin(s, "inference.prompt_len", goal)
        if longest is not None and longest < inf.prompt_len:
            out.append((f"shorter prompts: prompt_len {inf.prompt_len} -> {longest} (the longest that fits)",
                        {"inference.prompt_len": longest}))
    return out


def changes(search: Search, base_e: Estimate, base_speed: Speed) -> list[Change]:
    """Every single change that lowers the peak, re-estimated; empty when the job fits with >= 10% headroom."""
    margin, util = search.target.margin_pct, search.target.utilization
    if not needs_changes(base_e, margin):
        return []
    out = []
    for text, updates in _candidates(search, base_e):
        try:
            s = parse_spec(merge(search.data, updates))
            e = estimate(s)
        except SpecError:
            continue
        saves = base_e.peak_bytes - e.peak_bytes
        if saves <= 0:
            continue
        sp = job_speed(s, e, util)
        # the CPU memory it needs, where it needs more than the job as written (offload, pinned buffers)
        host = (f"; needs {e.host_bytes / GIB:.0f} GiB of CPU memory per node" if e.host_bytes > base_e.host_bytes
                else "")
        if e.host_memory_plausible is False:
            host += (f", more than the largest common {e.gpu.id} node has "
                     f"({e.gpu.node_host_memory_bytes / GIB:.0f} GiB)")
        out.append(Change(description=f"{text}: saves {saves / GIB:.2f} GiB{host}", fields=updates, job=dump(s),
                          peak_bytes=e.peak_bytes, saves_bytes=saves, fits=fits(e, margin),
                          slowdown=round(sp.seconds_per_token / base_speed.seconds_per_token, 4),
                          host_bytes=e.host_bytes, host_memory_plausible=e.host_memory_plausible))
    # more GPUs come after every change that fits on the GPUs the job has; a host no common node has, after both
    out.sort(key=lambda c: (not c.fits, c.host_memory_plausible is False, "num_gpus" in c.fields,
                            c.slowdown if c.slowdown is not None else float("inf"), -c.saves_bytes, c.description))
    return out
