"""The ranked configurations that fit a target: a bounded search over recipes and layouts.

A *recipe* is what gets trained (served): method, weight dtype, LoRA rank, optimizer (inference: weight dtype and
KV-cache dtype). A *layout* is how the step runs: attention kernel, gradient checkpointing, ZeRO stage and offload,
micro-batch with the accumulation that reaches the global batch. Per (recipe, attention, checkpointing) the search
raises ZeRO / offload only as far as micro-batch 1 needs, then finds the largest micro-batch that divides the
per-GPU batch and fits by bisection over those divisors: about 4-10 estimates, never an enumeration of every
micro-batch. Options a same-recipe option beats on both step time and headroom are dropped (Pareto).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from memplan import catalog
from memplan.architecture import ModelInfo
from memplan.estimate import estimate
from memplan.job import resolve_attention
from memplan.result import Estimate
from memplan.methods import float_dtype
from memplan.plan.models import PlanOption, PlanTarget
from memplan.plan.solvers import dump, fits, largest_within_margin, parallel_engines
from memplan.plan.speed import Speed, job_speed
from memplan.spec import JobSpec, SpecError, parse_spec

#: LoRA ranks tried beside the job's own
RANKS = (8, 64)
ATTENTION_LABEL = {"sdpa": "sdpa", "flash_attention_2": "fa2", "eager": "eager"}


@dataclass
class Search:
    data: dict[str, Any]  # the baseline job (fields the user set, plus the target's gpu / num_gpus / batch)
    spec: JobSpec
    info: ModelInfo
    target: PlanTarget
    global_batch: int
    notes: list[str] = field(default_factory=list)


def merge(data: dict[str, Any], updates: dict[str, Any]) -> dict[str, Any]:
    """data with dotted-path updates applied ("lora.r", "inference.kv_cache_dtype")."""
    out = dict(data)
    for key, value in updates.items():
        if "." in key:
            head, tail = key.split(".", 1)
            out[head] = {**(out.get(head) or {}), tail: value}
        else:
            out[key] = value
    return out


def divisors(n: int) -> list[int]:
    small = [d for d in range(1, int(n ** 0.5) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


# ---------------------------------------------------------------- recipes


def _recipe_updates(method: str, weight_dtype: str, r: int, optimizer: str) -> dict[str, Any]:
    out: dict[str, Any] = {"method": method, "weight_dtype": weight_dtype, "optimizer": optimizer}
    if method in ("lora", "qlora"):
        out["lora.r"] = r
    return out


def training_recipes(spec: JobSpec) -> list[tuple[str, str, int, str]]:
    """The job's own recipe first, then LoRA (float and int8 base), QLoRA nf4, full fine-tuning (with the job's
    optimizer and with 8-bit AdamW), and LoRA ranks 8 and 64 on the job's adapter method."""
    own = (spec.method, spec.weight_dtype, spec.lora.r, spec.optimizer)
    w = float_dtype(spec)
    r, opt = spec.lora.r, spec.optimizer
    out = [own, ("lora", w, r, opt), ("lora", "int8", r, opt), ("qlora", "nf4", r, opt), ("full", w, r, opt)]
    if opt in ("adamw", "paged_adamw_32bit"):
        out.append(("full", w, r, "adamw_8bit"))
    m, mw = (spec.method, spec.weight_dtype) if spec.method in ("lora", "qlora") else ("lora", w)
    out += [(m, mw, rank, opt) for rank in RANKS if rank != r]
    return list(dict.fromkeys(out))


def recipe_changes(spec: JobSpec, other: JobSpec) -> int:
    n = (spec.method != other.method) + (spec.weight_dtype != other.weight_dtype)
    if spec.task == "train":
        n += spec.optimizer != other.optimizer
        n += (spec.method in ("lora", "qlora") and other.method in ("lora", "qlora") and spec.lora.r != other.lora.r)
    else:
        n += spec.inference.kv_cache_dtype != other.inference.kv_cache_dtype
    return int(n)


def ladder(num_gpus: int, engine: str = "deepspeed") -> list[tuple[int, bool, bool]]:
    """(zero_stage, offload_optimizer, offload_params), cheapest in communication first: plain DDP, ZeRO 1-3, then
    optimizer offload, then parameter offload. One GPU: ZeRO only pays with offload (ZeRO-Offload). Under FSDP
    (engine "fsdp"): NO_SHARD, SHARD_GRAD_OP, FULL_SHARD, then CPU offload (parameters, gradients and optimizer
    states together)."""
    if engine == "fsdp":
        steps = [(0, False, False), (2, False, False), (3, False, False), (2, False, True), (3, False, True)]
        return steps if num_gpus > 1 else [steps[0], steps[-1]]
    if num_gpus == 1:
        return [(0, False, False), (2, True, False), (3, True, True)]
    return [(0, False, False), (1, False, False), (2, False, False), (3, False, False), (2, True, False),
            (3, True, False), (3, True, True)]


