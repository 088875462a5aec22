"""The planner: what fits, the best configurations that fit a target, and what to change when a job does not fit.

    plan(job, target=None, limit=10) -> Plan
    largest_micro_batch(job), longest_seq_len(job), fewest_gpus(job, max_gpus=64), best_gpu(job, by="smallest_memory")
    kv_cache_budget(job, gpu_memory_utilization=0.9)

Every byte count in a Plan comes from memplan.estimate on the exact job it shows (`PlanOption.job`,
`Change.job`); speeds come from memplan.terms.compute (FLOPs over dense TFLOP/s at a stated utilization). The search
is bounded so a typical request answers in well under 100 ms once the model is built (bench/plan_speed.py).
"""

from __future__ import annotations

from typing import Any

from memplan import catalog
from memplan.architecture import ArchitectureError, looks_like_path, load_config
from memplan.estimate import estimate
from memplan.job import model_info, with_weights
from memplan.plan import serving
from memplan.plan.changes import changes as _changes
from memplan.plan.configurations import Search, configurations as _configurations, divisors
from memplan.plan.models import (Change, FewestGpus, GpuChoice, KvBudget, Plan, PlanOption, PlanTarget,
                                 parse_target)
from memplan.plan.solvers import (MAX_GPUS, best_gpu, fewest_gpus, fitting_gpus, inference_solvers,
                                  kv_cache_budget, largest_micro_batch, largest_within_margin, longest_seq_len,
                                  pick_gpu)
from memplan.plan.speed import job_speed, rates
from memplan.spec import JobSpec, SpecError, UnknownIdError, parse_spec
from memplan.terms import compute as cp

__all__ = ["Change", "FewestGpus", "GpuChoice", "KvBudget", "Plan", "PlanOption", "PlanTarget", "best_gpu",
           "fewest_gpus", "kv_cache_budget", "largest_micro_batch", "longest_seq_len", "plan"]

MAX_LIMIT = 100


def _prepare(job: dict[str, Any] | JobSpec, allow_path: bool) -> JobSpec:
    """The job, with a config.json path (CLI only) read into model_config so every later estimate needs no I/O."""
    spec = parse_spec(job)
    if allow_path and spec.model is not None and looks_like_path(spec.model):
        try:
            model_id, config = load_config(spec.model, None, allow_path=True)
        except ArchitectureError as exc:
            raise SpecError([("model", str(exc))]) from None
        data = spec.model_dump(by_alias=True, exclude_unset=True)
        data.pop("model")
        spec = parse_spec({**data, "model_config": {**config, "_name_or_path": model_id}})
    return spec


def _nearest_multiples(value: int, step: int) -> str:
    below, above = value // step * step, -(-value // step) * step
    return " or ".join(str(v) for v in dict.fromkeys(v for v in (below, above) if v >= step))


def _baseline(spec: JobSpec, t: PlanTarget, notes: list[str]) -> tuple[dict[str, Any], int]:
    """The job with the target's GPU, GPU count and global batch applied; and the global batch to reach."""
    data = spec.model_dump(by_alias=True, exclude_unset=True)
    if t.gpu is not None:
        try:
            data["gpu"] = catalog.get_gpu(t.gpu).id
        except catalog.CatalogError as exc:
            raise UnknownIdError("target.gpu", str(exc), exc.suggestions) from None
    if t.num_gpus is not None:
        data["num_gpus"] = t.num_gpus
    n = data.get("num_gpus", spec.num_gpus)
    mb, ga = spec.micro_batch_size, spec.gradient_accumulation_steps
    if spec.task != "train":
        return data, t.global_batch_size or spec.inference.batch_size
    if t.global_batch_size is None:
        return data, mb * ga * n
    g = t.global_batch_size
    if g % n:
        raise SpecError([("target.global_batch_size",
                          f"{g} is not a multiple of num_gpus {n} (global batch = micro_batch_size x "
                          f"gradient_accumulation_steps x num_gpus); nearest that are: {_nearest_multiples(g, n)}")])
    per = g // n
    if per % mb:
        new_mb = max(d for d in divisors(per) if d <= mb)
        notes.append(f"micro-batch {mb} does not divide the per-GPU batch {per} (global {g} / {n} GPUs): the "
                     f"baseline uses micro-batch {new_mb} x accumulation {per // new_mb}")
        mb = data["micro_batch_size"] = new_mb
    data["gradient_accumulation_steps"] = per // mb
    return data, g


