"""The `memplan` command: parse the job, call the library, print. No formulas here.

Exit codes: 0 success (check: fits), 1 check: does not fit, 2 bad input (a message naming the field).
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from memplan.files import parse_text, read_mapping
from memplan.result import VERDICT_LABELS
from memplan.spec import InferenceSpec, LoraSpec, ServingSpec, SpecError, printable
from memplan.terms.dtypes import GIB


# flags that override job fields: flag name -> dotted field path (generated from the spec's field names)
_SCALAR_FIELDS = [
    "model", "task", "head", "num_labels", "method", "weight_dtype", "mixed_precision", "double_quant", "quant_storage",
    "optimizer",
    "optimizer_impl", "num_virtual_tokens", "adapter_size", "micro_batch_size", "seq_len",
    "gradient_accumulation_steps", "gradient_checkpointing", "attention", "num_gpus", "zero_stage",
    "offload_optimizer", "offload_params", "allocator", "parallelism", "fsdp_version", "fsdp_reduce_dtype",
    "sequence_parallel_size",
    "zero3_prefetch_bucket_size", "zero3_max_live_parameters", "zero3_init",
]
#: every field of the nested blocks, as --lora-r, --inference-num-beams, --serving-max-model-len ...
_NESTED_FIELDS = [f"{block}.{name}" for block, model in (("lora", LoraSpec), ("inference", InferenceSpec),
                                                          ("serving", ServingSpec)) for name in model.model_fields]


class UsageError(Exception):
    pass


def _flag(path: str) -> str:
    return "--" + path.replace(".", "-").replace("_", "-")


def _add_job_args(p: argparse.ArgumentParser) -> None:
    from memplan.importers import KINDS

    p.add_argument("job", nargs="?", help="job spec file (YAML or JSON), a catalog model id, or another tool's "
                                          "config (read as --from)")
    p.add_argument("--from", dest="from_files", action="append", default=None, metavar="FILE",
                   help="a trainer config, combined with the other --from files into one job (repeatable): HF "
                        "TrainingArguments / TRL SFTConfig, PEFT adapter_config.json, DeepSpeed JSON, accelerate "
                        f"or axolotl YAML; KIND:FILE names its kind ({'|'.join(KINDS)})")
    grp = p.add_argument_group("job fields (override the file)")
    for path in _SCALAR_FIELDS + _NESTED_FIELDS:
        grp.add_argument(_flag(path), dest="set_" + path.replace(".", "__"), metavar="VALUE", default=None)
    grp.add_argument("--gpu", default=None, help="catalog GPU id (see `memplan gpus`)")
    grp.add_argument("--gpu-memory-gib", type=float, default=None, help="a GPU given by its memory in GiB")


#: fields whose values are names: passed as typed (YAML would read `--mixed-precision no` as false)
_NAME_FIELDS = {"model", "task", "head", "method", "weight_dtype", "mixed_precision", "optimizer", "optimizer_impl",
                "attention", "inference.kv_cache_dtype", "allocator", "parallelism", "serving.engine",
                "serving.kv_cache_dtype", "inference.cache_implementation"}


def _parse_value(path: str, raw: str) -> Any:
    if path == "lora.target_modules":
        return raw if raw == "all-linear" else [x.strip() for x in raw.split(",") if x.strip()]
    if path in _NAME_FIELDS:
        return raw
    try:
        return parse_text(raw, _flag(path))
    except SpecError:
        return raw


def load_job(args: argparse.Namespace) -> dict[str, Any]:
    """The job dict from the file (or model id) plus flag overrides."""
    job: dict[str, Any] = {}
    if args.job:
        path = Path(args.job)
        if path.is_file() and path.suffix.lower() in (".yaml", ".yml", ".json"):
            job = read_mapping(path, "job fields")
            if isinstance(job.get("model"), str) and job["model"].endswith(".json"):
                model_path = (path.parent / job["model"])  # config paths are relative to the job file
                if model_path.is_file():
                    job["model"] = str(model_path)
        elif path.suffix.lower() in (".yaml", ".yml"):
            raise UsageError(f"job file not found: {args.job}")
        else:
            job = {"model": args.job}
    _apply_overrides(job, args)
    if "model" not in job and "model_config" not in job:
        raise UsageError("model: required (a job file, a catalog id as JOB, or --model); "
                         "list catalog ids with `memplan models`")
    return job


def _gib(n: int) -> str:
    return f"{n / GIB:.2f} GiB"


def _verdict_line(e: Any) -> str:
    """FITS / BORDERLINE / DOES NOT FIT, with the headroom of the point estimate and where the range ends."""
    from memplan.result import capacity_bytes

    usable = capacity_bytes(e)
    if e.verdict == "fits":
        detail = f"headroom {_gib(e.headroom_bytes)} (at the range's high end: {_gib(usable - e.range.high_bytes)})"
    elif e.verdict == "does_not_fit":
        detail = (f"short by {_gib(-e.headroom_bytes)} (at the range's low end: "
                  f"{_gib(e.range.low_bytes - usable)})")
    else:
        detail = (f"the {_gib(usable)} usable lie inside the range: headroom {_gib(e.headroom_bytes)} at the "
                  f"estimate, {_gib(usable - e.range.high_bytes)} at the range's high end")
    return f"{VERDICT_LABELS[e.verdict]}: {detail}"


def format_serving(e: Any) -> str:
    """A serve estimate as the engine's startup log reports its budget, per GPU."""
    s = e.serving
    engine = {"vllm": "vLLM", "sglang": "SGLang"}.get(s.engine, s.engine)
    lines = [f"{e.model.id} ({e.model.model_type}, {e.params.total:,} params) served by {engine} {s.engine_version}, "
             f"tensor parallel {s.tensor_parallel_size}",
             f"GPU {e.gpu.id}: {_gib(e.gpu.memory_bytes)} ({_gib(e.gpu.usable_bytes)} usable); requested "
             f"{s.gpu_memory_utilization:g} of it: {_gib(s.requested_bytes)} per GPU", "",
             f"Model loading took           {_gib(s.weights_bytes)}" + (f"   (LoRA slots {_gib(s.lora_bytes)})"
                                                                       if s.lora_bytes else ""),
             f"profile run peak             {_gib(s.activation_bytes)}   (max_num_batched_tokens "
             f"{s.max_num_batched_tokens:,}, max_num_seqs {s.max_num_seqs:,})",
             f"memory outside torch         {_gib(s.non_torch_bytes)}",
             f"CUDA graphs                  {_gib(s.cuda_graph_bytes)}   ("
             + ("taken from the KV budget)" if s.cuda_graph_in_budget else "on top of the requested share)"),
             f"Available KV cache memory:   {_gib(s.kv_cache_bytes)}",
             f"GPU KV cache size: {s.kv_cache_tokens:,} tokens ({s.kv_bytes_per_token:,} B per token, blocks of "
             f"{s.block_size})",
             f"Maximum concurrency for {s.max_model_len:,} tokens per request: {s.max_concurrency:.2f}x",
             f"largest max_model_len that fits: {s.largest_max_model_len:,} tokens"]
    if s.lora_bytes:
        lines.append(f"each LoRA slot costs {s.kv_tokens_per_lora_slot:,} KV tokens")
    lines += [f"on the GPU while serving (nvidia-smi): {_gib(e.peak_bytes)}",
              f"needed to serve one {s.max_model_len:,}-token request: {_gib(s.required_bytes)} of the "
              f"{_gib(s.requested_bytes)} requested (range {e.range.low_bytes / GIB:.2f} to "
              f"{e.range.high_bytes / GIB:.2f} GiB with the memory held before)",
              _verdict_line(e), "", "assumptions:"]
    lines += [f"  - {a}" for a in e.assumptions]
    return "\n".join(lines)


