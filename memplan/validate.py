"""`memplan validate`: every stored CUDA run in profiles/ against the estimate of its job, as a committed table
(docs/accuracy.md) with the median and max absolute error per method and the underestimate rate, and the
calibration of the estimate's range (memplan/catalog/calibration.json): per family of job, the smallest and largest
measured / estimated device peak.

Each run is estimated on the GPU it ran on (its memory as the driver reports it), so `fits` is judged against the
real card. An out-of-memory run must be estimated as not fitting; a run that fit must be estimated as fitting.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from memplan.estimate import estimate
from memplan.result import range_family
from memplan.spec import parse_spec
from memplan.terms import uncertainty as unc
from memplan.terms.dtypes import GIB

PROFILES_DIR = Path(__file__).resolve().parent.parent / "profiles"
#: the accuracy target on peak reserved: median |error| <= 3 %, max <= 8 % over all runs
MEDIAN_BOUND_PCT, MAX_BOUND_PCT = 3.0, 8.0
#: what memplan claims today, per method: max |error| on peak reserved over its stored runs (the measured maximum
#: rounded up to a whole percent). Tests fail when a run leaves its method's claim, so the model cannot drift
#: unnoticed; a claim above MAX_BOUND_PCT is a known miss of the target, listed in docs/accuracy.md.
CLAIMED_MAX_PCT = {"full": 11.0, "lora": 17.0, "qlora": 10.0, "ia3": 7.0, "prompt_tuning": 10.0,
                   "inference": 14.0}
#: the claimed median |error| on peak reserved over all runs
CLAIMED_MEDIAN_PCT = 4.0


@dataclass
class Row:
    name: str
    method: str
    model: str
    oom: bool
    fits_estimated: bool
    allocated_pct: float | None  # (estimate - measured) / measured * 100
    reserved_pct: float | None
    device_pct: float | None
    measured_reserved: int | None
    estimated_reserved: int
    family: str = "train"  # memplan.result.range_family
    device_ratio: float | None = None  # measured / estimated device peak
    above_range: bool = False  # the measured device peak above the estimate's range.high


def load_runs(directory: Path = PROFILES_DIR) -> list[tuple[Path, dict[str, Any]]]:
    return [(p, json.loads(p.read_text())) for p in sorted(directory.glob("*.json")) if p.name != "schema.json"]


def _pct(estimated: int, measured: int | None) -> float | None:
    return None if not measured else 100.0 * (estimated - measured) / measured


def compare(name: str, record: dict[str, Any], engine: str = "formula") -> Row:
    """The estimate of the run's job on the run's GPU, against what the run measured."""
    job = dict(record["job"])
    memory = record["environment"].get("gpu_memory_bytes")
    if memory:
        job["gpu"] = {"memory_gib": memory / GIB}
    e = estimate(job, engine=engine)
    oom = bool(record["oom"])
    device = record.get("device_used_peak_bytes")
    spec = parse_spec(job)
    attention = record.get("harness", {}).get("attention") or spec.attention
    return Row(name=name, method=job.get("method", "lora") if job.get("task") != "inference" else "inference",
               model=e.model.id, oom=oom, fits_estimated=e.fits,
               allocated_pct=None if oom else _pct(e.peak_allocated_bytes, record["max_allocated_bytes"]),
               reserved_pct=None if oom else _pct(e.peak_reserved_bytes, record["max_reserved_bytes"]),
               device_pct=None if oom else _pct(e.peak_bytes, record.get("device_used_peak_bytes")),
               measured_reserved=record["max_reserved_bytes"], estimated_reserved=e.peak_reserved_bytes,
               family=range_family(spec, attention),
               device_ratio=None if oom or not device else device / e.peak_bytes,
               above_range=bool(not oom and device and device > e.range.high_bytes))


def calibration(rows: list[Row]) -> dict[str, dict[str, float | int]]:
    """Per family of job (and "all"), the runs and the rounded-out smallest and largest measured / estimated
    device peak (memplan.terms.uncertainty.ratio_bounds); families with fewer than MIN_FAMILY_RUNS runs are left
    out (their jobs use "all")."""
    groups: dict[str, list[float]] = {}
    for r in rows:
        if r.device_ratio is not None:
            groups.setdefault(r.family, []).append(r.device_ratio)
            groups.setdefault("all", []).append(r.device_ratio)
    out = {}
    for family in sorted(groups, key=lambda f: (f != "all", f)):
        ratios = groups[family]
        if family == "all" or len(ratios) >= unc.MIN_FAMILY_RUNS:
            low, high = unc.ratio_bounds(ratios)
            out[family] = {"runs": len(ratios), "low_ratio": low, "high_ratio": high}
    return out


def recalibrated(rows: list[Row]) -> list[Row]:
    """The rows as they read under the calibration computed from them (what `write_calibration` stores): each
    run's `above_range` against its family's new high ratio, so the table written beside a new calibration does
    not describe the old one."""
    cal = calibration(rows)
    out = []
    for r in rows:
        entry = cal.get(r.family) or cal.get("all")
        above = bool(entry and r.device_ratio is not None and r.device_ratio > entry["high_ratio"])
        out.append(replace(r, above_range=above))
    return out


def write_calibration(path: Path, engine: str, rows: list[Row]) -> None:
    """Store the engine's calibration in `path`, keeping the other engines' entries."""
    data = json.loads(path.read_text()) if path.exists() else {}
    engines = data.get("engines", {})
    engines[engine] = calibration(rows)
    path.write_text(json.dumps({
        "what": "per engine and family of job (memplan.result.range_family): how many stored CUDA runs of "
                "profiles/ fit, and the smallest and largest measured / estimated device peak among them, rounded "
                "outwards to 0.001; the estimate's range is its peak_bytes times these (memplan.terms.uncertainty)",
        "generated_by": "memplan validate [--engine ENGINE]",
        "engines": dict(sorted(engines.items()))}, indent=1) + "\n")


def summarize(rows: list[Row]) -> dict[str, dict[str, float | int]]:
    """Per method and overall: runs, median and max |error| of reserved, allocated, device; underestimate rate."""
    groups: dict[str, list[Row]] = {}
    for r in rows:
        if not r.oom and r.reserved_pct is not None:
            groups.setdefault(r.method, []).append(r)
            groups.setdefault("all", []).append(r)
    out = {}
    for method, rs in groups.items():
        stats: dict[str, float | int] = {"runs": len(rs)}
        for key in ("reserved_pct", "allocated_pct", "device_pct"):
            errors = [abs(getattr(r, key)) for r in rs if getattr(r, key) is not None]
            if errors:
                stats[f"{key}_median"] = statistics.median(errors)
                stats[f"{key}_max"] = max(errors)
        stats["underestimate_rate"] = sum(r.reserved_pct < 0 for r in rs) / len(rs)
        out[method] = stats
    return out


def claimed_max_pct(method: str) -> float:
    return CLAIMED_MAX_PCT.get(method, MAX_BOUND_PCT)


def problems(rows: list[Row]) -> list[str]:
    """What breaks memplan's claims: OOM runs estimated to fit, runs that fit estimated not to, errors on peak
    reserved beyond the method's claimed max, and the overall median beyond the claimed median."""
    out = [f"{r.name}: ran out of memory but is estimated to fit" for r in rows if r.oom and r.fits_estimated]
    out += [f"{r.name}: fit but is estimated not to" for r in rows if not r.oom and not r.fits_estimated]
    out += [f"{r.name}: peak reserved off by {r.reserved_pct:+.1f}% (claimed {claimed_max_pct(r.method):g}%)"
            for r in rows if r.reserved_pct is not None and abs(r.reserved_pct) > claimed_max_pct(r.method)]
    overall = summarize(rows).get("all")
    if overall and overall.get("reserved_pct_median", 0) > CLAIMED_MEDIAN_PCT:
        out.append(f"median |error| on peak reserved {overall['reserved_pct_median']:.1f}% "
                   f"(claimed {CLAIMED_MEDIAN_PCT:g}%)")
    return out


