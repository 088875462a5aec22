"""Solvers: the largest micro-batch, the longest sequence, the fewest GPUs, the catalog GPU with the smallest total
memory and the fastest one
that fit, and vLLM's KV-cache budget. Every answer is an estimate that was run, never an extrapolation.
"""

from __future__ import annotations

from typing import Any, Literal

from memplan import catalog
from memplan.estimate import estimate
from memplan.job import model_info, resolve
from memplan.result import Estimate, capacity_bytes, demand_bytes
from memplan.plan.models import FewestGpus, GpuChoice, KvBudget
from memplan.plan.speed import job_speed
from memplan.spec import QUANTIZED_DTYPES, JobSpec, SpecError, parse_spec
from memplan.sweep import field_limit, largest_fitting, with_value
from memplan.terms import compute as cp

MAX_GPUS = 64


def fits(e: Estimate, margin_pct: float = 0.0) -> bool:
    """What the job needs + margin_pct% of the usable bytes within what it can have (as memplan.check decides): the
    peak within the usable bytes, or for a serve job what the engine needs within its share."""
    return demand_bytes(e) + int(e.gpu.usable_bytes * margin_pct / 100) <= capacity_bytes(e)


def dump(spec: JobSpec) -> dict[str, Any]:
    """The full job spec as a JSON-able dict (every field, so an option reads the same to everyone), as the
    estimate ran it (memplan.job.resolve): a defaulted sdpa on a model without it (BLOOM) is written as eager, a
    defaulted bf16 on a pre-Ampere GPU as fp16, each of which the estimate accepts when it is given explicitly."""
    r = resolve(spec)
    data = r.spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    data["attention"] = r.attention
    return data


def largest_within_margin(spec: JobSpec, field: str, margin_pct: float) -> int | None:
    """sweep.largest_fitting, or with a margin the same doubling-then-bisection on fits-with-margin."""
    if not margin_pct:
        return largest_fitting(spec, field)
    limit = field_limit(spec, field)

    def ok(v: int) -> bool:
        return fits(estimate(with_value(spec, field, v)), margin_pct)

    if not ok(1):
        return None
    lo, hi = 1, None
    while lo < limit:
        nxt = min(lo * 2, limit)
        if not ok(nxt):
            hi = nxt
            break
        lo = nxt
    if hi is None:
        return limit
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    return lo


def _training(spec: JobSpec, what: str) -> None:
    if spec.task != "train":
        raise SpecError([("task", f"{what} applies to training jobs; for inference use the inference solvers "
                                  "(largest batch, longest context)")])


def largest_micro_batch(job: dict[str, Any] | JobSpec, margin_pct: float = 0.0) -> int | None:
    """The largest micro_batch_size that fits (exact: it fits, one more does not). None when 1 does not fit."""
    spec = parse_spec(job)
    _training(spec, "largest_micro_batch")
    return largest_within_margin(spec, "micro_batch_size", margin_pct)


def longest_seq_len(job: dict[str, Any] | JobSpec, margin_pct: float = 0.0) -> int | None:
    """The longest seq_len that fits, to the token (granularity 1: it fits, one token more does not), by memory,
    and no longer than a learned position table runs (GPT-2, BERT, OPT); a rotary model's max_position_embeddings
    is not a limit here. None when 1 token does not fit."""
    spec = parse_spec(job)
    _training(spec, "longest_seq_len")
    return largest_within_margin(spec, "seq_len", margin_pct)


def _fit_stage(spec: JobSpec, n: int, margin_pct: float) -> tuple[JobSpec, Estimate] | None:
    """The lowest ZeRO stage, from the job's own up to 3, at which the job fits on n GPUs."""
    for stage in range(spec.zero_stage, 4):
        if spec.offload_params and stage != 3:
            continue
        data = {**spec.model_dump(by_alias=True, exclude_unset=True), "num_gpus": n, "zero_stage": stage}
        try:
            candidate = parse_spec(data)
        except SpecError:
            continue
        e = estimate(candidate)
        if fits(e, margin_pct):
            return candidate, e
    return None


def parallel_engines(spec: JobSpec, num_gpus: int) -> list[dict[str, Any]]:
    """The data-parallel engines a plan tries, as job fields: the job's own, and for a multi-GPU job not already
    under FSDP torch's FSDP beside it: FSDP2, or for 4-bit weights FSDP1 (the FSDP-QLoRA recipe: FSDP2 loads a
    4-bit model whole on every GPU before sharding it, so FSDP1 never needs more). int8 / int4 weights: none."""
    out: list[dict[str, Any]] = [{}]
    if num_gpus > 1 and spec.parallel_engine != "fsdp" and spec.task == "train":
        if spec.weight_dtype in ("nf4", "fp4"):
            out.append({"parallelism": "fsdp", "fsdp_version": 1})
        elif spec.weight_dtype not in QUANTIZED_DTYPES:
            out.append({"parallelism": "fsdp", "fsdp_version": 2})
    return out


