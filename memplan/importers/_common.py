"""Shared pieces of the config importers: reading a file, the per-file collector of job fields, value checks, and
the mappings several formats share (torch dtypes, attention implementations, bitsandbytes quantization, FSDP).

Every importer is plain dict mapping: no transformers / deepspeed / accelerate / peft import, so it is fast and
works where those libraries are not installed.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from typing import Any

from memplan.files import read_mapping
from memplan.spec import SpecError

KINDS = ("trainer", "peft", "deepspeed", "accelerate", "axolotl", "memplan", "vllm", "sglang")
NOT_MODELLED = "not modelled yet"
UNKNOWN = "unknown field"


def kinds_text() -> str:
    return "|".join(KINDS)


def resolve_path(target: str, base_dir: str) -> str:
    """A path written inside a config file: as the training process would open it (relative to the working
    directory, as transformers / accelerate / axolotl do), else relative to the referencing file's folder."""
    target = os.path.expanduser(str(target))
    if os.path.isabs(target) or os.path.exists(target):
        return target
    beside = os.path.normpath(os.path.join(base_dir, target))
    return beside if os.path.exists(beside) else target


def read_config_file(path: str) -> dict[str, Any]:
    """The mapping stored in a JSON or YAML file (a directory: its adapter_config.json, as PEFT saves adapters).

    JSON for *.json, else YAML (YAML 1.1 reads JSON too), bounded as memplan.files reads every file. Anything that
    is not a readable file holding one mapping raises SpecError naming the file.
    """
    if os.path.isdir(path):
        inner = os.path.join(path, "adapter_config.json")
        if not os.path.isfile(inner):
            raise SpecError([(path, "is a directory without an adapter_config.json; give a config file "
                                    f"(JSON or YAML), optionally as KIND:PATH with KIND one of {kinds_text()}")])
        path = inner
    return read_mapping(path)


@dataclass
class Assign:
    """One job field set by one source field of one file."""

    field: str  # job field; "lora.r" style for the nested ones
    value: Any
    file: str
    source: str
    raw: Any = None  # the value as the file wrote it


@dataclass
class Collector:
    """What one file says: job fields it sets, 'auto' fields it defers, fields it ignores, files it references."""

    file: str  # the name shown to the user
    kind: str
    base_dir: str = "."  # where relative references of this file are also looked up
    assigns: list[Assign] = field(default_factory=list)
    weak: list[Assign] = field(default_factory=list)  # used only when no other source sets the field
    autos: list[tuple[str, str]] = field(default_factory=list)  # (job field, source field)
    ignored: list[tuple[str, str]] = field(default_factory=list)  # (source field, reason)
    refs: list[tuple[str, Any, str]] = field(default_factory=list)  # (kind, path or inline dict, source field)

    # -- recording ---------------------------------------------------------------------------------------------
    def set(self, job_field: str, value: Any, source: str, raw: Any = None) -> None:
        self.assigns.append(Assign(job_field, value, self.file, source, value if raw is None else raw))

    def set_weak(self, job_field: str, value: Any, source: str) -> None:
        self.weak.append(Assign(job_field, value, self.file, source, value))

    def auto(self, job_field: str, source: str) -> None:
        self.autos.append((job_field, source))

    def ignore(self, source: str, reason: str) -> None:
        self.ignored.append((source, reason))

    def ref(self, kind: str, target: Any, source: str) -> None:
        self.refs.append((kind, target, source))

    def error(self, source: str, message: str) -> SpecError:
        return SpecError([(f"{self.file}: {source}" if source else self.file, message)])

    def has(self, job_field: str) -> bool:
        return any(a.field == job_field for a in self.assigns)

    # -- unknown keys ------------------------------------------------------------------------------------------
    def check_keys(self, data: dict, known: set[str] | frozenset[str], prefix: str = "") -> None:
        """Report keys of a known section that the format does not define (typos: `stagee`) as 'unknown field',
        with the closest known name; keys whose value is null/empty change nothing and are skipped."""
        for key, value in data.items():
            if key in known or value is None or value == "" or value == [] or value == {}:
                continue
            close = difflib.get_close_matches(str(key), sorted(known), n=1, cutoff=0.75)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            self.ignore(f"{prefix}{key}", f"{UNKNOWN}{hint}")

    # -- value checks: bad user input is a SpecError naming the file and field, never a traceback --------------
    def int_(self, source: str, value: Any, minimum: int = 1) -> int:
        out: int | None = None
        if isinstance(value, bool):
            out = None
        elif isinstance(value, int):
            out = value
        elif isinstance(value, float) and value.is_integer():
            out = int(value)
        elif isinstance(value, str) and value.strip().lstrip("-").isdigit():
            out = int(value.strip())
        if out is None:
            raise self.error(source, f"expected an integer, got {value!r}")
        if out < minimum:
            raise self.error(source, f"expected an integer >= {minimum}, got {value!r}")
        return out

    def float_(self, source: str, value: Any) -> float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise self.error(source, f"expected a number, got {value!r}")

    def num_(self, source: str, value: Any) -> int | float:
        """A number as written: integral values stay ints (lora_alpha 16, not 16.0)."""
        out = self.float_(source, value)
        return int(out) if out.is_integer() and not isinstance(value, float) else out

    def bool_(self, source: str, value: Any) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in ("true", "yes", "1", "false", "no", "0"):
            return value.strip().lower() in ("true", "yes", "1")
        raise self.error(source, f"expected true or false, got {value!r}")

    def dict_(self, source: str, value: Any) -> dict:
        if isinstance(value, dict):
            return value
        raise self.error(source, f"expected a mapping, got {type(value).__name__} {value!r}")


