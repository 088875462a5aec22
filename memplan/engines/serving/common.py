"""What the serving engines' rules share: the Budget they return, the model's dtype and KV dtype as served, the
GPU's total memory as CUDA reports it, and the KV layer groups and the largest max_model_len."""

from __future__ import annotations

from dataclasses import dataclass, field

from memplan.job import ResolvedJob, learned_positions
from memplan.result import ServingBudget
from memplan.terms import paged_kv as pkv
from memplan.terms import vllm as vt
from memplan.terms.dtypes import GIB, dtype_bytes


@dataclass
class Budget:
    """One serving engine's answer: the ServingBudget (the estimate's `serving` object), the bytes by component that
    nvidia-smi shows while serving (they add up to the estimate's peak_bytes), the notes for `assumptions`, and
    the modelled non-KV bytes the calibrated range applies to (what is not exact: activations, non-torch, graphs)."""

    serving: ServingBudget
    components: dict[str, int]
    notes: list[str] = field(default_factory=list)
    non_kv_modelled_bytes: int = 0


def model_dtype(job: ResolvedJob) -> str:
    """The dtype the engine runs the model in: the float weight dtype, or the compute dtype under quantized
    weights (vLLM's dtype "auto": the checkpoint's torch_dtype, fp32 checkpoints served in bf16)."""
    w = job.spec.weight_dtype
    if w in ("bf16", "fp16", "fp32"):
        return w
    return "bf16" if job.spec.compute_dtype in ("bf16", "fp32") else job.spec.compute_dtype


def kv_dtype(job: ResolvedJob) -> str:
    """The KV cache's dtype: serving.kv_cache_dtype, auto = the model's dtype."""
    kv = job.spec.serving.kv_cache_dtype
    return model_dtype(job) if kv == "auto" else kv


def cuda_total_bytes(job: ResolvedJob) -> tuple[int, str]:
    """The GPU's memory as CUDA reports it (torch.cuda.mem_get_info()[1], what the engines multiply by their
    utilization), and where the figure comes from: the GPU catalog's `cuda_total_memory_bytes` where a log shows
    it, else the driver total less the driver reserve (a prior)."""
    from memplan import catalog

    try:
        entry = catalog.get_gpu(job.gpu.id)
        measured = getattr(entry, "cuda_total_memory_bytes", None)
    except catalog.CatalogError:
        measured = None
    if measured:
        return measured, f"{job.gpu.id} reports {measured / GIB:.2f} GiB to CUDA (GPU catalog)"
    return job.gpu.usable_bytes, (f"{job.gpu.id}: CUDA's total taken as the driver total less 512 MiB "
                                  f"({job.gpu.usable_bytes / GIB:.2f} GiB; a prior)")


@dataclass(frozen=True)
class KvGroup:
    """Layers of one kind that share a block table: full attention, or sliding window `window`."""

    layers: int
    window: int | None


def kv_groups(job: ResolvedJob) -> list[KvGroup]:
    """The model's attention layers by kind: full-attention layers, and sliding-window layers (Gemma 2/3, Mistral
    v0.1) with their window."""
    info = job.info
    layers = info.num_layers  # decoder layers: serve jobs are decoder-only
    sliding = info.sliding_window_layers if info.sliding_window else 0
    out = []
    if layers - sliding:
        out.append(KvGroup(layers - sliding, None))
    if sliding:
        out.append(KvGroup(sliding, info.sliding_window))
    return out


def uniform_group_size(kinds: list[KvGroup]) -> int:
    """Layers per block-table group when the layer kinds share one page size: the smallest kind's count, or the
    largest's when no kind has 25% more layers than the smallest (fewer padding layers); each kind is cut into
    groups of that many layers, the last one padded.

    Source: vllm/v1/core/kv_cache_utils.py _get_kv_cache_groups_uniform_page_size.
    Example: Gemma-2-9B (21 full + 21 sliding): 21, two groups; Gemma-3-27B (10 full + 52 sliding): 10, 7 groups.
    """
    counts = [k.layers for k in kinds]
    smallest, largest = min(counts), max(counts)
    return largest if largest < smallest * 1.25 else smallest


def group_count(kinds: list[KvGroup], group_size: int) -> int:
    """Block-table groups: each kind's layers in groups of `group_size`, rounded up."""
    return sum(-(-k.layers // group_size) for k in kinds)


def request_blocks(kinds: list[KvGroup], group_size: int, tokens: int, batched_tokens: int,
                   block_size: int) -> int:
    """Blocks one request of `tokens` tokens needs across the groups (full attention: the whole request; sliding
    window: the window plus a step, plus one), as vLLM's concurrency and its start check count them."""
    blocks = 0
    for k in kinds:
        groups = -(-k.layers // group_size)
        if k.window is None:
            per_group = pkv.full_attention_request_bytes(tokens, block_size, 1)
        else:
            per_group = pkv.sliding_window_request_bytes(tokens, k.window, batched_tokens, block_size, 1)
        blocks += groups * per_group
    return blocks


def largest_len(kinds: list[KvGroup], group_size: int, blocks: int, batched_tokens: int, block_size: int,
                cap: int) -> int:
    """The longest request (at most `cap` tokens) whose blocks fit in `blocks`: vLLM's auto-fit of max_model_len
    (a binary search over request_blocks)."""
    if blocks <= 0 or request_blocks(kinds, group_size, 1, batched_tokens, block_size) > blocks:
        return 0
    lo, hi = 1, cap
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if request_blocks(kinds, group_size, mid, batched_tokens, block_size) <= blocks:
            lo = mid
        else:
            hi = mid - 1
    return lo


def max_model_len_cap(job: ResolvedJob) -> int:
    """The longest request the engines allow by default: the model's max_position_embeddings (131,072 when the
    config states none)."""
    return job.info.max_positions or 131072


def kv_layout_note(job: ResolvedJob, kv_heads_per_rank: int) -> str:
    """What one GPU caches per token and layer, said the same way for both engines."""
    info, tp = job.info, job.spec.serving.tensor_parallel_size
    if info.mla:
        return f"the multi-head latent attention's {info.kv_latent_size}-value latent per layer, whole on every GPU"
    replicated = ", replicated" if tp > info.num_kv_heads else ""
    return f"{kv_heads_per_rank} KV head(s) of {info.head_dim} per GPU (of {info.num_kv_heads}{replicated})"


def rope_bytes(job: ResolvedJob, dtype: str) -> int:
    """The rotary table of a model with rotary positions (none with learned positions): vLLM's, which SGLang's
    rotary embedding copies (memplan.terms.vllm.rope_cache_bytes)."""
    info = job.info
    if info.max_positions is None or learned_positions(info) is not None:
        return 0
    rotary = int(info.head_dim * float(info.extras.get("partial_rotary_factor", 1.0) or 1.0))
    return vt.rope_cache_bytes(info.max_positions, rotary, dtype_bytes(dtype))