def label(s: JobSpec) -> str:
    parts = [s.method + (f" r{s.lora.r}" if s.method in ("lora", "qlora") else "")]
    if s.task == "train":
        if s.weight_dtype != "bf16":
            parts[0] += f" {s.weight_dtype}"
        if s.optimizer != "adamw":
            parts.append(s.optimizer)
        if s.gradient_checkpointing:
            parts.append("gc")
        parts.append(ATTENTION_LABEL[s.attention])
        parts.append(f"mb {s.micro_batch_size} x ga {s.gradient_accumulation_steps}")
        if s.parallel_engine == "fsdp":
            zero = "fsdp " + {3: "full shard", 2: "shard grad-op", 0: "no shard"}[s.zero_stage]
        else:
            zero = f"zero {s.zero_stage}"
        if s.offload_optimizer:
            zero += " + offload opt"
        if s.offload_params:
            zero += " + offload params" if s.parallel_engine != "fsdp" else " + cpu offload"
        parts.append(zero)
    else:
        parts = [f"{s.weight_dtype} weights", f"{s.inference.kv_cache_dtype} kv", ATTENTION_LABEL[s.attention],
                 f"batch {s.inference.batch_size}"]
    if s.num_gpus > 1:
        parts.append(f"{s.num_gpus} GPUs")
    return ", ".join(parts)


@dataclass
class _Found:
    spec: JobSpec
    estimate: Estimate
    speed: Speed
    recipe: tuple


def _option(search: Search, f: _Found) -> PlanOption:
    s = f.spec
    absolute = not f.speed.reference
    return PlanOption(
        label=label(s), job=dump(s), peak_bytes=f.estimate.peak_bytes, headroom_bytes=f.estimate.headroom_bytes,
        step_time_s=f.speed.step_time_s if absolute else None, tokens_per_s=f.speed.tokens_per_s if absolute else None,
        micro_batch_size=s.micro_batch_size if s.task == "train" else s.inference.batch_size,
        gradient_accumulation_steps=s.gradient_accumulation_steps if s.task == "train" else 1,
        num_gpus=s.num_gpus, recipe_changes=recipe_changes(search.spec, s), host_bytes=f.estimate.host_bytes,
        host_memory_plausible=f.estimate.host_memory_plausible)


# ---------------------------------------------------------------- training


def _largest_micro_batch(search: Search, data: dict[str, Any], per_gpu: int, first: tuple[JobSpec, Estimate]
                         ) -> tuple[JobSpec, Estimate]:
    """The largest divisor d of the per-GPU batch that fits with accumulation per_gpu // d, by bisection over the
    divisors (micro-batch 1 fits: `first`)."""
    ds = divisors(per_gpu)
    best, lo, hi = first, 0, len(ds)  # ds[lo] fits; ds[hi:] do not (none known yet)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        s = parse_spec({**data, "micro_batch_size": ds[mid], "gradient_accumulation_steps": per_gpu // ds[mid]})
        e = estimate(s)
        if fits(e, search.target.margin_pct):
            lo, best = mid, (s, e)
        else:
            hi = mid
    return best


def flash_attention_ok(info: ModelInfo, spec: JobSpec) -> bool:
    """flash_attention_2 exists for the model, runs in the compute dtype, and on the GPU: flash-attn 2 needs
    compute capability 8.0 or newer (Ampere; ROCm builds cover MI200/MI300)."""
    if not info.supports_flash_attention or spec.compute_dtype == "fp32":
        return False
    if isinstance(spec.gpu, str):
        cc = catalog.get_gpu(spec.gpu).compute_capability or ""
        if cc[:1].isdigit() and float(cc) < 8.0:
            return False
    return True


def _attention_choices(search: Search) -> list[str]:
    info, spec = search.info, search.spec
    own = resolve_attention(info, spec, [])
    out = [own]
    if own != "flash_attention_2" and flash_attention_ok(info, spec):
        out.append("flash_attention_2")
    if own == "eager" and info.supports_sdpa:
        out.append("sdpa")
    return out


def training_options(search: Search, num_gpus: int) -> list[_Found]:
    margin, util = search.target.margin_pct, search.target.utilization
    per_gpu = search.global_batch // num_gpus
    found: list[_Found] = []
    attentions = _attention_choices(search)
    for recipe in training_recipes(search.spec):
        base = merge(search.data, _recipe_updates(*recipe))
        try:
            engines = parallel_engines(parse_spec(base), num_gpus)
        except SpecError:
            continue  # this recipe is not a valid job here (QLoRA under FSDP)
        for engine in engines:
            kind = engine.get("parallelism") or search.spec.parallel_engine
            found += _ladder_options(search, {**base, **engine}, kind, recipe, attentions, num_gpus, per_gpu, margin,
                                     util)
    return found