def is_auto(value: Any) -> bool:
    """The HF Trainer's DeepSpeed placeholder "auto" (also axolotl's bf16: auto)."""
    return isinstance(value, str) and value.strip().lower() == "auto"


# -- torch dtypes ----------------------------------------------------------------------------------------------

TORCH_DTYPES = {
    "bfloat16": "bf16", "bf16": "bf16", "torch.bfloat16": "bf16",
    "float16": "fp16", "fp16": "fp16", "half": "fp16", "torch.float16": "fp16",
    "float32": "fp32", "fp32": "fp32", "float": "fp32", "torch.float32": "fp32",
}


def map_torch_dtype(out: Collector, source: str, value: Any) -> None:
    """`torch_dtype` / `dtype` of `from_pretrained` (transformers PreTrainedModel.from_pretrained; TRL ModelConfig
    `dtype`, formerly `torch_dtype`): the dtype the base weights are loaded in -> weight_dtype.
    "auto" takes the checkpoint's own dtype (config.json `torch_dtype`), which the config file does not say."""
    if is_auto(value):
        out.ignore(source, "auto: the checkpoint's own dtype (config.json torch_dtype); left to the job default")
        return
    dtype = TORCH_DTYPES.get(str(value).strip().lower())
    if dtype is None:
        raise out.error(source, f"unknown torch dtype {value!r}; allowed: bfloat16, float16, float32, auto")
    out.set("weight_dtype", dtype, source, value)


ATTENTION = {"eager": "eager", "sdpa": "sdpa", "flash_attention_2": "flash_attention_2"}


def map_attention(out: Collector, source: str, value: Any) -> None:
    """`attn_implementation` of transformers `from_pretrained` (eager | sdpa | flash_attention_2 |
    flash_attention_3 | flex_attention | a kernels-hub id) -> attention; memplan models the first three."""
    name = str(value).strip()
    if name in ATTENTION:
        out.set("attention", ATTENTION[name], source, value)
    else:
        out.ignore(source, f"{NOT_MODELLED}: attention {name!r} (memplan models eager, sdpa, flash_attention_2); "
                           "left to the job default")


