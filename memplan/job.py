"""resolve(job) -> ResolvedJob: the spec validated, its model introspected, its GPU looked up and every choice the
real stack would make resolved (attention implementation, optimizer implementation), with the notes that explain
them. Every engine starts from a ResolvedJob; nothing downstream re-resolves.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from pydantic import BaseModel, Field

from memplan import catalog
from memplan.architecture import (ArchitectureError, ModelInfo, approximation, introspect, load_config,
                                  looks_like_path, model_cache, remote_code_ignored)
from memplan.spec import GpuMemorySpec, JobSpec, SpecError, UnknownIdError, parse_spec
from memplan.terms import overhead as ov
from memplan.terms.dtypes import GIB


class GpuInfo(BaseModel):
    id: str
    memory_bytes: int = Field(description="total memory as the driver reports it (nvidia-smi)")
    usable_bytes: int = Field(description="memory_bytes less what the driver keeps for itself")
    name: str | None = None
    node_host_memory_bytes: int | None = Field(
        None, description="the most CPU memory a common node with this GPU has (GPU catalog, with its source)")


@dataclass
class ResolvedJob:
    """A validated job with its model introspected, its GPU looked up and its choices resolved."""

    spec: JobSpec
    info: ModelInfo
    gpu: GpuInfo
    compute_capability: str | None
    attention: str  # the attention implementation the job runs (resolve_attention)
    optimizer_impl: str  # fused / foreach / for_loop (resolve_optimizer_impl)
    notes: list[str]  # why a choice differs from what the spec says; engines append theirs


def resolve(job: dict[str, Any] | JobSpec, allow_path: bool = False) -> ResolvedJob:
    """Validate the spec, introspect the model, look up the GPU and resolve the stack's choices. Raises SpecError
    naming the field (UnknownIdError for an id not in a catalog)."""
    spec = parse_spec(job)
    info = model_info(spec, allow_path)
    try:
        gpu, cc = _gpu(spec)
    except catalog.AmbiguousIdError as exc:
        raise SpecError([("gpu", str(exc))]) from None
    except catalog.CatalogError as exc:
        raise UnknownIdError("gpu", f"{exc} or give {{memory_gib: N}}", exc.suggestions) from None
    _check_positions(spec, info)
    notes: list[str] = []
    raw = _raw_config(spec, allow_path)
    if raw is not None:
        _note_ignored_remote_code(raw, info, notes)
        _note_approximated(raw, notes)
    spec = resolve_weights(spec, raw, notes)
    spec = resolve_precision(spec, gpu.id, cc, notes)
    attention = resolve_attention(info, spec, notes)
    _check_attention_hardware(attention, gpu.id, cc)
    _warn_past_trained_positions(spec, info, notes)
    _check_ulysses_heads(spec, info)
    return ResolvedJob(spec, info, gpu, cc, attention, resolve_optimizer_impl(spec), notes)


def _check_ulysses_heads(spec: JobSpec, info: ModelInfo) -> None:
    """DeepSpeed Ulysses splits the attention heads across the sequence-parallel group: the query heads must
    divide by it, the key/value heads divide by it or divide it (then each GPU keeps one, replicated)
    (deepspeed/runtime/sequence_parallel/ulysses_sp.py UlyssesSPAttentionHF)."""
    sp = spec.sequence_parallel_size
    if sp == 1 or spec.parallel_engine != "deepspeed":
        return
    heads, kv = info.num_heads, info.num_kv_heads
    if heads % sp or (kv % sp and sp % kv):
        raise SpecError([("sequence_parallel_size", f"DeepSpeed Ulysses splits attention heads across the group: "
                                                    f"{info.model_id} has {heads} query and {kv} key/value heads, "
                                                    f"which sequence_parallel_size {sp} does not divide")])


def model_info(spec: JobSpec, allow_path: bool = False) -> ModelInfo:
    """The spec's model, introspected; a model that cannot be built is bad input naming its field."""
    try:
        return introspect(spec.model, spec.inline_config, spec.head, spec.num_labels, allow_path=allow_path)
    except ArchitectureError as exc:
        if exc.suggestions is not None:
            raise UnknownIdError("model", str(exc), exc.suggestions) from None
        raise SpecError([(exc.field if spec.inline_config is None else "model_config", str(exc))]) from None


def _raw_config(spec: JobSpec, allow_path: bool) -> dict | None:
    """The config.json a user gave (inline, or a path in the CLI), or a catalog model's when it carries the
    checkpoint's quantization_config (gpt-oss's MXFP4); None for other catalog models."""
    if spec.inline_config is None and not (allow_path and spec.model and looks_like_path(spec.model)):
        try:
            config = catalog.get_model(spec.model).config if spec.model else None
        except catalog.CatalogError:
            return None
        return config if config and "quantization_config" in config else None
    return load_config(spec.model, spec.inline_config, allow_path=True)[1]