def _ladder_options(search: Search, base: dict[str, Any], engine: str, recipe: tuple, attentions: list[str],
                    num_gpus: int, per_gpu: int, margin: float, util: float) -> list[_Found]:
    """For each attention kernel and checkpointing choice, the first ladder step (cheapest communication) at
    which the recipe fits, at its largest micro-batch."""
    found: list[_Found] = []
    first: dict[tuple, int] = {}  # peak at micro-batch 1 per (checkpointing, ladder step), first attention
    for attention in attentions:
        for gc in (False, True):
            for step, (zero, off_opt, off_par) in enumerate(ladder(num_gpus, engine)):
                data = {**base, "attention": attention, "gradient_checkpointing": gc, "zero_stage": zero,
                        "offload_optimizer": off_opt, "offload_params": off_par, "num_gpus": num_gpus}
                try:
                    s = parse_spec({**data, "micro_batch_size": 1, "gradient_accumulation_steps": per_gpu})
                    e = estimate(s)
                except SpecError:
                    break  # this recipe / attention / checkpointing is not a valid job: no stage changes that
                if attention == attentions[0]:
                    first[(gc, step)] = e.peak_bytes
                elif "eager" not in (attention, attentions[0]) and first.get((gc, step)) == e.peak_bytes:
                    # same bytes and the same FLOPs as the first attention kernel (sdpa and flash_attention_2
                    # are both causal-halved): its options would tie and be dropped below
                    break
                if fits(e, margin):
                    s, e = _largest_micro_batch(search, data, per_gpu, (s, e))
                    found.append(_Found(s, e, job_speed(s, e, util), recipe))
                    break
    return found


# ---------------------------------------------------------------- inference


def inference_recipes(spec: JobSpec) -> list[tuple[str, str]]:
    own = (spec.weight_dtype, spec.inference.kv_cache_dtype)
    kv = "fp8" if own[1] not in ("fp8", "int8") else own[1]
    out = [own, ("int8", own[1]), ("int4", own[1]), (own[0], kv), ("int4", kv)]
    return list(dict.fromkeys(out))


def inference_options(search: Search, num_gpus: int) -> list[_Found]:
    """Per (weight dtype, KV dtype): the largest batch that fits (HF generate(), memplan's estimate); it must
    hold target.global_batch_size when one is given."""
    margin = search.target.margin_pct
    need = search.target.global_batch_size or 1
    found: list[_Found] = []
    for recipe in inference_recipes(search.spec):
        data = merge(search.data, {"weight_dtype": recipe[0], "inference.kv_cache_dtype": recipe[1],
                                   "num_gpus": num_gpus, "attention": resolve_attention(search.info, search.spec, [])})
        try:
            s = parse_spec(data)
            batch = largest_within_margin(s, "inference.batch_size", margin)
        except SpecError:
            continue
        if batch is None or batch < need:
            continue
        s = parse_spec(merge(data, {"inference.batch_size": batch}))
        e = estimate(s)
        found.append(_Found(s, e, job_speed(s, e), recipe))
    return found


# ---------------------------------------------------------------- ranking


def pareto(found: list[_Found]) -> list[_Found]:
    """Drop an option when another of the same recipe and GPU count is at least as fast and has at least as much
    headroom, and is better in one of them (or ties it and was found first: the job's own attention is tried
    first, so it wins a tie with flash_attention_2)."""
    keep = []
    for i, f in enumerate(found):
        t, h = f.speed.seconds_per_token, f.estimate.headroom_bytes
        dominated = any(g.recipe == f.recipe and g.spec.num_gpus == f.spec.num_gpus
                        and g.speed.seconds_per_token <= t and g.estimate.headroom_bytes >= h
                        and (g.speed.seconds_per_token < t or g.estimate.headroom_bytes > h or j < i)
                        for j, g in enumerate(found) if j != i)
        if not dominated:
            keep.append(f)
    return keep


def configurations(search: Search, counts: list[int], limit: int) -> list[PlanOption]:
    """Ranked options: fewest recipe changes first, then the fastest (seconds per token; tokens/s for
    inference), then the most headroom."""
    found: list[_Found] = []
    for n in counts:
        found += training_options(search, n) if search.spec.task == "train" else inference_options(search, n)
    options = [(_option(search, f), f) for f in pareto(found)]
    options.sort(key=lambda of: (of[0].recipe_changes, of[1].speed.seconds_per_token, -of[0].headroom_bytes,
                                 of[0].label))
    # one row per label, and one per set of numbers: a configuration estimated exactly like a better-ranked one
    # buys nothing with its extra recipe change
    seen, out = set(), []
    for o, _ in options:
        numbers = (o.peak_bytes, o.step_time_s, o.num_gpus, o.micro_batch_size, o.gradient_accumulation_steps)
        if o.label not in seen and numbers not in seen:
            seen.update((o.label, numbers))
            out.append(o)
    return out[:limit]