def map_bnb(out: Collector, *, four_bit: bool, four_src: str, eight_bit: bool, eight_src: str, quant_type: Any,
            quant_type_src: str, quant_type_default: str, double: Any, double_src: str, double_default: bool,
            storage: Any = None, storage_src: str = "bnb_4bit_quant_storage") -> bool:
    """bitsandbytes loading (transformers BitsAndBytesConfig): load_in_4bit -> weight_dtype nf4/fp4 from
    bnb_4bit_quant_type, bnb_4bit_use_double_quant -> double_quant, bnb_4bit_quant_storage -> quant_storage
    (left out: memplan's auto, the recipes' choice); load_in_8bit -> weight_dtype int8.

    The defaults differ per library and are applied when the file leaves them out: BitsAndBytesConfig quant type
    "fp4" and no double quant; TRL ModelConfig "nf4" and use_bnb_nested_quant false; axolotl nf4 with double quant
    (axolotl's model loader). Returns whether the weights are quantized (a torch dtype then only sets the dtype of
    the modules left unquantized)."""
    if four_bit and eight_bit:
        raise out.error(four_src, f"{four_src} and {eight_src} cannot both be true")
    if eight_bit:
        out.set("weight_dtype", "int8", eight_src, True)
        return True
    if not four_bit:
        return False
    qt = quant_type_default if quant_type is None else str(quant_type).strip().lower()
    if qt not in ("nf4", "fp4"):
        raise out.error(quant_type_src, f"unknown 4-bit quant type {quant_type!r}; allowed: nf4, fp4")
    if quant_type is None:
        out.set("weight_dtype", qt, f"{four_src} ({quant_type_src} default {quant_type_default})", True)
    else:
        out.set("weight_dtype", qt, f"{four_src}, {quant_type_src}", quant_type)
    if double is None:
        out.set("double_quant", double_default, f"{double_src} (default {str(double_default).lower()})")
    else:
        out.set("double_quant", out.bool_(double_src, double), double_src)
    if storage is not None:
        name = str(storage).strip().lower()
        if name not in QUANT_STORAGE:
            raise out.error(storage_src, f"unknown 4-bit storage dtype {storage!r}; allowed: uint8, bfloat16, "
                                         "float16, float32")
        out.set("quant_storage", QUANT_STORAGE[name], storage_src, storage)
    return True


#: torch dtype names bnb_4bit_quant_storage takes -> memplan's quant_storage: the float dtypes, or uint8
QUANT_STORAGE = {**TORCH_DTYPES, "uint8": "uint8", "torch.uint8": "uint8"}


# -- sequence / context parallelism -----------------------------------------------------------------------------

#: accelerate ParallelismConfig fields (an accelerate config file spells them with a `parallelism_config_` prefix)
PARALLELISM_KEYS = frozenset({
    "dp_replicate_size", "dp_shard_size", "tp_size", "cp_size", "cp_backend", "sp_size", "sp_backend",
    "sp_seq_length", "sp_seq_length_is_variable", "sp_attn_implementation", "cp_comm_strategy", "tp_handler",
    "cp_handler", "sp_handler",
})


def map_parallelism_config(out: Collector, pc: dict[str, Any], prefix: str) -> None:
    """accelerate's ParallelismConfig (TrainingArguments.parallelism_config, or an accelerate config file's
    `parallelism_config` block): sp_size with sp_backend deepspeed (Ulysses) or cp_size with cp_backend torch
    (FSDP2 context parallelism) -> sequence_parallel_size; sp_attn_implementation -> attention; tensor
    parallelism is reported as not modelled; the data-parallel sizes follow from num_gpus."""
    norm = {str(k).removeprefix("parallelism_config_"): (f"{prefix}{k}", v) for k, v in pc.items()}
    out.check_keys({k: v for k, (_, v) in norm.items()}, PARALLELISM_KEYS, prefix)
    sizes = {}
    for key in ("sp_size", "cp_size", "tp_size"):
        if key in norm and norm[key][1] is not None:
            sizes[key] = out.int_(norm[key][0], norm[key][1])
    if sizes.get("tp_size", 1) > 1:
        out.ignore(norm["tp_size"][0], f"{NOT_MODELLED}: tensor parallelism in training")
    sp, cp = sizes.get("sp_size", 1), sizes.get("cp_size", 1)
    if sp > 1 and cp > 1:
        raise out.error(norm["sp_size"][0], "sp_size and cp_size cannot both be above 1 (memplan models one "
                                            "sequence-parallel scheme per job)")
    # (size key, backend key, the one backend memplan models, the engine it runs under)
    for size_key, backend_key, backend_name, engine, size in (
            ("sp_size", "sp_backend", "deepspeed", "deepspeed", sp), ("cp_size", "cp_backend", "torch", "fsdp", cp)):
        if size <= 1:
            continue
        src, backend = norm.get(backend_key, (f"{prefix}{backend_key}", backend_name))
        if str(backend).strip().lower() != backend_name:
            raise out.error(src, f"unknown {backend_key} {backend!r}; allowed: {backend_name}")
        out.set("sequence_parallel_size", size, norm[size_key][0], size)
        out.set_weak("parallelism", engine, f"{norm[size_key][0]} (runs under parallelism {engine})")
    if "sp_attn_implementation" in norm and norm["sp_attn_implementation"][1] is not None:
        map_attention(out, *norm["sp_attn_implementation"])