def with_weights(spec: JobSpec, allow_path: bool = False) -> JobSpec:
    """The spec with weight_dtype resolved as `resolve` does (the checkpoint's quantization_config, else bf16) and
    nothing else: for surfaces that reason on the job's fields themselves (the planner), on any GPU."""
    try:
        raw = _raw_config(spec, allow_path)
    except ArchitectureError:
        return spec  # a config that cannot be read: the estimate names its field
    return resolve_weights(spec, raw, [])


def checkpoint_quantization(raw: dict) -> tuple[str, dict, str] | None:
    """(weight_dtype, other job fields, what it is) for a config.json's quantization_config (transformers' format:
    bitsandbytes load_in_4bit / load_in_8bit, GPTQ or AWQ at 4 bits); None without one. A method memplan does not
    model is a SpecError naming weight_dtype."""
    qc = raw.get("quantization_config")
    if not isinstance(qc, dict):
        return None
    method = str(qc.get("quant_method", "bitsandbytes" if "load_in_4bit" in qc or "load_in_8bit" in qc else "")).lower()
    if method == "bitsandbytes" and qc.get("load_in_4bit"):
        kind = str(qc.get("bnb_4bit_quant_type", "fp4"))
        dq = bool(qc.get("bnb_4bit_use_double_quant", False))
        return kind, {"double_quant": dq}, f"bitsandbytes 4-bit {kind}{', double quant' if dq else ''}"
    if method == "bitsandbytes" and qc.get("load_in_8bit"):
        return "int8", {}, "bitsandbytes LLM.int8()"
    if method in ("gptq", "awq") and qc.get("bits", 4) == 4:
        group = qc.get("group_size", 128)
        same = "" if group == 128 else f"; its group size {group} is counted as 128"
        return "int4", {}, f"{method.upper()} 4-bit{same}"
    if method == "mxfp4":
        return "mxfp4", {}, "MXFP4 expert stacks (4.25 bits), the rest in bf16 (modules_to_not_convert)"
    if method in ("fp8", "fbgemm_fp8"):
        return "fp8", {}, f"{method} (one byte per weight and its scales; served, not trained)"
    if method == "compressed-tensors":
        weights = [g.get("weights") or {} for g in (qc.get("config_groups") or {}).values() if isinstance(g, dict)]
        kinds = {(w.get("type"), w.get("num_bits")) for w in weights if isinstance(w, dict)}
        if kinds == {("float", 8)}:
            return "fp8", {}, "compressed-tensors fp8 (served, not trained)"
        if kinds == {("int", 4)}:
            return "int4", {}, "compressed-tensors 4-bit integer weights (W4A16, GPTQ-style groups)"
    what = f"quant_method '{method}'" + (f" at {qc['bits']} bits" if "bits" in qc else "")
    raise SpecError([("weight_dtype", f"the checkpoint's quantization_config is {what}, which memplan does not model "
                                      "yet; set weight_dtype to estimate the weights another way (e.g. bf16, as "
                                      "dequantized on load)")])


def resolve_weights(spec: JobSpec, raw: dict | None, notes: list[str]) -> JobSpec:
    """weight_dtype auto (or unset): the checkpoint's own quantization_config when its config.json has one, else
    bf16; an explicit dtype overrides the checkpoint (nf4 to quantize a bf16 checkpoint on load, or bf16 for a
    quantized one dequantized)."""
    explicit = "weight_dtype" in spec.model_fields_set and spec.weight_dtype != "auto"
    found = checkpoint_quantization(raw) if raw is not None and not explicit else None
    if found is None:
        return spec if spec.weight_dtype != "auto" else spec.model_copy(update={"weight_dtype": "bf16"})
    dtype, extra, what = found
    data = spec.model_dump(by_alias=True, exclude_unset=True)
    data.update({"weight_dtype": dtype, **{k: v for k, v in extra.items() if k not in spec.model_fields_set}})
    try:
        resolved = parse_spec(data)
    except SpecError as exc:
        raise SpecError([(f, f"{m} (weight_dtype {dtype} comes from the checkpoint's quantization_config, {what})")
                         for f, m in exc.errors]) from None
    notes.append(f"weight_dtype {dtype}: the checkpoint's quantization_config ({what}); set weight_dtype to "
                 "override it")
    return resolved


