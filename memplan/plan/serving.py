"""The planner for serve jobs: tensor-parallel degrees, KV cache dtypes and weight formats that fit, the single
changes that make a job fit (fp8 KV, the longest max_model_len that fits, TP x 2, fewer LoRA slots, fp8 / int4
weights, a higher utilization), and the solvers (fewest GPUs, the smallest and the largest-KV GPU of the catalog).
Every number comes from memplan.estimate on the job it shows."""

from __future__ import annotations

from typing import Any

from memplan import catalog
from memplan.estimate import estimate
from memplan.plan.configurations import merge
from memplan.plan.models import Change, PlanOption
from memplan.plan.solvers import dump, fits
from memplan.result import Estimate, demand_bytes
from memplan.spec import JobSpec, SpecError, parse_spec

#: tensor-parallel degrees the planner tries (one node)
TP_DEGREES = (1, 2, 4, 8)


def _try(data: dict[str, Any]) -> tuple[JobSpec, Estimate] | None:
    """The job and its estimate, or None when the engine cannot run it (a TP degree the heads do not divide); the
    planned job takes one replica's GPUs (num_gpus = tensor_parallel_size)."""
    data = {**data, "num_gpus": (data.get("serving") or {}).get("tensor_parallel_size", 1)}
    try:
        spec = parse_spec(data)
        return spec, estimate(spec)
    except SpecError:
        return None


def _fits(e: Estimate, margin: float) -> bool:
    """Fits with the margin, and its calibrated range does too (a borderline serve job fails `memplan check`)."""
    return fits(e, margin) and e.verdict == "fits"


def _label(spec: JobSpec) -> str:
    sv = spec.serving
    lora = f", {sv.max_loras} LoRA slots r{sv.max_lora_rank}" if sv.max_loras else ""
    return f"tp {sv.tensor_parallel_size}, weights {spec.weight_dtype}, kv {sv.kv_cache_dtype}{lora}"


def configurations(data: dict[str, Any], base: JobSpec, margin: float, limit: int,
                   num_gpus: int | None) -> list[PlanOption]:
    """Every (TP degree, weights, KV dtype) that fits, the job's own recipe first, then fewest GPUs, then the most
    KV tokens per GPU."""
    own_w, own_kv = base.weight_dtype, base.serving.kv_cache_dtype
    weights = [own_w] + ([w for w in ("fp8", "int4") if w != own_w] if own_w in ("bf16", "fp16", "fp32") else [])
    kvs = [own_kv] + (["fp8"] if own_kv != "fp8" else [])
    degrees = [tp for tp in TP_DEGREES if num_gpus is None or (tp <= num_gpus and num_gpus % tp == 0)]
    options = []
    for tp in degrees:
        for w in weights:
            for kv in kvs:
                tried = _try(merge(data, {"weight_dtype": w, "serving.tensor_parallel_size": tp,
                                          "serving.kv_cache_dtype": kv}))
                if tried is None or not _fits(tried[1], margin):
                    continue
                spec, e = tried
                s = e.serving
                options.append(PlanOption(
                    label=_label(spec), job=dump(spec), peak_bytes=e.peak_bytes, headroom_bytes=e.headroom_bytes,
                    step_time_s=None, tokens_per_s=None, micro_batch_size=int(s.max_concurrency),
                    gradient_accumulation_steps=1, num_gpus=tp, recipe_changes=(w != own_w) + (kv != own_kv)))
    options.sort(key=lambda o: (o.recipe_changes, o.num_gpus, -o.headroom_bytes, o.label))
    return options[:limit]