def format_estimate(e: Any) -> str:
    if e.serving is not None:
        return format_serving(e)
    lines = [f"{e.model.id} ({e.model.model_type}, {e.params.total:,} params, {e.params.trainable:,} trainable)",
             f"GPU {e.gpu.id}: {_gib(e.gpu.memory_bytes)} ({_gib(e.gpu.usable_bytes)} usable)", ""]
    width = max(len(k) for k in e.components)
    lines.append(f"{'term'.ljust(width)}  {'GiB':>9}")
    for name, value in sorted(e.components.items(), key=lambda kv: -kv[1]):
        if value:
            lines.append(f"{name.ljust(width)}  {value / GIB:9.2f}")
    lines += ["", f"peak allocated  {_gib(e.peak_allocated_bytes)}   (torch.cuda.max_memory_allocated)",
              f"peak reserved   {_gib(e.peak_reserved_bytes)}   (torch.cuda.max_memory_reserved)",
              f"peak on GPU     {_gib(e.peak_bytes)}   (nvidia-smi; range {e.range.low_bytes / GIB:.2f}"
              f" to {e.range.high_bytes / GIB:.2f} GiB), set by the {e.peak_phase} phase",
              f"phases (allocated): " + ", ".join(f"{k} {v / GIB:.2f}" for k, v in e.phases.items()),
              _verdict_line(e)]
    if e.host_bytes:
        flag = (f"; more than the largest common {e.gpu.id} node has, {_gib(e.gpu.node_host_memory_bytes)}"
                if e.host_memory_plausible is False else "")
        lines.append(f"host memory   {_gib(e.host_bytes)} per node (CPU RAM beside the GPUs{flag})")
    lines += ["", "assumptions:"]
    lines += [f"  - {a}" for a in e.assumptions]
    return "\n".join(lines)