def _note_approximated(raw: dict, notes: list[str]) -> None:
    """A model_type transformers does not ship, estimated as a Llama of its stated numbers: say so."""
    if approximation(raw) is not None:
        notes.append(f"warning: approximate: transformers does not ship model_type '{raw.get('model_type')}' (its "
                     "code is in the model repository, which memplan never runs); estimated as a Llama-architecture "
                     "decoder with the config's numbers (hidden size, layers, heads, key/value heads, MLP width, "
                     "vocabulary): weights of that shape are exact, layer details (norms, biases, attention and "
                     "MLP kinds) may differ")


def _note_ignored_remote_code(raw: dict, info: ModelInfo, notes: list[str]) -> None:
    """A config that asks for remote code for a model transformers ships (Phi-3's Hub config) is built from
    transformers' own code: say so."""
    if remote_code_ignored(raw):
        notes.append(f"the config's auto_map / trust_remote_code was ignored: transformers ships {info.model_type} "
                     "itself, and memplan builds the model from that code (it never runs code from a model "
                     "repository)")


def _gpu(spec: JobSpec) -> tuple[GpuInfo, str | None]:
    if isinstance(spec.gpu, GpuMemorySpec):
        mem = int(spec.gpu.memory_gib * GIB)
        if ov.usable_memory_bytes(mem) <= 0:
            raise SpecError([("gpu.memory_gib", f"must be above the {ov.DRIVER_RESERVED_PRIOR_BYTES / GIB:g} GiB the "
                                                f"driver keeps, got {spec.gpu.memory_gib:g}")])
        return GpuInfo(id=f"custom-{spec.gpu.memory_gib:g}GiB", memory_bytes=mem,
                       usable_bytes=ov.usable_memory_bytes(mem)), None
    entry = catalog.get_gpu(spec.gpu)
    return (GpuInfo(id=entry.id, memory_bytes=entry.memory_bytes, name=entry.name,
                    usable_bytes=ov.usable_memory_bytes(entry.memory_bytes),
                    node_host_memory_bytes=entry.node_host_memory_bytes), entry.compute_capability)


#: the first NVIDIA compute capability with bf16 tensor cores and flash-attn 2 support (Ampere)
AMPERE = (8, 0)


def _capability(cc: str | None) -> tuple[int, int] | None:
    """(major, minor) of an NVIDIA compute capability ("7.5" -> (7, 5)); None for a custom GPU or an AMD one."""
    try:
        major, minor = (cc or "").split(".")
        return int(major), int(minor)
    except ValueError:
        return None


def resolve_precision(spec: JobSpec, gpu_id: str, cc: str | None, notes: list[str]) -> JobSpec:
    """The spec with a precision the GPU runs. Before Ampere (T4, V100) there is no bf16: the HF Trainer refuses
    bf16=True (transformers' is_torch_bf16_gpu_available needs compute capability 8.0) and vLLM refuses bfloat16.
    A bf16 the user set is bad input naming the field; the defaulted bf16 becomes fp16 (weights, autocast, KV
    cache), as people run there, with a note."""
    have = _capability(cc)
    if have is None or have >= AMPERE or spec.compute_dtype != "bf16":
        return spec
    where = f"{gpu_id} (compute capability {cc}) has no bf16: bf16 needs compute capability 8.0 (Ampere) or newer"
    field = "mixed_precision" if spec.mixed_precision == "bf16" else "weight_dtype"
    if field in spec.model_fields_set:
        other = "mixed_precision fp16, or no with fp32 weights" if field == "mixed_precision" else "fp16 or fp32"
        raise SpecError([(field, f"{where}, and the HF Trainer and vLLM refuse it there; use {other}")])
    update: dict[str, str] = {field: "fp16"}
    if field == "mixed_precision" and spec.weight_dtype == "bf16" and "weight_dtype" not in spec.model_fields_set:
        update["weight_dtype"] = "fp16"
    changed = [f"{k} fp16" for k in update]
    if (spec.task == "inference" and spec.inference.kv_cache_dtype == "bf16"
            and "kv_cache_dtype" not in spec.inference.model_fields_set):
        update["inference"] = spec.inference.model_copy(update={"kv_cache_dtype": "fp16"})
        changed.append("inference.kv_cache_dtype fp16")
    notes.append(f"{where}; estimated with fp16 in its place ({', '.join(changed)}), as jobs run there")
    return spec.model_copy(update=update)