# -- FSDP ------------------------------------------------------------------------------------------------------

# accelerate.utils.constants.FSDP_SHARDING_STRATEGY, in torch ShardingStrategy order (1-based ints)
FSDP_SHARDING = ["FULL_SHARD", "SHARD_GRAD_OP", "NO_SHARD", "HYBRID_SHARD", "HYBRID_SHARD_ZERO2"]
FSDP_STAGE = {"FULL_SHARD": 3, "SHARD_GRAD_OP": 2, "NO_SHARD": 0, "HYBRID_SHARD": 3, "HYBRID_SHARD_ZERO2": 2}
FSDP_CONFIG_KEYS = frozenset({
    # accelerate FullyShardedDataParallelPlugin / `accelerate config` (with the fsdp_ prefix stripped) and
    # transformers TrainingArguments.fsdp_config (which strips the prefix the same way)
    "version", "sharding_strategy", "reshard_after_forward", "offload_params", "cpu_offload",
    "activation_checkpointing", "auto_wrap_policy", "transformer_layer_cls_to_wrap", "min_num_params",
    "backward_prefetch", "backward_prefetch_policy", "forward_prefetch", "state_dict_type", "use_orig_params",
    "cpu_ram_efficient_loading", "sync_module_states", "limit_all_gathers", "ignored_modules", "mixed_precision_policy",
    "xla", "xla_fsdp_v2", "xla_fsdp_grad_ckpt", "xla_fsdp_settings", "final_state_dict_type", "cp_size",
})


def fsdp_strategy_stage(out: Collector, source: str, value: Any) -> int:
    """A sharding strategy as accelerate's FullyShardedDataParallelPlugin reads it -> zero_stage:
    FULL_SHARD / 1 -> 3, SHARD_GRAD_OP / 2 -> 2, NO_SHARD / 3 -> 0, HYBRID_SHARD / 4 -> 3, HYBRID_SHARD_ZERO2 / 5 -> 2
    (ints are torch.distributed.fsdp.ShardingStrategy values); FSDP2's boolean reshard_after_forward: true -> 3
    (parameters freed after forward, like FULL_SHARD), false -> 2 (kept, like SHARD_GRAD_OP)."""
    if isinstance(value, bool) or (isinstance(value, str) and value.strip().lower() in ("true", "false")):
        return 3 if out.bool_(source, value) else 2
    name = str(value).strip().upper().lstrip("_")
    if name.isdigit() and 1 <= int(name) <= len(FSDP_SHARDING):
        name = FSDP_SHARDING[int(name) - 1]
    if name not in FSDP_STAGE:
        raise out.error(source, f"unknown FSDP sharding strategy {value!r}; allowed: {', '.join(FSDP_SHARDING)} "
                                "(or 1-5), or true/false for FSDP2 reshard_after_forward")
    if name.startswith("HYBRID"):
        out.ignore(source, f"{name} shards within each node only: estimated as zero_stage {FSDP_STAGE[name]} across "
                           f"all num_gpus ({NOT_MODELLED}: per-node sharding)")
    return FSDP_STAGE[name]


