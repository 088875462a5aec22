"""Import the configs people already keep (HF TrainingArguments / TRL SFTConfig, PEFT adapter_config.json,
DeepSpeed JSON, accelerate YAML, axolotl YAML, vLLM / SGLang server arguments or command lines, memplan's own job
spec) as one memplan job spec.

    result = import_configs(["sft.yaml", "ds_zero3.json"], base={"model": "meta-llama/Llama-3.1-8B"})
    spec = parse_spec(result.job)

Each file's format is detected from its content, or named with a `KIND:PATH` prefix (KIND one of
trainer|peft|deepspeed|accelerate|axolotl|memplan|vllm|sglang). Files combine: a later file fills the fields earlier ones left
unset; two sources that set one job field to different values are an error naming both. DeepSpeed "auto" values
are resolved from the trainer config, as the Hugging Face Trainer does. Fields that change memory but have no job
field are listed in `ignored` with the reason. Plain dict mapping: no transformers / deepspeed / accelerate import.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable

from memplan.importers import accelerate, axolotl, deepspeed, job, peft, serving, trainer
from memplan.importers._common import (
    KINDS, Assign, Collector, kinds_text, read_config_file, resolve_path,
)
from memplan.files import read_text
from memplan.spec import JobSpec, SpecError

__all__ = ["KINDS", "ImportResult", "detect_format", "import_configs"]

READERS: dict[str, Callable[[dict[str, Any], Collector], None]] = {
    "trainer": trainer.read, "peft": peft.read, "deepspeed": deepspeed.read, "accelerate": accelerate.read,
    "axolotl": axolotl.read, "memplan": job.read, "vllm": serving.read_vllm, "sglang": serving.read_sglang,
}


@dataclass
class ImportResult:
    job: dict  # a memplan job spec dict (only the fields the files set), ready for memplan.spec.parse_spec
    sources: list[str] = field(default_factory=list)  # "deepspeed:ds_z3.json" per file read
    mapped: list[tuple[str, str, str]] = field(default_factory=list)  # (file, source field, job field)
    ignored: list[tuple[str, str, str]] = field(default_factory=list)  # (file, source field, reason)


# -- format detection --------------------------------------------------------------------------------------------

DEEPSPEED_MARKERS = frozenset({"zero_optimization", "train_micro_batch_size_per_gpu", "train_batch_size",
                               "zero_allow_untested_optimizer", "zero_force_ds_cpu_optimizer", "steps_per_print",
                               "wall_clock_breakdown", "gradient_clipping"})
AXOLOTL_MARKERS = frozenset({
    "base_model", "sequence_len", "micro_batch_size", "adapter", "lora_target_linear", "datasets", "num_epochs",
    "val_set_size", "flash_attention", "sdp_attention", "xformers_attention", "sample_packing", "pad_to_sequence_len",
    "lora_model_dir", "base_model_config", "tokenizer_type", "dataset_prepared_path", "special_tokens",
    "wandb_project", "optimizer", "lr_scheduler", "train_on_inputs", "evals_per_epoch", "saves_per_epoch", "strict",
    "peft_use_dora", "bnb_config_kwargs", "early_stopping_patience", "eval_batch_size", "plugins", "chat_template",
})
# job spec fields no other format uses (a spec with a typo'd field is still recognised, then refused by name)
MEMPLAN_MARKERS = frozenset({
    "model", "model_config", "task", "head", "num_labels", "method", "weight_dtype", "double_quant", "optimizer_impl",
    "lora", "num_virtual_tokens", "adapter_size", "seq_len", "attention", "num_gpus", "zero_stage", "offload_optimizer",
    "offload_params", "inference", "gpu", "quant_storage",
})
TRAINER_MARKERS = frozenset({
    "per_device_train_batch_size", "per_gpu_train_batch_size", "optim", "num_train_epochs", "lr_scheduler_type",
    "max_seq_length", "max_length", "model_name_or_path", "dataset_text_field", "use_peft", "model_init_kwargs",
    "per_device_eval_batch_size", "eval_strategy", "evaluation_strategy", "save_strategy", "logging_strategy",
    "packing", "report_to", "dataset_name", "torch_dtype", "dtype", "attn_implementation", "overwrite_output_dir",
    "do_train", "hub_token", "push_to_hub", "fsdp_min_num_params", "ddp_timeout", "skip_memory_metrics",
    "use_bnb_nested_quant", "activation_checkpointing",
})


def detect_format(path: str, data: dict) -> str:
    """The kind of config `data` (read from `path`) is: trainer | peft | deepspeed | accelerate | axolotl | memplan.

    From the content: `peft_type` (or r + lora_alpha / target_modules) -> peft; `distributed_type` /
    `compute_environment` -> accelerate; `zero_optimization`, `train_micro_batch_size_per_gpu`, an fp16/bf16 section
    -> deepspeed; only job spec fields -> memplan; else the kind with the most of its distinctive fields among
    axolotl (base_model, sequence_len, micro_batch_size, adapter ...), trainer (per_device_train_batch_size, optim,
    max_length, model_name_or_path ...) and memplan (model, seq_len, method, zero_stage ...). Undecidable ->
    SpecError naming the file and the KIND:PATH escape hatch."""
    if not isinstance(data, dict):
        raise SpecError([(path, f"holds a {type(data).__name__}, not a mapping of config fields")])
    keys = set(data)
    engine = serving.detect(data)
    if engine is not None:
        return engine
    if "peft_type" in keys or os.path.basename(path) == "adapter_config.json" or {"r", "lora_alpha"} <= keys \
            or {"r", "target_modules"} <= keys:
        return "peft"
    if keys & {"distributed_type", "compute_environment"}:
        return "accelerate"
    if keys & DEEPSPEED_MARKERS or any(isinstance(data.get(k), dict) for k in ("fp16", "bf16", "bfloat16")):
        return "deepspeed"
    if keys <= set(job.field_names(JobSpec)):
        return "memplan"
    scores = {"axolotl": len(keys & AXOLOTL_MARKERS), "trainer": len(keys & TRAINER_MARKERS),
              "memplan": len(keys & MEMPLAN_MARKERS)}
    best = max(scores.values())
    winners = [kind for kind, score in scores.items() if score == best]
    if best and len(winners) == 1:
        return winners[0]
    if keys and keys <= trainer.NO_EFFECT | trainer.HANDLED:  # only fields both know (output_dir, deepspeed ...)
        return "trainer"
    raise SpecError([(path, "cannot tell which kind of config this is (none of the HF TrainingArguments / TRL, PEFT, "
                            "DeepSpeed, accelerate, axolotl or memplan job spec fields decide it); name it as "
                            f"KIND:{path} with KIND one of {kinds_text()}")])


# -- combining ---------------------------------------------------------------------------------------------------

# TrainingArguments defaults the HF Trainer fills DeepSpeed "auto" values with when the trainer config leaves the
# field out (transformers training_args.py: per_device_train_batch_size=8, gradient_accumulation_steps=1)
TRAINER_DEFAULTS = {"micro_batch_size": ("per_device_train_batch_size", 8),
                    "gradient_accumulation_steps": ("gradient_accumulation_steps", 1)}


def _split_kind(arg: str) -> tuple[str | None, str]:
    kind, sep, rest = str(arg).partition(":")
    if sep and kind in KINDS:
        return kind, rest
    if sep and kind.isalpha() and len(kind) > 1 and not os.path.exists(arg):
        raise SpecError([(arg, f"unknown kind {kind!r}; allowed kinds: {kinds_text()} (as KIND:PATH)")])
    return None, str(arg)


def _same(job_field: str, a: Any, b: Any) -> bool:
    if job_field == "lora.target_modules" and isinstance(a, list) and isinstance(b, list):
        return sorted(a) == sorted(b)
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return a == b


def _show(a: Assign) -> str:
    shown = f"{a.source}={a.raw!r}" if a.raw is not None else a.source
    job_side = "" if a.raw == a.value and a.source == a.field else f" ({a.field} {a.value!r})"
    return f"{a.file}: {shown}{job_side}"


def _conflict(prev: Assign, new: Assign) -> SpecError:
    return SpecError([(new.field, f"conflicting values: {_show(prev)} vs {_show(new)}; make the files agree or drop "
                                  "one of the settings")])


class _Importer:
    def __init__(self) -> None:
        self.collectors: list[Collector] = []
        self.seen: set[str] = set()
        self.base: Collector | None = None
        self.missing: list[tuple[Collector, str, str, str]] = []  # (referrer, source field, target, kind)

    def run_reader(self, kind: str, data: dict[str, Any], out: Collector) -> None:
        try:
            READERS[kind](data, out)
        except SpecError:
            raise
        except (TypeError, ValueError, AttributeError, KeyError) as exc:  # malformed sections: still a clean error
            raise SpecError([(out.file, f"cannot read it as {kind} config: {exc}")]) from None
        self.collectors.append(out)
        for ref_kind, target, source in out.refs:
            if isinstance(target, dict):
                self.run_reader(ref_kind, target, Collector(f"{out.file}#{source}", ref_kind, out.base_dir))
                continue
            path = resolve_path(target, out.base_dir)
            if os.path.exists(path):
                self.load(path, ref_kind)
            else:  # fine if the same kind of file is given explicitly (a dump whose path no longer resolves)
                self.missing.append((out, source, str(target), ref_kind))

    def check_missing(self) -> None:
        for out, source, target, kind in self.missing:
            given = [c.file for c in self.collectors if c.kind == kind]
            if not given:
                raise SpecError([(f"{out.file}: {source}", f"references {target!r}, which does not exist (looked in "
                                                           f"the working directory and beside {out.file}); fix the "
                                                           f"path or give the {kind} config as another file")])
            out.ignore(source, f"{target!r} not found; the {kind} config given as {', '.join(given)} is used")

    def load(self, path: str, kind: str | None) -> None:
        data = read_config_or_command(path)
        real = os.path.realpath(path)
        if real in self.seen:  # given twice, or given and referenced: read once
            return
        self.seen.add(real)
        if kind is None:
            kind = detect_format(path, data)
        self.run_reader(kind, data, Collector(path, kind, os.path.dirname(path) or "."))


def read_config_or_command(path: str) -> dict[str, Any]:
    """A config file's mapping, or the arguments of a serving command line (`vllm serve ...`, `python -m
    sglang.launch_server ...`) kept in a text file that is not JSON or YAML by name."""
    if not os.path.isdir(path) and not path.lower().endswith((".json", ".yaml", ".yml")):
        command = serving.parse_command(read_text(path), path)
        if command is not None:
            return command
    return read_config_file(path)


def import_configs(paths: list[str], base: dict | None = None) -> ImportResult:
    """Read each config (format detected, or named as KIND:PATH; files a config references, such as the trainer's
    `deepspeed` path, are read too) and combine them into one job spec dict.

    `base` (a memplan job spec dict, e.g. the model id from the command line) is the first source. A later source
    fills the fields earlier ones left unset; the same field set to two different values raises SpecError naming
    both files, both source fields and both values. DeepSpeed "auto" values take the value the job gets from the
    other sources (the trainer config), else the TrainingArguments default when a trainer config is given (as the
    HF Trainer fills them), else stay unset and are listed in `ignored`. A LoRA method over 4-bit base weights
    (PEFT LoRA + a trainer's load_in_4bit) becomes qlora.
    """
    if isinstance(paths, str):
        paths = [paths]
    imp = _Importer()
    if isinstance(base, JobSpec):
        base = base.model_dump(by_alias=True, exclude_unset=True)
    if base is not None:
        if not isinstance(base, dict):
            raise SpecError([("base", f"a job spec must be a mapping of fields, got {type(base).__name__}")])
        imp.base = Collector("base", "memplan")
        imp.run_reader("memplan", base, imp.base)
    for arg in paths:
        kind, path = _split_kind(arg)
        imp.load(path, kind)
    imp.check_missing()

    flat: dict[str, Assign] = {}
    mapped: list[tuple[str, str, str]] = []
    ignored: list[tuple[str, str, str]] = []
    for col in imp.collectors:
        for a in col.assigns:
            prev = flat.get(a.field)
            if prev is None:
                flat[a.field] = a
            elif not _same(a.field, prev.value, a.value):
                if a.field == "method" and {prev.value, a.value} == {"lora", "qlora"}:
                    flat[a.field] = a if a.value == "qlora" else prev  # LoRA config + a QLoRA recipe agree
                else:
                    raise _conflict(prev, a)
            mapped.append((a.file, a.source, a.field))
        ignored.extend((col.file, src, reason) for src, reason in col.ignored)
    for col in imp.collectors:
        for a in col.weak:
            prev = flat.get(a.field)
            if prev is None:
                flat[a.field] = a
                mapped.append((a.file, a.source, a.field))
            elif not _same(a.field, prev.value, a.value):
                ignored.append((a.file, a.source, f"{a.value!r} not used: {prev.file} {prev.source} gives "
                                                  f"{a.field} {prev.value!r}"))
    has_trainer = any(c.kind == "trainer" for c in imp.collectors)
    for col in imp.collectors:
        for job_field, src in col.autos:
            if job_field in flat:
                mapped.append((col.file, f"{src} (auto)", job_field))
            elif has_trainer and job_field in TRAINER_DEFAULTS:
                name, value = TRAINER_DEFAULTS[job_field]
                label = f"{src} (auto: TrainingArguments default {name}={value})"
                flat[job_field] = Assign(job_field, value, col.file, label, "auto")
                mapped.append((col.file, label, job_field))
            elif has_trainer and job_field == "mixed_precision":
                ignored.append((col.file, src, "auto: the trainer config sets neither bf16 nor fp16 (TrainingArguments "
                                               "default: fp32; TRL SFTConfig: bf16); left to the job default"))
            else:
                ignored.append((col.file, src, "auto: filled by the HF Trainer from its arguments; no trainer config "
                                               "gives it, left to the job default"))
    if "model" in flat and "model_config" in flat:  # the job takes exactly one of them
        raise _conflict(flat["model"], flat["model_config"])
    method, wdtype = flat.get("method"), flat.get("weight_dtype")
    if method is not None and method.value == "lora" and wdtype is not None and wdtype.value in ("nf4", "fp4"):
        flat["method"] = Assign("method", "qlora", wdtype.file, f"{wdtype.source} (LoRA over 4-bit weights = QLoRA)")
        mapped.append((wdtype.file, flat["method"].source, "method"))

    order = {name: i for i, name in enumerate(job.field_names(JobSpec))}
    result: dict[str, Any] = {}
    for name in sorted(flat, key=lambda f: (order.get(f.split(".")[0], len(order)), f)):
        value = flat[name].value
        if "." in name:
            parent, child = name.split(".", 1)
            result.setdefault(parent, {})[child] = value
        else:
            result[name] = value
    sources = [f"{c.kind}:{c.file}" for c in imp.collectors if c is not imp.base]
    return ImportResult(job=result, sources=sources, mapped=mapped, ignored=ignored)