def _check_attention_hardware(attention: str, gpu_id: str, cc: str | None) -> None:
    """flash-attn 2 builds for Ampere, Ada and Hopper only (compute capability 8.0+)."""
    have = _capability(cc)
    if attention == "flash_attention_2" and have is not None and have < AMPERE:
        raise SpecError([("attention", f"flash_attention_2 needs compute capability 8.0 or newer (flash-attn 2 runs "
                                       f"on Ampere, Ada and Hopper); {gpu_id} has {cc}: use sdpa or eager")])


def _warn_past_trained_positions(spec: JobSpec, info: ModelInfo, notes: list[str]) -> None:
    """Rotary and relative positions run at any length, but a model has not learned past its
    max_position_embeddings: memory is as estimated, quality is not promised."""
    if info.max_positions is None or learned_positions(info) is not None or info.is_encoder_decoder:
        return  # an encoder-decoder's prompt and generated tokens sit in two stacks (T5's relative positions)
    if spec.task == "train":
        tokens = spec.seq_len + (spec.num_virtual_tokens if spec.method == "prompt_tuning" else 0)
    else:
        tokens = spec.inference.prompt_len + spec.inference.max_new_tokens
    if tokens > info.max_positions:
        notes.append(f"warning: {tokens:,} tokens per sequence exceed {info.model_type}'s max_position_embeddings "
                     f"({info.max_positions:,}): the memory estimate holds, but the model was not trained that long")


def resolve_attention(info: ModelInfo, spec: JobSpec, notes: list[str]) -> str:
    """The attention implementation the job runs: the spec's, or eager where sdpa was defaulted and the model has
    none (noted in `notes`); an explicit unsupported choice is a SpecError."""
    impl = spec.attention
    explicit = "attention" in spec.model_fields_set
    if impl == "flash_attention_2":
        if not info.supports_flash_attention:
            raise SpecError([("attention", f"{info.model_type} has no flash_attention_2 implementation in "
                                           "transformers; allowed: eager, sdpa" if info.supports_sdpa else
                              f"{info.model_type} supports only eager attention")])
        if spec.compute_dtype == "fp32":
            raise SpecError([("attention", "flash_attention_2 runs in bf16/fp16 only; set mixed_precision bf16 "
                                           "or fp16, or use sdpa / eager")])
    if impl == "sdpa" and not info.supports_sdpa:
        if explicit:
            raise SpecError([("attention", f"{info.model_type} has no sdpa implementation in transformers; "
                                           "allowed: eager")])
        notes.append(f"{info.model_type} has no SDPA attention in transformers: estimated with eager attention")
        return "eager"
    return impl


def resolve_optimizer_impl(spec: JobSpec) -> str:
    """fused / foreach / for_loop: the spec's, or what the HF Trainer and torch pick on CUDA for `auto`."""
    if spec.optimizer_impl != "auto":
        return spec.optimizer_impl
    if spec.optimizer == "adamw":
        return "fused"  # HF Trainer's default optim is adamw_torch_fused (torch >= 2.8)
    if spec.optimizer in ("lion", "adafactor"):
        return "for_loop"
    return "foreach"  # torch's default on CUDA for SGD


@lru_cache(maxsize=256)
def learned_positions(info: ModelInfo) -> int | None:
    """How many positions a learned absolute position table covers (BERT, GPT-2, OPT), None for rotary or
    relative positions, which run at any length."""
    if not any(p.kind == "embedding" and ("position" in p.name or p.name.endswith("wpe.weight"))
               for p in info.params):
        return None
    return info.max_positions


model_cache.on_evict(learned_positions.cache_clear)


def position_cap(spec: JobSpec, info: ModelInfo, field: str) -> int | None:
    """The largest `field` (seq_len, inference.prompt_len) a learned position table lets the job run: the table's
    rows less prompt tuning's virtual tokens / the tokens generation appends. None when positions do not limit it
    (rotary or relative positions, or a batch field)."""
    positions = learned_positions(info)
    if positions is None:
        return None
    if field == "seq_len":
        return positions - (spec.num_virtual_tokens if spec.method == "prompt_tuning" else 0)
    if field == "inference.prompt_len":
        return positions - spec.inference.max_new_tokens
    return None


def _check_positions(spec: JobSpec, info: ModelInfo) -> None:
    """A job longer than a learned position table cannot run (the embedding lookup fails): refuse it."""
    field = "seq_len" if spec.task == "train" else "inference.prompt_len"
    cap = position_cap(spec, info, field)
    value = spec.seq_len if spec.task == "train" else spec.inference.prompt_len
    if cap is not None and value > cap:
        positions = learned_positions(info)
        raise SpecError([(field, f"{info.model_type} has learned absolute positions for {positions} tokens; "
                                 f"the job needs {value + positions - cap}, which the model cannot run")])
