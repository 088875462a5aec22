"""memplan against published serving-engine startup logs: one file per log in bench/published/serving/ (its source,
the log lines, the settings, the memplan job that restates them, what memplan does not model in it). Each scored row
is estimated (task serve) and compared with what the engine logged: the weights ("Model loading took"), the
profile run's peak, the memory outside torch, the KV budget ("Available KV cache memory"), the KV tokens and the CUDA
graph memory.

Writes docs/published-serving.md and the serving engine's range calibration in memplan/catalog/calibration.json
(tests/test_published_serving.py checks both are what this script writes today).
Run: python bench/published_serving.py
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

import yaml

import memplan
from memplan.job import resolve
from memplan.result import serving_family
from memplan.terms import uncertainty as unc

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "bench" / "published" / "serving"
DOC = ROOT / "docs" / "published-serving.md"
CALIBRATION = ROOT / "memplan" / "catalog" / "calibration.json"
GIB = 2**30
REQUIRED = ("source", "url", "quote", "settings", "logged", "job", "not_modelled")


def load() -> dict[str, dict[str, Any]]:
    """Every log file, by name (the file's stem)."""
    return {p.stem: yaml.safe_load(p.read_text()) for p in sorted(DATA.glob("*.yaml"))}


def score(row: dict[str, Any]) -> dict[str, Any]:
    """The estimate of a scored row against its log: GiB differences (the logs print 0.01 GiB), relative errors of
    the KV budget and tokens, and the measured / estimated ratio of the non-KV memory memplan models (everything
    but the weights: the profile peak and memory outside torch), which calibrates the range."""
    log = row["logged"]
    e = memplan.estimate(row["job"])
    s = e.serving
    assert s is not None
    out: dict[str, Any] = {"s": s, "family": serving_family(s.engine, resolve(row["job"]).info)}
    out["weights_gib"] = s.weights_bytes / GIB - log["model_loading_gib"]
    out["kv_error"] = s.kv_cache_bytes / (log["available_kv_cache_gib"] * GIB) - 1
    out["tokens_error"] = s.kv_cache_tokens / log["kv_cache_tokens"] - 1
    out["activation_gib"] = s.activation_bytes / GIB - log["activation_peak_gib"] if "activation_peak_gib" in log \
        else None
    out["non_torch_gib"] = s.non_torch_bytes / GIB - log["non_torch_gib"] if "non_torch_gib" in log else None
    out["graph_gib"] = s.cuda_graph_bytes / GIB - log["cuda_graph_gib"] if "cuda_graph_gib" in log else None
    out["concurrency_error"] = (s.max_concurrency / log["max_concurrency"] - 1) if "max_concurrency" in log else None
    modelled = s.activation_bytes + s.non_torch_bytes + (s.cuda_graph_bytes if s.cuda_graph_in_budget else 0)
    out["non_kv_ratio"] = None
    if "requested_memory_gib" in log and modelled:  # vLLM logs what it subtracts from its request
        logged_non_kv = log["requested_memory_gib"] * GIB - log["available_kv_cache_gib"] * GIB
        out["non_kv_ratio"] = (logged_non_kv - s.weights_bytes) / modelled
    return out


def _pct(x: float) -> str:
    return f"{100 * x:+.1f}%"


def _gib(x: float | None) -> str:
    return "" if x is None else f"{x:+.2f}"


def calibration(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """{family: {runs, low_ratio, high_ratio}} over the scored rows (memplan.terms.uncertainty.ratio_bounds); a
    family is the engine, and apart its MoE models (memplan.result.serving_family)."""
    by_engine: dict[str, list[float]] = {}
    for r in results.values():
        ratios = by_engine.setdefault(r["family"], [])
        if r["non_kv_ratio"] is not None:
            ratios.append(r["non_kv_ratio"])
    out = {}
    for engine, ratios in sorted(by_engine.items()):
        low, high = unc.ratio_bounds(ratios) if ratios else (1.0, 1.0)  # no log separates its non-KV memory
        out[engine] = {"runs": len(ratios), "low_ratio": low, "high_ratio": high}
    return out


def render(rows: dict[str, dict[str, Any]]) -> str:
    scored = {name: row for name, row in rows.items() if row["job"] is not None}
    results = {name: score(row) for name, row in scored.items()}
    lines = [
        "# memplan against published serving startup logs",
        "",
        "Serving engines log their memory budget at startup. Each log below is restated as a memplan job (task serve)",
        "and estimated; one file per log in `bench/published/serving/` holds its source, the log lines, the settings",
        "and what memplan does not model in that run. This page is written by `python bench/published_serving.py`",
        "(a test checks it is current), which also writes the serving range calibration (`calibration.json`, engine",
        "`serving`). Differences are memplan - logged, in GiB (the logs print 0.01 GiB); the KV budget, tokens and",
        "concurrency as relative errors.",
        "",
    ]
    for engine in sorted({r["s"].engine for r in results.values()}):
        mine = [r for r in results.values() if r["s"].engine == engine]
        kv = [r["kv_error"] for r in mine]
        weights = [abs(r["weights_gib"]) for r in mine]
        tokens = [r["tokens_error"] for r in mine]
        lines.append(
            f"- **{engine}: {len(mine)} scored logs**: KV budget error median {_pct(statistics.median(kv))}, median "
            f"absolute {100 * statistics.median(abs(x) for x in kv):.2f}%, from {_pct(min(kv))} to {_pct(max(kv))}; "
            f"KV tokens from {_pct(min(tokens))} to {_pct(max(tokens))}; weights within {max(weights):.3f} GiB "
            f"(median {statistics.median(weights):.3f}).")
    lines += [
        "",
        f"{len(rows) - len(scored)} more logs are listed at the end with why they are not scored. All scored vLLM",
        "logs come from one source (vLLM 0.19.0 on H100 80GB, llm-d-planner's accuracy sweep), so the measured",
        "constants of `memplan/terms/vllm.py` (the sampler's bytes per logit, memory outside torch, NCCL, CUDA",
        "graphs) are fitted on the same data they are checked against here: the table shows the model holds across",
        "models, sizes, TP degrees and dtypes, not that it transfers to other GPUs or versions. The two SGLang logs",
        "are older versions than the rules memplan models (0.5.23); their mem_fraction_static is given, so the",
        "budget rule (fraction of the free memory less weights) is what they check.",
        "",
        "Columns: the engine's weights (\"Model loading took\" / SGLang's \"mem usage\"), its profile run's peak and",
        "memory outside torch (vLLM's debug line), the KV budget (\"Available KV cache memory\" / SGLang's K + V",
        "size), the KV tokens, the maximum concurrency at max_model_len and the CUDA graph memory (\"Graph capturing",
        "finished ... took\").",
        "",
        "| log | engine | model | TP | dtype / KV | weights | profile peak | non-torch | KV budget | KV tokens | "
        "concurrency | graphs |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        row, s = scored[name], r["s"]
        job = row["job"]
        kvd = job["serving"].get("kv_cache_dtype", "auto")
        lines.append(
            f"| [{name}]({row['url']}) | {s.engine} | {job['model']} | {s.tensor_parallel_size} | "
            f"{job.get('weight_dtype', 'auto')} / {kvd} | {_gib(r['weights_gib'])} | {_gib(r['activation_gib'])} | "
            f"{_gib(r['non_torch_gib'])} | {_pct(r['kv_error'])} | {_pct(r['tokens_error'])} | "
            f"{'' if r['concurrency_error'] is None else _pct(r['concurrency_error'])} | {_gib(r['graph_gib'])} |")
    lines += ["", "## Not scored", ""]
    for name, row in rows.items():
        if row["job"] is None:
            lines.append(f"- [{name}]({row['url']}): {'; '.join(row['not_modelled'])}")
    lines += ["", "## What the scored rows leave out", ""]
    for name, row in scored.items():
        if row["not_modelled"]:
            lines.append(f"- {name}: {'; '.join(row['not_modelled'])}")
    return "\n".join(lines) + "\n"


def write_calibration(rows: dict[str, dict[str, Any]]) -> None:
    scored = {name: row for name, row in rows.items() if row["job"] is not None}
    data = json.loads(CALIBRATION.read_text())
    data["engines"]["serving"] = calibration({n: score(r) for n, r in scored.items()})
    CALIBRATION.write_text(json.dumps(data, indent=1) + "\n")


def main() -> int:
    rows = load()
    write_calibration(rows)
    memplan.catalog.calibration.cache_clear()
    DOC.write_text(render(rows))
    print(f"wrote {DOC.relative_to(ROOT)} and the serving calibration")
    return 0


if __name__ == "__main__":
    sys.exit(main())