def map_fsdp(out: Collector, cfg: dict, prefix: str, options: list[str] | None = None,
             options_src: str = "fsdp") -> None:
    """FSDP settings -> parallelism fsdp, fsdp_version, zero_stage, offload_params, gradient_checkpointing.

    Follows accelerate's FullyShardedDataParallelPlugin (and transformers TrainingArguments `fsdp` /
    `fsdp_config`, which feeds it): keys may carry the `fsdp_` prefix (stripped as transformers does); the strategy
    comes from `sharding_strategy` or `reshard_after_forward` (FSDP1: a strategy name; FSDP2: a bool) or from the
    legacy option list (`full_shard`, `shard_grad_op`, `hybrid_shard`, `offload`, `auto_wrap`), defaulting to
    FULL_SHARD (-> zero_stage 3). `version` (`fsdp_version`) picks FSDP1 or FSDP2 (accelerate's default: 1). CPU
    offload (`offload_params`, `cpu_offload`, option `offload`) moves the sharded parameters, gradients and the
    optimizer step to the CPU: offload_params under parallelism fsdp (not with NO_SHARD).
    `activation_checkpointing` -> gradient_checkpointing.
    """
    norm: dict[str, tuple[str, Any]] = {}
    for key, value in cfg.items():
        name = key[5:] if key.startswith("fsdp_") else key
        norm[name] = (f"{prefix}{key}", value)
    out.check_keys(cfg, FSDP_CONFIG_KEYS | {f"fsdp_{k}" for k in FSDP_CONFIG_KEYS}, prefix)
    stage: int | None = None
    stage_src = ""
    offload: bool | None = None
    offload_src = ""
    for item in options or []:
        opt = str(item).strip().lower()
        if opt.upper() in FSDP_STAGE:
            stage, stage_src = fsdp_strategy_stage(out, f"{options_src}: {opt}", opt), f"{options_src}: {opt}"
        elif opt == "offload":
            offload, offload_src = True, f"{options_src}: offload"
        elif opt != "auto_wrap":
            out.ignore(f"{options_src}: {opt}", "unknown FSDP option (transformers FSDPOption: full_shard, "
                                                "shard_grad_op, no_shard, hybrid_shard, hybrid_shard_zero2, offload, "
                                                "auto_wrap)")
    for key in ("sharding_strategy", "reshard_after_forward"):
        if key in norm and norm[key][1] is not None and stage is None:
            src, value = norm[key]
            stage, stage_src = fsdp_strategy_stage(out, src, value), src
    if stage is None:
        stage, stage_src = 3, f"{prefix}sharding_strategy (default FULL_SHARD)"
    out.set("parallelism", "fsdp", stage_src)
    version_src, version = norm.get("version", (f"{prefix}fsdp_version (accelerate's default 1)", 1))
    if version is not None:
        if str(version).strip() not in ("1", "2"):
            raise out.error(version_src, f"fsdp_version must be 1 or 2, got {version!r}")
        out.set("fsdp_version", int(str(version).strip()), version_src)
    out.set("zero_stage", stage, stage_src)
    for key in ("offload_params", "cpu_offload"):
        if key in norm and norm[key][1] is not None:
            src, value = norm[key]
            flag = out.bool_(src, value)
            if offload is None or flag:
                offload, offload_src = flag, src
    if offload is not None:
        if not offload or stage:
            out.set("offload_params", bool(offload), offload_src)
        else:
            out.ignore(offload_src, f"{NOT_MODELLED}: CPU offload without sharding (NO_SHARD)")
    if "activation_checkpointing" in norm and norm["activation_checkpointing"][1] is not None:
        src, value = norm["activation_checkpointing"]
        out.set("gradient_checkpointing", out.bool_(src, value), src)
    if "mixed_precision_policy" in norm and norm["mixed_precision_policy"][1] is not None:
        src, policy = norm["mixed_precision_policy"]
        policy = out.dict_(src, policy) if not isinstance(policy, str) else {}
        for key, value in policy.items():
            name = str(value).strip().lower()
            if key == "reduce_dtype" and name in TORCH_DTYPES:
                out.set("fsdp_reduce_dtype", TORCH_DTYPES[name], f"{src}.reduce_dtype", value)
            else:
                out.ignore(f"{src}.{key}", f"{NOT_MODELLED}: FSDP mixed-precision {key} {value!r} (memplan takes "
                                           "param_dtype from mixed_precision; reduce_dtype: float32, bfloat16, "
                                           "float16)")
        if not policy:
            out.ignore(src, f"{NOT_MODELLED}: FSDP mixed-precision policy {norm['mixed_precision_policy'][1]!r}")