def _cmd_estimate(args: argparse.Namespace) -> int:
    from memplan.estimate import estimate

    progress = None
    if args.engine == "trace" and sys.stderr.isatty():
        def progress(message: str) -> None:
            print(f"\rmemplan: tracing: {message}\x1b[K", end="", file=sys.stderr, flush=True)
    e = estimate(job_from_args(args), engine=args.engine, allow_path=True, progress=progress)
    if progress is not None:
        print("\r\x1b[K", end="", file=sys.stderr, flush=True)
    print(json.dumps(e.model_dump(mode="json"), indent=2) if args.json else format_estimate(e))
    return 0


CHECK_USAGE = """memplan check [JOB ...] [--from FILE ...] [--model ID] [--gpu ID] [--margin PCT] [--accept-borderline]
              [--format text|json|junit|github] [--summary PATH]  (+ the job field flags below)"""


def _cmd_check(args: argparse.Namespace) -> int:
    from memplan.report import exit_code, markdown_summary, render

    margin = args.margin
    if not 0 <= margin < 100:  # one margin for the whole run: a usage error, before any job is checked
        raise SpecError([("--margin", f"must be a percentage in [0, 100), got {margin:g}")])
    job_args = list(args.job or [])
    from_args = list(args.from_files or [])
    if not job_args and not from_args and args.set_model is None:
        raise UsageError("no job to check: give JOB (job spec files or catalog model ids), --from FILE "
                         "(trainer / PEFT / DeepSpeed / accelerate / axolotl configs) or --model ID")
    if args.json and len(job_args) > 1:
        raise UsageError("--json: prints one job (its estimate JSON with a \"check\" object); for several jobs use "
                         "--format json")
    if not job_args:
        job_args = [None]  # one job from --from and/or the field flags alone
    jobs = [_checked_job(args, arg, from_args, margin) for arg in job_args]
    code = exit_code(jobs)
    if args.json:  # the one-job shape `memplan check --json` has always printed
        j = jobs[0]
        if j.result is None:
            for line in (j.error or "").splitlines():
                print(f"memplan: error: {line}", file=sys.stderr)
        else:
            e = j.result.estimate.model_dump(mode="json")
            print(json.dumps({**e, "check": {"fits": j.result.fits, "verdict": j.result.verdict,
                                             "passed": j.result.passed, "margin_pct": j.result.margin_pct,
                                             "required_bytes": j.result.required_bytes}}, indent=2))
        for file, src, reason in j.ignored:
            print(f"memplan: ignored {src} ({file}): {reason}", file=sys.stderr)
    else:
        sys.stdout.write(render(jobs, args.format or "text"))
    sys.stdout.flush()
    if args.summary:
        try:
            _append_summary(Path(args.summary), markdown_summary(jobs))
        except OSError as exc:
            print(f"memplan: error: --summary: cannot write {args.summary}: {exc.strerror or exc}", file=sys.stderr)
            return 2
    return code


def _append_summary(path: Path, text: str) -> None:
    """Append `text` to `path` (created if missing), a blank line after what the file already holds."""
    try:
        existing = path.read_text(encoding="utf-8") if path.is_file() else ""
    except UnicodeDecodeError:
        existing = "x"
    sep = "" if not existing or existing.endswith("\n\n") else ("\n" if existing.endswith("\n") else "\n\n")
    with path.open("a", encoding="utf-8") as fh:
        fh.write(sep + text)