def _assumptions(search: Search, t: PlanTarget) -> list[str]:
    spec = search.spec
    out = []
    r = rates(spec)
    if r.note:
        out.append(r.note)
    if spec.task == "train":
        out += [
            f"step time = FLOPs / (dense {spec.compute_dtype} TFLOP/s x {t.utilization:g}); {cp.MFU:g} is the "
            "default utilization (Llama 3 paper Table 4: 38-43% BF16 MFU on H100s; PaLM Table 3: 46.2%), applied "
            "to every FLOP counted, recomputation included",
            "FLOPs per micro-step: forward 2*N*T + attention 4*b*s^2*h_q per layer (halved for causal sdpa / "
            "flash_attention_2, not for eager), backward 2*N*T input gradients + 2*N_t*T weight gradients + twice "
            "attention, + one forward of the blocks under gradient checkpointing (memplan/terms/compute.py)",
            "QLoRA / int8 LoRA: bitsandbytes dequantization per matmul pass at the GPU's memory bandwidth; "
            f"DeepSpeed offload: PCIe copies at {cp.PCIE_GB_S:g} GB/s, not overlapped; ZeRO communication and "
            "CPU Adam time are not modelled, so ZeRO stages and offload are raised only as far as micro-batch 1 "
            "needs",
            "micro-batch: the largest divisor of the per-GPU batch that fits (a larger micro-batch is not faster "
            "at a constant utilization); options beaten by another of the same recipe on both speed and headroom "
            "are left out",
        ]
    else:
        out += [
            "decode step time = (weights + KV cache) / memory bandwidth (datasheet, an upper bound on speed); "
            "quantized weights counted at their packed size (GPTQ/AWQ-style kernels); bitsandbytes 4-bit adds a "
            "16-bit copy of each weight above batch 1 and LLM.int8() is timed as no faster than 16-bit weights "
            "(memplan/terms/compute.py bnb_decode_extra_bytes)",
            "largest batch / longest prompt: HF generate() as memplan estimates it; kv_cache_budget_bytes and "
            "concurrent_sequences: the job served by vLLM at max_model_len prompt + new tokens (task serve; "
            "memplan.plan.solvers.kv_cache_budget)",
        ]
    out.append("smallest_memory_gpu: the smallest total GPU memory (memory x num_gpus) that fits; the catalog has "
               "no prices, so memplan does not call it the cheapest (cheapest_gpu is its old name, kept for "
               "scripts); fastest_gpu: the shortest step time")
    return out


def plan(job: dict[str, Any] | JobSpec, target: PlanTarget | dict[str, Any] | None = None, limit: int = 10,
         *, allow_path: bool = False) -> Plan:
    """Plan the job against a target: ranked configurations that fit, single changes that make it fit, the solvers.

    The baseline is the job with the target's gpu and num_gpus, and (training) the accumulation that reaches
    target.global_batch_size with the job's micro-batch (the largest divisor of the per-GPU batch not above it
    when it does not divide; said in assumptions). A global batch that num_gpus does not divide is a SpecError
    that names the nearest ones that work. Configurations keep the target's GPU count; only when the target names
    no count and nothing fits are doublings of it tried (up to 64). `allow_path` (CLI) reads a config.json path
    in `model` once, up front.

    Raises SpecError naming the field (target.<field> for the target, limit) on bad input.
    """
    t = parse_target(target)
    if not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise SpecError([("limit", f"must be an integer in 1..{MAX_LIMIT}, got {limit!r}")])
    spec = with_weights(_prepare(job, allow_path))  # the planner reasons on the weights the job loads
    notes: list[str] = []
    data, global_batch = _baseline(spec, t, notes)
    base_spec = parse_spec(data)
    base_e = estimate(base_spec)
    if base_spec.task == "serve":
        return Plan(configurations=serving.configurations(data, base_spec, t.margin_pct, limit, t.num_gpus),
                    changes=serving.changes(data, base_spec, base_e, t.margin_pct),
                    solvers={"serving": serving.solvers(data, base_spec, base_e, t.margin_pct)},
                    assumptions=notes + serving.assumptions() + base_e.assumptions, estimate=base_e, target=t)
    search = Search(data=data, spec=base_spec, info=model_info(base_spec), target=t, global_batch=global_batch,
                    notes=notes)
    base_speed = job_speed(base_spec, base_e, t.utilization)
    margin = t.margin_pct

    counts = [base_spec.num_gpus]
    options = _configurations(search, counts, limit)
    if not options and t.num_gpus is None and base_spec.task == "train":
        n = base_spec.num_gpus * 2
        while n <= MAX_GPUS and not options:
            if global_batch % n == 0:
                options = _configurations(search, [n], limit)
                if options:
                    notes.append(f"nothing fits on {base_spec.num_gpus} GPU(s): configurations on {n} GPUs")
            n *= 2
        if not options:
            notes.append(f"nothing fits on up to {MAX_GPUS} GPUs dividing the global batch {global_batch}")

    gpus = fitting_gpus(base_spec, margin, t.utilization)
    smallest, fastest = pick_gpu(gpus, "smallest_memory", t.utilization), pick_gpu(gpus, "fastest", t.utilization)
    few = fewest_gpus(base_spec, margin_pct=margin)
    train = base_spec.task == "train"
    solvers: dict[str, Any] = {
        "largest_micro_batch": largest_within_margin(base_spec, "micro_batch_size", margin) if train else None,
        "longest_seq_len": largest_within_margin(base_spec, "seq_len", margin) if train else None,
        "fewest_gpus": few.model_dump() if few else None,
        "smallest_memory_gpu": smallest.model_dump() if smallest else None,
        "cheapest_gpu": smallest.model_dump() if smallest else None,  # the old name of smallest_memory_gpu
        "fastest_gpu": fastest.model_dump() if fastest else None,
        "inference": inference_solvers(base_spec, margin, t.gpu_memory_utilization)
        if base_spec.task == "inference" else None,
    }
    return Plan(configurations=options, changes=_changes(search, base_e, base_speed), solvers=solvers,
                assumptions=notes + _assumptions(search, t) + base_e.assumptions, estimate=base_e, target=t)
