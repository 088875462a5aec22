"""The `memplan` command: parse the job, call the library, print. No formulas here.

Exit codes: 0 success (check: fits), 1 check: does not fit, 2 bad input (a message naming the field).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from memplan.spec import SpecError

GIB = 2**30

# flags that override job fields: flag name -> dotted field path (generated from the spec's field names)
_SCALAR_FIELDS = [
    "model", "task", "head", "num_labels", "method", "weight_dtype", "mixed_precision", "double_quant", "optimizer",
    "optimizer_impl", "num_virtual_tokens", "adapter_size", "micro_batch_size", "seq_len",
    "gradient_accumulation_steps", "gradient_checkpointing", "attention", "num_gpus", "zero_stage",
    "offload_optimizer", "offload_params",
]
_NESTED_FIELDS = ["lora.r", "lora.alpha", "lora.dropout", "lora.target_modules", "inference.batch_size",
                  "inference.prompt_len", "inference.max_new_tokens", "inference.kv_cache_dtype"]


class UsageError(Exception):
    pass


def _flag(path: str) -> str:
    return "--" + path.replace(".", "-").replace("_", "-")


def _add_job_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("job", nargs="?", help="job spec file (YAML or JSON), or a catalog model id")
    grp = p.add_argument_group("job fields (override the file)")
    for path in _SCALAR_FIELDS + _NESTED_FIELDS:
        grp.add_argument(_flag(path), dest="set_" + path.replace(".", "__"), metavar="VALUE", default=None)
    grp.add_argument("--gpu", default=None, help="catalog GPU id (see `memplan gpus`)")
    grp.add_argument("--gpu-memory-gib", type=float, default=None, help="a GPU given by its memory in GiB")


#: fields whose values are names: passed as typed (YAML would read `--mixed-precision no` as false)
_NAME_FIELDS = {"model", "task", "head", "method", "weight_dtype", "mixed_precision", "optimizer", "optimizer_impl",
                "attention", "inference.kv_cache_dtype"}


def _parse_value(path: str, raw: str) -> Any:
    if path == "lora.target_modules":
        return raw if raw == "all-linear" else [x.strip() for x in raw.split(",") if x.strip()]
    if path in _NAME_FIELDS:
        return raw
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def load_job(args: argparse.Namespace) -> dict[str, Any]:
    """The job dict from the file (or model id) plus flag overrides."""
    job: dict[str, Any] = {}
    if args.job:
        path = Path(args.job)
        if path.is_file() and path.suffix.lower() in (".yaml", ".yml", ".json"):
            try:
                data = yaml.safe_load(path.read_text())  # YAML is a superset of JSON
            except (OSError, yaml.YAMLError) as exc:
                raise UsageError(f"cannot read job file {args.job}: {exc}") from None
            if not isinstance(data, dict):
                raise UsageError(f"job file {args.job} must hold a mapping of job fields")
            job = data
            if isinstance(job.get("model"), str) and job["model"].endswith(".json"):
                model_path = (path.parent / job["model"])  # config paths are relative to the job file
                if model_path.is_file():
                    job["model"] = str(model_path)
        elif path.suffix.lower() in (".yaml", ".yml"):
            raise UsageError(f"job file not found: {args.job}")
        else:
            job = {"model": args.job}
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
    if "model" not in job and "model_config" not in job:
        raise UsageError("model: required (a job file, a catalog id as JOB, or --model); "
                         "list catalog ids with `memplan models`")
    return job


def _gib(n: int) -> str:
    return f"{n / GIB:.2f} GiB"


def format_estimate(e: Any) -> str:
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
              f"{'FITS' if e.fits else 'DOES NOT FIT'}: headroom {_gib(e.headroom_bytes)}", "", "assumptions:"]
    lines += [f"  - {a}" for a in e.assumptions]
    return "\n".join(lines)


def _cmd_estimate(args: argparse.Namespace) -> int:
    from memplan.estimate import estimate

    e = estimate(load_job(args), allow_path=True)
    print(json.dumps(e.model_dump(mode="json"), indent=2) if args.json else format_estimate(e))
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from memplan.check import check

    job = load_job(args)
    try:
        result = check(job, args.margin, allow_path=True)
    except SpecError as exc:
        raise SpecError([("--margin" if loc == "margin_pct" else loc, msg) for loc, msg in exc.errors]) from None
    if args.json:
        e = result.estimate.model_dump(mode="json")
        print(json.dumps({**e, "check": {"fits": result.fits, "margin_pct": result.margin_pct,
                                         "required_bytes": result.required_bytes}}, indent=2))
    else:
        print(f"memplan check: {result.message}")
    return 0 if result.fits else 1


def _cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from api.settings import Settings, SettingsError

    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        raise UsageError(str(exc)) from None
    host = args.host or settings.host
    port = args.port or settings.port
    print(f"memplan: serving the API and the calculator on http://{host}:{port}/ (docs at /docs)", flush=True)
    uvicorn.run("api.app:create_app", factory=True, host=host, port=port, workers=args.workers,
                log_level=args.log_level, access_log=args.log_level == "debug")
    return 0


def _cmd_profile(args: argparse.Namespace) -> int:
    from memplan import profiling

    if args.batch:
        plan = yaml.safe_load(Path(args.batch).read_text())
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
    from memplan.validate import problems, validate

    rows, text = validate(Path(args.profiles))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    bad = problems(rows)
    print(f"memplan validate: {len(rows)} runs, {len(bad)} beyond the claims; wrote {args.out}")
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
    parser = argparse.ArgumentParser(prog="memplan", description="GPU memory planner for LLM fine-tuning and serving")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("estimate", help="per-GPU memory of a job, broken down by term")
    _add_job_args(p)
    p.add_argument("--json", action="store_true", help="print the estimate's JSON")
    p.set_defaults(func=_cmd_estimate)
    p = sub.add_parser("check", help="exit 0 if the job fits the GPU, 1 if not, 2 on bad input (for CI)")
    _add_job_args(p)
    p.add_argument("--margin", type=float, default=0.0, metavar="PCT",
                   help="required free share of the GPU's usable memory, in percent")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_check)
    p = sub.add_parser("serve", help="run the HTTP API and the calculator page (settings: MEMPLAN_* variables)")
    p.add_argument("--host", default=None, help="default MEMPLAN_HOST or 127.0.0.1")
    p.add_argument("--port", type=int, default=None, help="default MEMPLAN_PORT or 8000")
    p.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
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
            print(f"memplan: error: {loc + ': ' if loc else ''}{msg}", file=sys.stderr)
        return 2
    except UsageError as exc:
        print(f"memplan: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