def _is_job_file(arg: str) -> bool:
    """What load_job reads as a job spec file (else the argument is a catalog model id or a missing file)."""
    path = Path(arg)
    return path.is_file() and path.suffix.lower() in (".yaml", ".yml", ".json")


def _foreign_kind(arg: str | None) -> str | None:
    """The kind (trainer, peft, deepspeed, accelerate, axolotl) of a JOB file that is another tool's config rather
    than a memplan job spec, recognised by its keys (memplan.importers.detect_format); None for a job spec, a
    catalog id, or a file load_job reports on."""
    if arg is None or not _is_job_file(arg):
        return None
    from memplan.importers import detect_format

    try:
        data = read_mapping(arg)
        kind = detect_format(arg, data)
    except SpecError:
        return None
    return None if kind == "memplan" else kind


def _sources(arg: str | None, from_args: list[str]) -> tuple[str | None, list[str]]:
    """(JOB, --from files) with a JOB that is another tool's config moved to the front of the --from files."""
    kind = _foreign_kind(arg)
    if kind is None:
        return arg, from_args
    return None, [f"{kind}:{arg}", *from_args]


def job_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The one job of `estimate` / `plan`: JOB (a job spec, a catalog id, or another tool's config) with the
    --from configs and the flags; fields an imported config sets that memplan does not use are listed on stderr."""
    arg, from_args = _sources(args.job, list(getattr(args, "from_files", None) or []))
    if not from_args:
        return load_job(args)
    job, result = _imported_job(args, arg, from_args)
    for file, src, reason in result.ignored:
        print(f"memplan: ignored {src} ({file}): {reason}", file=sys.stderr)
    return job


def _strip_kind(arg: str) -> str:
    from memplan.importers import KINDS

    kind, sep, rest = arg.partition(":")
    return rest if sep and kind in KINDS else arg


def _error_text(exc: Exception) -> str:
    if isinstance(exc, SpecError):
        return "\n".join(f"{'--margin' if loc == 'margin_pct' else loc}: {msg}" if loc else msg
                         for loc, msg in exc.errors)
    return str(exc)


def _apply_overrides(job: dict[str, Any], args: argparse.Namespace) -> None:
    """The field flags (--seq-len, --lora-r, ..., --model, --gpu, --gpu-memory-gib) over `job`."""
    for key, value in vars(args).items():
        if not key.startswith("set_") or value is None:
            continue
        dotted = key[4:].replace("__", ".")
        target = job
        *parents, leaf = dotted.split(".")
        for part in parents:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise UsageError(f"{part}: must be a mapping to set {dotted}")
        target[leaf] = _parse_value(dotted, value)
    if args.gpu is not None:
        job["gpu"] = args.gpu
    if args.gpu_memory_gib is not None:
        job["gpu"] = {"memory_gib": args.gpu_memory_gib}


def _imported_job(args: argparse.Namespace, arg: str | None, from_args: list[str]) -> tuple[dict[str, Any], Any]:
    """The job from the --from configs, with the JOB file (if any) as the first source, then the flags over it."""
    from memplan.importers import import_configs

    paths, model_id = [], None
    if arg is not None:
        if _is_job_file(arg):
            paths.append(f"memplan:{arg}")  # the base: read first, so that a conflict names this file
        elif Path(arg).suffix.lower() in (".yaml", ".yml"):
            raise UsageError(f"job file not found: {arg}")
        else:
            model_id = arg  # a catalog model id given as JOB sets the model, as --model does
    result = import_configs(paths + from_args)
    job = result.job
    model = job.get("model")
    if arg is not None and model_id is None and isinstance(model, str) and model.endswith(".json"):
        model_path = Path(arg).parent / model  # as in load_job: config paths are relative to the job file
        if model_path.is_file() and any(f == arg and fld == "model" for f, _, fld in result.mapped):
            job["model"] = str(model_path)
    if model_id is not None:
        job["model"] = model_id
    _apply_overrides(job, args)
    if "model" not in job and "model_config" not in job:
        read = ", ".join(result.sources)
        raise UsageError(f"model: required: none of the configs ({read}) names the model; give --model ID (a catalog "
                         "id or a config.json path; `memplan models` lists the catalog)")
    return job, result


def _checked_job(args: argparse.Namespace, arg: str | None, from_args: list[str], margin: float) -> Any:
    """One job of the run, checked; bad input becomes the job's `error` (the other jobs are still checked)."""
    from memplan.check import check
    from memplan.report import CheckedJob

    name_arg = arg
    arg, from_args = _sources(arg, from_args)
    if from_args:
        plain = [_strip_kind(f) for f in from_args]
        name = name_arg if name_arg is not None else "+".join(plain)
        files = ([arg] if arg is not None and _is_job_file(arg) else []) + plain
    else:
        name = arg if arg is not None else str(args.set_model)
        files = [arg] if arg is not None and _is_job_file(arg) else []
    ignored: list[tuple[str, str, str]] = []
    try:
        if from_args:
            job, imported = _imported_job(args, arg, from_args)
            ignored = list(imported.ignored)
            read = [s.partition(":")[2] for s in imported.sources]  # referenced files (trainer -> deepspeed) too
            files = list(dict.fromkeys(files + [f for f in read if Path(f).exists()]))
        else:
            job = load_job(argparse.Namespace(**{**vars(args), "job": arg}))
        result = check(job, margin, allow_path=True, accept_borderline=args.accept_borderline)
    except (SpecError, UsageError) as exc:
        return CheckedJob(name=name, source_files=files, result=None, error=_error_text(exc) or "bad input",
                          ignored=ignored)
    return CheckedJob(name=name, source_files=files, result=result, error=None, ignored=ignored)


def format_plan(p: Any) -> str:
    """The plan for people: the baseline verdict, the ranked configurations, the changes and the solvers."""
    e = p.estimate
    if e.serving is not None:
        s = e.serving
        lines = [f"{e.model.id} on {e.gpu.id} x {s.tensor_parallel_size} ({s.engine}): serving one "
                 f"{s.max_model_len:,}-token request needs {_gib(s.required_bytes)} of the {_gib(s.requested_bytes)} "
                 f"the engine takes per GPU, {VERDICT_LABELS[e.verdict]}; KV cache {_gib(s.kv_cache_bytes)} = "
                 f"{s.kv_cache_tokens:,} tokens", ""]
    else:
        lines = [f"{e.model.id} on {e.gpu.id}: baseline peak {_gib(e.peak_bytes)}, "
                 f"{VERDICT_LABELS[e.verdict]} (headroom {_gib(e.headroom_bytes)}; range "
                 f"{e.range.low_bytes / GIB:.2f} to {e.range.high_bytes / GIB:.2f} GiB)", ""]
    if p.configurations and e.serving is not None:
        lines.append("configurations that fit (best first; concurrency = requests of max_model_len at once):")
        lines.append(f"  {'configuration':44s} {'GPUs':>5s} {'headroom GiB':>13s} {'concurrency':>12s}")
        for o in p.configurations:
            lines.append(f"  {o.label:44s} {o.num_gpus:5d} {o.headroom_bytes / GIB:13.2f} {o.micro_batch_size:12d}")
    elif p.configurations:
        lines.append("configurations that fit (best first):")
        lines.append(f"  {'configuration':44s} {'peak GiB':>9s} {'headroom':>9s} {'step s':>8s} {'tokens/s':>10s}")
        for o in p.configurations:
            step = "-" if o.step_time_s is None else f"{o.step_time_s:.2f}"
            tps = "-" if o.tokens_per_s is None else f"{o.tokens_per_s:,.0f}"
            lines.append(f"  {o.label:44s} {o.peak_bytes / GIB:9.2f} {o.headroom_bytes / GIB:9.2f} {step:>8s} "
                         f"{tps:>10s}")
    else:
        lines.append("no configuration in the search fits the target")
    if p.changes:
        lines += ["", "what to change (one change each, re-estimated):"]
        for c in p.changes:
            slow = "" if c.slowdown is None else f", time per token x{c.slowdown:.2f}"
            lines.append(f"  - {c.description} ({'fits' if c.fits else 'still does not fit'}{slow})")
    lines += ["", "solvers:"]
    def show(k: str, v: Any) -> str:
        if k.endswith("_bytes") and isinstance(v, int):
            return f"{k[:-6]} {v / GIB:.2f} GiB"
        return f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"

    for key, value in p.solvers.items():
        if isinstance(value, dict) and key == "serving":  # one line per solver of the serving plan
            for k, v in value.items():
                if isinstance(v, dict):
                    v = ", ".join(show(kk, vv) for kk, vv in v.items() if not isinstance(vv, (dict, list)))
                lines.append(f"  {k}: {v}")
            continue
        if isinstance(value, dict):
            value = ", ".join(show(k, v) for k, v in value.items() if not isinstance(v, (dict, list)))
        lines.append(f"  {key}: {value}")
    lines += ["", "assumptions:"] + [f"  - {a}" for a in p.assumptions]
    return "\n".join(lines)


def _cmd_plan(args: argparse.Namespace) -> int:
    from memplan.plan import plan

    target = {k: v for k, v in {"global_batch_size": args.global_batch, "gpu": args.target_gpu,
                                "num_gpus": args.target_gpus, "utilization": args.utilization,
                                "margin_pct": args.margin}.items() if v is not None}
    try:
        result = plan(job_from_args(args), target, limit=args.limit, allow_path=True)
    except SpecError as exc:  # name the flag, not the library's field
        flags = {"target.global_batch_size": "--global-batch", "target.gpu": "--target-gpu",
                 "target.num_gpus": "--target-gpus", "target.utilization": "--utilization",
                 "target.margin_pct": "--margin", "limit": "--limit"}
        raise SpecError([(flags.get(loc, loc), msg) for loc, msg in exc.errors]) from None
    print(json.dumps(result.model_dump(mode="json"), indent=2) if args.json else format_plan(result))
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from api.server import uvicorn_options
    from api.settings import Settings, SettingsError

    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        raise UsageError(str(exc)) from None
    settings = dataclasses.replace(settings, host=args.host or settings.host, port=args.port or settings.port)
    if args.workers is not None and not 1 <= args.workers <= 64:
        raise UsageError(f"--workers: give 1..64, got {args.workers}")
    if args.host:
        # each worker builds its app from the environment: hand it the host, so the allowed Host names follow
        os.environ["MEMPLAN_HOST"] = args.host
    print(f"memplan: serving the API and the calculator on http://{settings.host}:{settings.port}/ (docs at /docs, "
          f"{args.workers or 1} worker(s))", flush=True)
    uvicorn.run("api.app:create_app", factory=True, **uvicorn_options(settings, args.workers, args.log_level))
    return 0


def _cmd_profile(args: argparse.Namespace) -> int:
    from memplan import profiling

    if args.batch:
        plan = read_mapping(args.batch, "profiling runs")
        out_dir = Path(args.out_dir)
        recorded = Path(args.batch).parent  # runs already committed next to the plan count as done
        only = [g for g in (args.only or "").split(",") if g]
        started = time.monotonic()
        done = failed = 0
        for run in plan["runs"]:
            out = out_dir / f"{run['name']}.json"
            if only and not any(fnmatch.fnmatchcase(run["name"], g) for g in only):
                continue
            if not args.force and (out.exists() or (recorded / out.name).exists()):
                continue
            if args.budget_s is not None and time.monotonic() - started > args.budget_s:
                print(f"memplan profile: --budget-s {args.budget_s} spent; stopping before {run['name']}")
                break
            try:
                rec = profiling.profile(run["job"], out, args.steps, args.device)
                done += 1
                print(f"{run['name']}: reserved {_gib(rec['max_reserved_bytes'] or 0)}"
                      f"{', OOM in ' + rec['oom_phase'] if rec['oom'] else ''}, {rec['wall_s']} s", flush=True)
            except profiling.ProfileError as exc:
                failed += 1
                print(f"{run['name']}: FAILED: {exc}", file=sys.stderr, flush=True)
        print(f"memplan profile: {done} runs recorded, {failed} failed, into {out_dir}")
        return 1 if failed else 0
    if not args.out:
        raise UsageError("--out: required (profiles/NAME.json), or --batch PLAN.yaml")
    try:
        rec = profiling.profile(load_job(args), Path(args.out), args.steps, args.device)
    except profiling.ProfileError as exc:
        raise UsageError(str(exc)) from None
    print(f"wrote {args.out}: allocated {_gib(rec['max_allocated_bytes'] or 0)}, reserved "
          f"{_gib(rec['max_reserved_bytes'] or 0)}{', OOM in ' + rec['oom_phase'] if rec['oom'] else ''}")
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from memplan.validate import problems, recalibrated, render, validate, write_calibration

    rows, text = validate(Path(args.profiles), args.engine)
    if args.calibration:  # the table describes the calibration written beside it
        rows = recalibrated(rows)
        text = render(rows, args.engine)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    wrote = args.out
    if args.calibration:
        write_calibration(Path(args.calibration), args.engine, rows)
        wrote += f" and {args.calibration}"
    bad = problems(rows)
    print(f"memplan validate: {len(rows)} runs, {len(bad)} beyond the claims; wrote {wrote}")
    for line in bad:
        print(f"  {line}")
    return 1 if bad else 0


def _cmd_models(args: argparse.Namespace) -> int:
    from memplan import catalog

    rows = [m for m in catalog.list_models() if not args.search or args.search.lower() in m.id.lower()]
    if args.json:
        print(json.dumps([{"id": m.id, "model_type": m.config.get("model_type"), "aliases": list(m.aliases),
                           "params": m.params, "published_params": m.published_params} for m in rows], indent=2))
        return 0
    for m in rows:
        params = f"{m.params / 1e9:8.2f}B" if m.params else " " * 9
        print(f"{m.id:45s} {m.config.get('model_type', ''):14s} {params}")
    return 0


def _cmd_gpus(args: argparse.Namespace) -> int:
    from memplan import catalog

    rows = catalog.list_gpus()
    if args.json:
        print(json.dumps([{"id": g.id, "name": g.name, "memory_bytes": g.memory_bytes,
                           "dense_tflops": g.dense_tflops} for g in rows], indent=2))
        return 0
    for g in rows:
        bf16 = g.dense_tflops.get("bf16")
        print(f"{g.id:20s} {g.memory_gib:8.2f} GiB  {(f'{bf16:g}' if bf16 else '-'):>7} bf16 TFLOP/s  {g.name}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from memplan import engines

    parser = argparse.ArgumentParser(prog="memplan", description="GPU memory planner for LLM fine-tuning and serving")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("estimate", help="per-GPU memory of a job, broken down by term")
    _add_job_args(p)
    p.add_argument("--json", action="store_true", help="print the estimate's JSON")
    p.add_argument("--engine", default="auto", choices=("auto", *engines.names()),
                   help="auto (the default): formula for training and generate(), serving for task serve; formula: "
                        "closed-form terms (milliseconds); trace: run the real step on fake tensors (seconds; needs "
                        "no GPU); serving: a serving engine's budget (vLLM, SGLang)")
    p.set_defaults(func=_cmd_estimate)
    from memplan.report import FORMATS

    p = sub.add_parser(
        "check", help="exit 0 if every job fits its GPU, 1 if one does not or is borderline, 2 on bad input (for CI)",
        usage=CHECK_USAGE, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Check each job against its GPU's usable memory (CI interface: docs/ci.md).",
        epilog="exit codes: 0 every job fits (its whole calibrated range, plus the margin), 1 at least one does not "
               "fit or is\nborderline (the usable memory inside its range; --accept-borderline passes those), 2 bad "
               "input in at least\none job (each job is checked; bad input wins). Field flags apply to every job, "
               "after the --from configs.")
    _add_job_args(p)
    for action in p._actions:  # check takes any number of jobs (the other commands one)
        if action.dest == "job":
            action.nargs, action.metavar = "*", "JOB"
            action.help = ("job spec files (YAML or JSON) or catalog model ids, each checked as its own job; with "
                           "--from, each is the first source of the import")
    p.add_argument("--margin", type=float, default=0.0, metavar="PCT",
                   help="required free share of the GPU's usable memory, in percent (default 0)")
    p.add_argument("--accept-borderline", action="store_true",
                   help="pass a job whose usable memory lies inside its estimate's calibrated range (exit 0)")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--format", default=None, choices=FORMATS,
                     help="what is printed: text (default, one line per job), json, junit (JUnit XML) or github "
                          "(GitHub Actions annotations)")
    out.add_argument("--json", action="store_true",
                     help="one job only: its estimate JSON with a \"check\" object (the shape before --format)")
    p.add_argument("--summary", default=None, metavar="PATH",
                   help="also append a Markdown summary to PATH (created if missing), e.g. \"$GITHUB_STEP_SUMMARY\"")
    p.set_defaults(func=_cmd_check)
    p = sub.add_parser("plan", help="what fits: ranked configurations for a target, what to change, solvers")
    _add_job_args(p)
    p.add_argument("--global-batch", type=int, default=None, metavar="N",
                   help="sequences per optimizer step over all GPUs to reach (default: the job's)")
    p.add_argument("--target-gpu", default=None, metavar="ID", help="plan for this catalog GPU (default: the job's)")
    p.add_argument("--target-gpus", type=int, default=None, metavar="N", help="plan for N GPUs (default: the job's)")
    p.add_argument("--utilization", type=float, default=None, metavar="MFU",
                   help="model FLOPs utilization for step times (default 0.4)")
    p.add_argument("--margin", type=float, default=None, metavar="PCT", help="required free share of usable memory")
    p.add_argument("--limit", type=int, default=10, help="configurations to list (1-100)")
    p.add_argument("--json", action="store_true", help="print the plan's JSON")
    p.set_defaults(func=_cmd_plan)
    p = sub.add_parser("serve", help="run the HTTP API and the calculator page (settings: MEMPLAN_* variables)")
    p.add_argument("--host", default=None, help="default MEMPLAN_HOST or 127.0.0.1")
    p.add_argument("--port", type=int, default=None, help="default MEMPLAN_PORT or 8000")
    p.add_argument("--workers", type=int, default=1, help="worker processes (1..64), each with its own warm "
                                                           "model cache; MEMPLAN_MAX_CONCURRENT estimates each")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(func=_cmd_serve)
    p = sub.add_parser("profile", help="run the job on this machine's GPU and record its memory (one process a run)")
    _add_job_args(p)
    p.add_argument("--out", default=None, help="the record to write, e.g. profiles/NAME.json")
    p.add_argument("--batch", default=None, metavar="PLAN", help="a YAML plan of runs ({runs: [{name, job}]})")
    p.add_argument("--out-dir", default="profiles", help="where --batch writes NAME.json (existing ones skipped)")
    p.add_argument("--force", action="store_true", help="with --batch: run again what is already recorded")
    p.add_argument("--only", default=None, metavar="GLOBS",
                   help="with --batch: only runs whose name matches one of these comma-separated globs")
    p.add_argument("--budget-s", type=float, default=None,
                   help="with --batch: start no new run after this many seconds (a device lease is timed)")
    p.add_argument("--steps", type=int, default=3, help="optimizer steps (at least 3 on CUDA)")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="cpu: test the harness, no counters")
    p.set_defaults(func=_cmd_profile)
    p = sub.add_parser("validate", help="every run in profiles/ against its estimate -> docs/accuracy.md")
    p.add_argument("--profiles", default="profiles")
    p.add_argument("--out", default="docs/accuracy.md")
    p.add_argument("--calibration", default="memplan/catalog/calibration.json",
                   help="where the range's calibration is written ('' to leave it)")
    p.add_argument("--engine", default="formula", choices=engines.names(),
                   help="trace: every run against the trace engine (about 5 s a run)")
    p.set_defaults(func=_cmd_validate)
    p = sub.add_parser("models", help="list the bundled model catalog")
    p.add_argument("--search", default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_models)
    p = sub.add_parser("gpus", help="list the bundled GPU catalog")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_gpus)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed its usage message
        return int(exc.code or 0)
    try:
        return args.func(args)
    except SpecError as exc:
        for loc, msg in exc.errors:
            print(printable(f"memplan: error: {loc + ': ' if loc else ''}{msg}"), file=sys.stderr)
        return 2
    except UsageError as exc:
        print(printable(f"memplan: error: {exc}"), file=sys.stderr)
        return 2
    except BrokenPipeError:
        # the reader went away (`memplan models | head`): stop quietly, as a tool killed by SIGPIPE does
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - a bug must not read as "does not fit" (exit 1) in CI
        if os.environ.get("MEMPLAN_DEBUG"):
            raise
        print(printable(f"memplan: internal error: {type(exc).__name__}: {exc} (a bug in memplan: please report "
                        "it with the command; MEMPLAN_DEBUG=1 shows the traceback)"), file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