def target_misses(rows: list[Row]) -> list[str]:
    """Runs (and the median) outside the accuracy target, which the claims above still allow."""
    out = [f"{r.name}: {r.reserved_pct:+.1f}%" for r in rows
           if r.reserved_pct is not None and abs(r.reserved_pct) > MAX_BOUND_PCT]
    overall = summarize(rows).get("all")
    if overall and overall.get("reserved_pct_median", 0) > MEDIAN_BOUND_PCT:
        out.append(f"median |error| {overall['reserved_pct_median']:.1f}% (target {MEDIAN_BOUND_PCT:g}%)")
    return out


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:+.1f}%"


def render(rows: list[Row], engine: str = "formula") -> str:
    """docs/accuracy.md (docs/accuracy-trace.md for the trace engine)."""
    command = "memplan validate" + (f" --engine {engine} --out docs/accuracy-{engine}.md" if engine != "formula"
                                    else "")
    lines = [f"# Accuracy: memplan's {engine} engine against measured CUDA runs", "",
             f"Generated by `{command}` from every run in `profiles/` (do not edit by hand). Error is "
             "(estimate - measured) / measured: allocated against `torch.cuda.max_memory_allocated()`, reserved "
             "against `max_memory_reserved()`, device against the process's peak device memory (NVML). Target on "
             f"peak reserved: median |error| <= {MEDIAN_BOUND_PCT:g}%, max <= {MAX_BOUND_PCT:g}%; an "
             "out-of-memory run must be estimated as not fitting. Claimed today (tests fail beyond it): median "
             f"<= {CLAIMED_MEDIAN_PCT:g}%, max per method " + ", ".join(
                 f"{m} {v:g}%" for m, v in sorted(CLAIMED_MAX_PCT.items())) + ".", ""]
    if not rows:
        lines += ["**No runs are stored yet**: no GPU has been available to the project so far, so memplan claims "
                  "no error against GPU measurements. `memplan profile --batch profiles/plan.yaml` records the "
                  "planned runs on a CUDA machine.", ""]
        return "\n".join(lines)
    summary = summarize(rows)
    lines += ["## Summary", "", "| method | runs | reserved median | reserved max | allocated median | "
              "allocated max | device median | device max | underestimates |", "|---|---:|---:|---:|---:|---:|---:|"
              "---:|---:|"]
    for method, s in sorted(summary.items(), key=lambda kv: (kv[0] == "all", kv[0])):
        cells = [f"{s.get(k, float('nan')):.1f}%" for k in ("reserved_pct_median", "reserved_pct_max",
                                                             "allocated_pct_median", "allocated_pct_max",
                                                             "device_pct_median", "device_pct_max")]
        lines.append(f"| {method} | {s['runs']} | " + " | ".join(cells) + f" | {s['underestimate_rate']:.0%} |")
    ooms = [r for r in rows if r.oom]
    lines += ["", f"Out-of-memory runs: {len(ooms)}, estimated as not fitting: "
                  f"{sum(not r.fits_estimated for r in ooms)}.", "", "## Every run", "",
              "| run | model | method | measured reserved GiB | estimated GiB | reserved | allocated | device |",
              "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        measured = "OOM" if r.oom else f"{(r.measured_reserved or 0) / GIB:.2f}"
        lines.append(f"| {r.name} | {r.model} | {r.method} | {measured} | {r.estimated_reserved / GIB:.2f} | "
                     f"{_fmt(r.reserved_pct)} | {_fmt(r.allocated_pct)} | {_fmt(r.device_pct)} |")
    cal = calibration(rows)
    above = [r for r in rows if r.above_range]
    lines += ["", "## The range", "",
              "Each estimate's `range` is its peak_bytes times the smallest and largest measured / estimated device "
              "peak of the stored runs of its family of job (memplan/catalog/calibration.json, written by the same "
              "command). A new run drawn like the k stored ones lands at or below the largest with probability "
              "k / (k + 1).", "",
              "| family | runs | low | high | new-run coverage |", "|---|---:|---:|---:|---:|"]
    for family, c in cal.items():
        lines.append(f"| {family} | {c['runs']} | {c['low_ratio']:.3f}x | {c['high_ratio']:.3f}x | "
                     f"{unc.new_run_coverage(int(c['runs'])):.0%} |")
    fitted = [r for r in rows if r.device_ratio is not None]
    lines += ["", f"Stored runs above their estimate's range.high: {len(above)} of {len(fitted)}."]
    bad, missed = problems(rows), target_misses(rows)
    lines += ["", "## Beyond the claims", ""] + ([f"- {p}" for p in bad] or ["None."])
    lines += ["", f"## Outside the {MAX_BOUND_PCT:g}% target (known misses)", ""] + (
        [f"- {p}" for p in missed] or ["None."]) + [""]
    return "\n".join(lines)


def validate(directory: Path = PROFILES_DIR, engine: str = "formula") -> tuple[list[Row], str]:
    rows = [compare(p.stem, rec, engine) for p, rec in load_runs(directory) if rec.get("device") == "cuda"]
    return rows, render(rows, engine)