def _candidates(base: JobSpec, e: Estimate) -> list[tuple[str, dict[str, Any]]]:
    sv, s = base.serving, e.serving
    out: list[tuple[str, dict[str, Any]]] = []
    if sv.kv_cache_dtype != "fp8":
        out.append(("fp8 KV cache", {"serving.kv_cache_dtype": "fp8"}))
    if 0 < s.largest_max_model_len < s.max_model_len:
        out.append((f"max_model_len {s.largest_max_model_len:,} (the longest that fits)",
                    {"serving.max_model_len": s.largest_max_model_len}))
    if sv.tensor_parallel_size < 8:
        out.append((f"tensor parallel {2 * sv.tensor_parallel_size}",
                    {"serving.tensor_parallel_size": 2 * sv.tensor_parallel_size}))
    if sv.max_loras > 1:
        out.append((f"{sv.max_loras // 2} LoRA slots", {"serving.max_loras": sv.max_loras // 2}))
    if base.weight_dtype in ("bf16", "fp16", "fp32"):
        out += [("fp8 weights", {"weight_dtype": "fp8"}), ("4-bit weights (GPTQ/AWQ int4)", {"weight_dtype": "int4"})]
    if s.gpu_memory_utilization < 0.95 and base.serving.engine == "vllm":
        out.append(("gpu_memory_utilization 0.95", {"serving.gpu_memory_utilization": 0.95}))
    return out


def changes(data: dict[str, Any], base: JobSpec, e: Estimate, margin: float) -> list[Change]:
    """Single changes that lower what the engine needs of its share, for a job that does not fit or whose KV cache
    holds fewer than two requests of max_model_len; fits first, then on the job's own GPUs, then most saved."""
    if _fits(e, margin) and e.serving.max_concurrency >= 2:
        return []
    need = demand_bytes(e)
    out = []
    for text, updates in _candidates(base, e):
        tried = _try(merge(data, updates))
        if tried is None:
            continue
        spec, new = tried
        saves = need - demand_bytes(new) + (new.serving.requested_bytes - e.serving.requested_bytes)
        s = new.serving
        out.append(Change(description=f"{text}: {s.kv_cache_tokens:,} KV tokens, {s.max_concurrency:.2f} requests "
                                      f"of {s.max_model_len:,} at once", fields=updates, job=dump(spec),
                          peak_bytes=new.peak_bytes, saves_bytes=saves, fits=_fits(new, margin), slowdown=None))
    out.sort(key=lambda c: (not c.fits, "serving.tensor_parallel_size" in c.fields, -c.saves_bytes, c.description))
    return out


def solvers(data: dict[str, Any], base: JobSpec, e: Estimate, margin: float) -> dict[str, Any]:
    """fewest_gpus: the smallest TP degree the job fits on; the catalog GPU with the smallest total memory (memory
    x TP) that fits, and the one with the most KV tokens; the largest max_model_len and the KV budget of the job
    as it is."""
    def smallest_tp(job: dict[str, Any]) -> tuple[int, JobSpec, Estimate] | None:
        for tp in TP_DEGREES:
            tried = _try(merge(job, {"serving.tensor_parallel_size": tp}))
            if tried is not None and _fits(tried[1], margin):
                return tp, *tried
        return None

    few = smallest_tp(data)
    gpus = []
    for g in catalog.list_gpus():
        found = smallest_tp({**data, "gpu": g.id})
        if found is not None:
            tp, spec, est = found
            gpus.append({"gpu": g.id, "num_gpus": tp, "memory_bytes": g.memory_bytes,
                         "kv_cache_tokens": est.serving.kv_cache_tokens,
                         "max_concurrency": est.serving.max_concurrency, "job": dump(spec)})
    smallest = min(gpus, key=lambda r: (r["memory_bytes"] * r["num_gpus"], r["gpu"]), default=None)
    most_kv = max(gpus, key=lambda r: (r["kv_cache_tokens"] / r["num_gpus"], r["gpu"]), default=None)
    s = e.serving
    return {
        "fewest_gpus": None if few is None else {"num_gpus": few[0], "kv_cache_tokens": few[2].serving.kv_cache_tokens,
                                                 "max_concurrency": few[2].serving.max_concurrency,
                                                 "job": dump(few[1])},
        "smallest_memory_gpu": smallest, "most_kv_per_gpu": most_kv,
        "largest_max_model_len": s.largest_max_model_len, "kv_cache_tokens": s.kv_cache_tokens,
        "max_concurrency": s.max_concurrency, "kv_tokens_per_lora_slot": s.kv_tokens_per_lora_slot,
    }


def assumptions() -> list[str]:
    return [f"serving plan: tensor parallel {', '.join(map(str, TP_DEGREES))} on one node, weights and KV cache as "
            "the job has them or fp8 / int4; a configuration fits when the engine's share holds one request of "
            "max_model_len (its micro_batch_size is the requests of max_model_len the KV cache holds at once); "
            "no speed model for serving yet (step_time_s and tokens_per_s are null)"]