def fewest_gpus(job: dict[str, Any] | JobSpec, max_gpus: int = MAX_GPUS, margin_pct: float = 0.0,
                other_engines: bool = True) -> FewestGpus | None:
    """The fewest GPUs of the job's type on which it fits, raising the sharding stage (DeepSpeed ZeRO; FSDP
    full_shard = 3) from the job's own up to 3 as needed, micro-batch and offload as the job has them; with
    `other_engines`, torch FSDP is searched beside a DDP / DeepSpeed job (FSDP1 for 4-bit weights, else FSDP2:
    `parallel_engines`) and the fewer GPUs win (the job's own engine on a tie).

    Tight: it fits on num_gpus and not on num_gpus - 1 (at any stage from the job's to 3). Search: doubling from
    1, then bisection (per-GPU bytes never rise with more GPUs at ZeRO >= 1, tests/test_properties.py).
    Inference: memplan models no tensor parallelism, so 1 if the job fits one GPU, else None.
    """
    spec = parse_spec(job)
    if not 1 <= max_gpus <= 100_000:
        raise SpecError([("max_gpus", f"must be in 1..100000, got {max_gpus}")])
    if spec.task == "inference":
        s = parse_spec({**spec.model_dump(by_alias=True, exclude_unset=True), "num_gpus": 1})
        e = estimate(s)
        return _fewest_result((s, e)) if fits(e, margin_pct) else None
    best = None
    engines = parallel_engines(spec, 2) if other_engines else [{}]
    for engine in engines:
        candidate = spec
        if engine:
            data = {**spec.model_dump(by_alias=True, exclude_unset=True), **engine, "offload_optimizer": False}
            try:
                candidate = parse_spec(data)
            except SpecError:
                continue
        hit = _fewest_with_engine(candidate, max_gpus, margin_pct)
        if hit is not None and (best is None or hit[0].num_gpus < best[0].num_gpus):
            best = hit
    return _fewest_result(best) if best is not None else None


def _fewest_result(hit: tuple[JobSpec, Estimate]) -> FewestGpus:
    s, e = hit
    return FewestGpus(num_gpus=s.num_gpus, zero_stage=s.zero_stage, parallelism=s.parallel_engine,
                      peak_bytes=e.peak_bytes, headroom_bytes=e.headroom_bytes, job=dump(s))


def _fewest_with_engine(spec: JobSpec, max_gpus: int, margin_pct: float) -> tuple[JobSpec, Estimate] | None:
    first = _fit_stage(spec, 1, margin_pct)
    if first is not None:
        return first
    lo, hi, found = 1, None, None
    while lo < max_gpus:
        nxt = min(lo * 2, max_gpus)
        found = _fit_stage(spec, nxt, margin_pct)
        if found is not None:
            hi = nxt
            break
        lo = nxt
    if hi is None:
        return None
    while hi - lo > 1:  # does not fit on lo, fits on hi
        mid = (lo + hi) // 2
        hit = _fit_stage(spec, mid, margin_pct)
        if hit is not None:
            hi, found = mid, hit
        else:
            lo = mid
    return found


def fitting_gpus(spec: JobSpec, margin_pct: float = 0.0, utilization: float = cp.MFU) -> list[tuple]:
    """(catalog GPU, job on it, estimate, speed) for every catalog GPU the job fits, as the job is otherwise; a GPU
    that cannot run the job as written (bf16 or flash_attention_2 set on a pre-Ampere GPU) is left out."""
    data = spec.model_dump(by_alias=True, exclude_unset=True)
    out = []
    for g in catalog.list_gpus():
        s = parse_spec({**data, "gpu": g.id})
        try:
            e = estimate(s)
        except SpecError:
            continue
        if fits(e, margin_pct):
            out.append((g, s, e, job_speed(s, e, utilization)))
    return out


def pick_gpu(candidates: list[tuple], by: str, utilization: float = cp.MFU) -> GpuChoice | None:
    if not candidates:
        return None
    if by in ("smallest_memory", "cheapest"):
        g, s, e, sp = min(candidates, key=lambda c: (c[0].memory_bytes * c[1].num_gpus,
                                                     c[0].dense_tflops.get(c[1].compute_dtype) or 0.0, c[0].id))
        basis = f"smallest total GPU memory ({s.num_gpus} x {g.memory_gib:.1f} GiB); the catalog has no prices"
    else:
        g, s, e, sp = min(candidates, key=lambda c: (c[3].step_time_s, c[0].memory_bytes, c[0].id))
        basis = (f"shortest training step at {utilization:g} MFU" if s.task == "train"
                 else "shortest decode step (memory bandwidth)")
    return GpuChoice(gpu=g.id, num_gpus=s.num_gpus, memory_bytes=g.memory_bytes, peak_bytes=e.peak_bytes,
                     headroom_bytes=e.headroom_bytes, step_time_s=sp.step_time_s, tokens_per_s=sp.tokens_per_s,
                     basis=basis)


