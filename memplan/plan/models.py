"""The planner's input (PlanTarget) and output (Plan and its parts): pydantic models, so the API returns them as
JSON as they are. Byte counts are integers; times are seconds."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from memplan.result import Estimate
from memplan.spec import Name, SpecError, StrictModel, describe_errors


class PlanTarget(StrictModel):
    """What the plan has to reach. Every field is optional: left out, the job's own value is used."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    global_batch_size: int | None = Field(None, ge=1, le=1_000_000, description=(
        "sequences per optimizer step over all GPUs: micro_batch_size * gradient_accumulation_steps * num_gpus "
        "(training); for inference, the batch every configuration must hold"))
    gpu: Name | None = Field(None, description="catalog GPU id; default: the job's gpu")
    num_gpus: int | None = Field(None, ge=1, le=1024, description="GPU count; default: the job's num_gpus")
    utilization: float = Field(0.4, gt=0, le=1, description="model FLOPs utilization for step times (MFU)")
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1, description=(
        "vLLM's gpu_memory_utilization: the share of total GPU memory vLLM may use (inference KV budget)"))
    margin_pct: float = Field(0.0, ge=0, lt=100, description="required free share of usable memory, percent")


def parse_target(target: PlanTarget | dict[str, Any] | None) -> PlanTarget:
    """Validate a target; errors name the field as target.<field>."""
    if target is None:
        return PlanTarget()
    if isinstance(target, PlanTarget):
        return target
    if not isinstance(target, dict):
        raise SpecError([("target", f"must be a mapping of fields, got {type(target).__name__}")])
    try:
        return PlanTarget.model_validate(target)
    except ValidationError as exc:
        allowed = ", ".join(PlanTarget.model_fields)
        errors = []
        for err in exc.errors():
            if err.get("type") == "extra_forbidden":
                name = str(err["loc"][-1])
                errors.append((f"target.{name}", f"unknown field '{name}'; allowed fields: {allowed}"))
            else:
                loc, msg = describe_errors([err])[0]
                errors.append((f"target.{loc}" if loc else "target", msg))
        raise SpecError(errors) from None


class PlanOption(BaseModel):
    """One configuration that fits the target, re-estimated: `job` given to memplan.estimate gives `peak_bytes`."""

    label: str = Field(description='short summary, e.g. "lora r16, gc, sdpa, mb 4 x ga 8, zero 0"')
    job: dict[str, Any] = Field(description="the full job spec of this configuration")
    peak_bytes: int
    headroom_bytes: int = Field(description="usable_bytes - peak_bytes")
    step_time_s: float | None = Field(description=(
        "training: one optimizer step (all micro-batches of one GPU); inference: one decode step of the batch; "
        "None on a GPU with no catalog speed"))
    tokens_per_s: float | None = Field(description="tokens per second over all GPUs")
    micro_batch_size: int = Field(description="training: micro-batch per GPU; inference: the batch")
    gradient_accumulation_steps: int
    num_gpus: int
    recipe_changes: int = Field(description=(
        "how many of method, weight_dtype, lora.r, optimizer (inference: weight_dtype, kv_cache_dtype) differ "
        "from the job: 0 trains (serves) the same model the same way"))
    host_bytes: int = Field(0, description="CPU memory per node it needs (the estimate's host_bytes)")
    host_memory_plausible: bool | None = Field(
        None, description="the estimate's host_memory_plausible: false when no common node with the GPU has "
                          "that much CPU memory")


class Change(BaseModel):
    """One single change to the job, re-estimated with memplan.estimate."""

    description: str
    fields: dict[str, Any] = Field(description="the job fields changed, dotted paths, with their new values")
    job: dict[str, Any] = Field(description="the changed job spec")
    peak_bytes: int
    saves_bytes: int = Field(description="baseline peak_bytes - this peak_bytes (exact, both estimated)")
    fits: bool = Field(description="fits the GPU with the target's margin")
    slowdown: float | None = Field(description=(
        "seconds per token after the change / before (1.0 = as fast; the step-time ratio when the tokens per "
        "step stay the same); None where no speed model applies"))
    host_bytes: int = Field(0, description="CPU memory per node it needs (the estimate's host_bytes)")
    host_memory_plausible: bool | None = Field(
        None, description="the estimate's host_memory_plausible: false when no common node with the GPU has "
                          "that much CPU memory")


class FewestGpus(BaseModel):
    num_gpus: int
    zero_stage: int
    parallelism: str = Field("none", description="the data-parallel engine it fits with: none, ddp, deepspeed "
                                                 "or fsdp (zero_stage is FSDP's sharding under fsdp)")
    peak_bytes: int
    headroom_bytes: int
    job: dict[str, Any]


class GpuChoice(BaseModel):
    gpu: str
    num_gpus: int
    memory_bytes: int = Field(description="one GPU's memory as the driver reports it")
    peak_bytes: int
    headroom_bytes: int
    step_time_s: float | None
    tokens_per_s: float | None
    basis: str = Field(description="what 'smallest total memory' or 'fastest' was measured by")


class KvBudget(BaseModel):
    """vLLM's KV-cache budget on one GPU (see memplan.plan.solvers.kv_cache_budget)."""

    total_memory_bytes: int
    gpu_memory_utilization: float
    weights_bytes: int
    profile_activation_bytes: int
    non_torch_bytes: int
    profile_tokens: int
    kv_cache_budget_bytes: int
    kv_bytes_per_token: int
    kv_bytes_per_sequence: int
    sequence_tokens: int
    concurrent_sequences: int


class Plan(BaseModel):
    configurations: list[PlanOption] = Field(description="ranked: fewest recipe changes, then fastest, then "
                                                         "most headroom")
    changes: list[Change] = Field(description="single changes for a job that does not fit or has < 10% headroom; "
                                              "ranked: fits first, then changes on the job's own GPU count "
                                              "before more GPUs, then smallest slowdown, then most saved")
    solvers: dict[str, Any] = Field(description=(
        "largest_micro_batch, longest_seq_len, fewest_gpus, smallest_memory_gpu (cheapest_gpu: its old name), "
        "fastest_gpu, and inference: {largest_batch, longest_prompt_len, longest_context, kv_cache_budget_bytes, "
        "concurrent_sequences, ...}"))
    assumptions: list[str]
    estimate: Estimate = Field(description="the baseline: the job with the target's gpu, num_gpus and global batch")
    target: PlanTarget