def best_gpu(job: dict[str, Any] | JobSpec, by: Literal["smallest_memory", "cheapest", "fastest"] = "smallest_memory",
             margin_pct: float = 0.0, utilization: float = cp.MFU) -> GpuChoice | None:
    """The catalog GPU on which the job (as it is, with its num_gpus) fits: the smallest total memory or the
    fastest.

    smallest_memory ("cheapest", its old name): the smallest GPU memory in all, memory_bytes * num_gpus, ties
    broken by the lower dense TFLOP/s; the catalog has no prices (no single dated on-demand price list covers
    its GPUs), so memplan does not call it the cheapest.
    fastest: the shortest step time (training: FLOPs at `utilization` of the dense TFLOP/s of the compute dtype;
    inference: decode step time from the memory bandwidth). None when no catalog GPU fits.
    """
    if by not in ("smallest_memory", "cheapest", "fastest"):
        raise SpecError([("by", f"unknown '{by}'; allowed: smallest_memory, fastest")])
    return pick_gpu(fitting_gpus(parse_spec(job), margin_pct, utilization), by, utilization)


def kv_cache_budget(job: dict[str, Any] | JobSpec, gpu_memory_utilization: float = 0.9) -> KvBudget:
    """The KV-cache budget and the concurrent sequences of a vLLM server for this inference job's model, GPU and
    context: the job served (task serve, memplan.engines.serving.vllm) with max_model_len = prompt_len +
    max_new_tokens, its KV cache dtype, `gpu_memory_utilization` and vLLM's other defaults for the GPU.
    concurrent_sequences = whole sequences of max_model_len the KV blocks hold (vLLM's "Maximum concurrency",
    rounded down)."""
    spec = parse_spec(job)
    if spec.task != "inference":
        raise SpecError([("task", "kv_cache_budget applies to inference jobs (task: inference)")])
    if not 0 < gpu_memory_utilization <= 1:
        raise SpecError([("target.gpu_memory_utilization", f"must be in (0, 1], got {gpu_memory_utilization:g}")])
    info = model_info(spec)
    if info.head not in ("causal_lm",) or info.is_encoder_decoder:
        raise SpecError([("model", f"{info.model_id} is not a decoder-only causal LM: vLLM's paged KV cache budget "
                                   "is modelled for those only")])
    inf = spec.inference
    seq_tokens = inf.prompt_len + inf.max_new_tokens
    kv = inf.kv_cache_dtype if inf.kv_cache_dtype in ("bf16", "fp16", "fp8") else "auto"
    data = spec.model_dump(by_alias=True, exclude_unset=True)
    data.pop("inference", None)
    data.update(task="serve", serving={"engine": "vllm", "gpu_memory_utilization": gpu_memory_utilization,
                                       "max_model_len": seq_tokens, "kv_cache_dtype": kv})
    e = estimate(data)
    s = e.serving
    assert s is not None
    return KvBudget(total_memory_bytes=s.cuda_total_bytes, gpu_memory_utilization=gpu_memory_utilization,
                    weights_bytes=s.weights_bytes, profile_activation_bytes=s.activation_bytes,
                    non_torch_bytes=s.non_torch_bytes, profile_tokens=s.max_num_batched_tokens,
                    kv_cache_budget_bytes=s.kv_cache_bytes, kv_bytes_per_token=s.kv_bytes_per_token,
                    kv_bytes_per_sequence=s.request_kv_bytes, sequence_tokens=seq_tokens,
                    concurrent_sequences=max(s.kv_cache_bytes, 0) // s.request_kv_bytes)


def inference_solvers(spec: JobSpec, margin_pct: float, gpu_memory_utilization: float) -> dict[str, Any]:
    """largest_batch / longest_prompt_len (HF generate(), memplan's estimate) and vLLM's KV budget."""
    batch = largest_within_margin(spec, "inference.batch_size", margin_pct)
    prompt = largest_within_margin(spec, "inference.prompt_len", margin_pct)
    out: dict[str, Any] = {
        "largest_batch": batch,
        "longest_prompt_len": prompt,
        "longest_context": prompt + spec.inference.max_new_tokens if prompt is not None else None,
        "kv_cache_budget_bytes": None, "concurrent_sequences": None, "vllm": None,
    }
    try:
        budget = kv_cache_budget(spec, gpu_memory_utilization)
    except SpecError as exc:
        out["vllm_note"] = str(exc)
        return out
    out.update(kv_cache_budget_bytes=budget.kv_cache_budget_bytes, concurrent_sequences=budget.concurrent_sequences,
               vllm=budget.model_dump())
    return out
