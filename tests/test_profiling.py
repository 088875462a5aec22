"""The profiling harness, the run plan, `memplan validate`, and every stored CUDA run in profiles/.

No GPU runs CI: the harness is exercised on the CPU (`device="cpu"`: the same model building, PEFT setup,
optimizers and steps, no memory counters). Stored runs are checked against the schema and the published bounds.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

import memplan
from memplan import profiling
from memplan import catalog
from memplan.validate import (PROFILES_DIR, Row, calibration, claimed_max_pct, compare, load_runs, problems, render,
                              summarize, target_misses, validate)

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = json.loads((PROFILES_DIR / "schema.json").read_text())
PLAN = yaml.safe_load((PROFILES_DIR / "plan.yaml").read_text())
TINY = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 256}


# ---------------------------------------------------------------- the harness on the CPU

@pytest.mark.parametrize("job,phases", [
    ({"model_config": TINY, "method": "lora", "lora": {"r": 4, "target_modules": ["q_proj", "v_proj"]},
      "weight_dtype": "fp32", "seq_len": 32, "micro_batch_size": 2, "gradient_checkpointing": True,
      "gradient_accumulation_steps": 2},
     {"load": 1, "forward": 6, "backward": 6, "optimizer_step": 3}),
    ({"model_config": TINY, "method": "full", "weight_dtype": "fp32", "mixed_precision": "no",
      "optimizer": "adafactor", "seq_len": 16},
     {"load": 1, "forward": 3, "backward": 3, "optimizer_step": 3}),
    ({"model_config": TINY, "task": "inference", "weight_dtype": "bf16",
      "inference": {"batch_size": 2, "prompt_len": 16, "max_new_tokens": 3}},
     {"load": 1, "prefill": 1, "decode": 1}),
], ids=["lora-gc-accumulation", "full-adafactor", "generate"])
def test_harness_runs_the_real_step_on_cpu(tmp_path, job, phases):
    out = tmp_path / "run.json"
    record = profiling.profile(job, out, steps=3, device="cpu")
    assert json.loads(out.read_text()) == record
    jsonschema.validate(record, SCHEMA)
    assert record["job"] == job and record["device"] == "cpu" and record["oom"] is False
    assert {k: len(v) for k, v in record["phases"].items()} == phases
    assert record["max_reserved_bytes"] is None  # no counters off CUDA: such records never go in profiles/
    assert record["environment"]["torch"] and record["wall_s"] > 0


def test_harness_refuses_what_it_cannot_run():
    for job, words in [({"model": "meta-llama/Llama-3.1-8B", "zero_stage": 3, "num_gpus": 8}, "one GPU"),
                       ({"model": "meta-llama/Llama-3.1-8B", "method": "adapter"}, "adapters"),
                       ({"model": "meta-llama/Llama-3.1-8B", "task": "inference", "weight_dtype": "int4"}, "int4")]:
        with pytest.raises(profiling.ProfileError, match=words):
            profiling.check_supported(memplan.parse_spec(job))


def test_prefix_tuning_with_checkpointing_is_refused_as_peft_does():
    with pytest.raises(memplan.SpecError) as err:
        memplan.parse_spec({"model": "openai-community/gpt2", "method": "prefix_tuning",
                            "gradient_checkpointing": True})
    assert err.value.errors[0][0] == "gradient_checkpointing"


# ---------------------------------------------------------------- the plan of CUDA runs

def test_plan_covers_what_the_profiling_issue_asks():
    runs = PLAN["runs"]
    names = [r["name"] for r in runs]
    assert len(runs) >= 60 and len(set(names)) == len(names)
    specs = [memplan.parse_spec(r["job"]) for r in runs]
    types = {memplan.estimate(s).model.model_type for s in specs}
    assert len(types) >= 5 and {"gpt2", "llama", "qwen2", "gemma2", "phi"} <= types
    train = [s for s in specs if s.task == "train"]
    features = {
        "full bf16": any(s.method == "full" and s.weight_dtype == "bf16" for s in train),
        "full fp32 + bf16 autocast": any(s.method == "full" and s.weight_dtype == "fp32"
                                         and s.mixed_precision == "bf16" for s in train),
        "lora q,v": any(s.method == "lora" and s.lora.target_modules == ["q_proj", "v_proj"] for s in train),
        "lora all-linear": any(s.method == "lora" and s.lora.target_modules == "all-linear" for s in train),
        "lora ranks 8..64": {8, 64} <= {s.lora.r for s in train if s.method == "lora"},
        "qlora double quant on/off": {True, False} <= {s.double_quant for s in train if s.method == "qlora"},
        "qlora paged 8-bit and adamw": {"paged_adamw_8bit", "adamw"} <= {s.optimizer for s in train
                                                                         if s.method == "qlora"},
        "optimizers": {"adamw_8bit", "sgd_momentum", "adafactor"} <= {s.optimizer for s in train},
        "prompt tuning and ia3": {"prompt_tuning", "ia3"} <= {s.method for s in train},
        "seq 256..8192": {256, 8192} <= {s.seq_len for s in train},
        "micro-batch 1..16": {1, 16} <= {s.micro_batch_size for s in train},
        "checkpointing on/off": {True, False} <= {s.gradient_checkpointing for s in train},
        "eager and sdpa": {"eager", "sdpa"} <= {s.attention for s in train},
        "inference bf16/int8/nf4": {"bf16", "int8", "nf4"} <= {s.weight_dtype for s in specs
                                                               if s.task == "inference"},
        "runs past the boundary": sum(bool(r.get("expect_oom")) for r in runs) >= 3,
    }
    assert all(features.values()), [k for k, v in features.items() if not v]
    for run, spec in zip(runs, specs):
        profiling.check_supported(spec)
        # sized so that the estimate calls each side of the boundary as the plan intends
        assert memplan.estimate(spec).fits == (not run.get("expect_oom", False)), run["name"]


# ---------------------------------------------------------------- memplan validate

def _record(job: dict, allocated: int, reserved: int, device: int | None, oom: bool = False) -> dict:
    """A record shaped like the harness's, for testing the comparison code only (not a measurement)."""
    return {"schema_version": 1, "job": job, "device": "cuda", "date": "2026-11-22T00:00:00+00:00",
            "environment": {"python": "3.12", "torch": "2.11", "transformers": "5.17.0", "peft": None,
                            "bitsandbytes": None, "cuda": "13.0", "gpu_name": "NVIDIA H100 80GB HBM3",
                            "gpu_memory_bytes": 81_559 * 2**20, "driver": "580"},
            "harness": {"steps": 3, "attention": "sdpa"}, "oom": oom, "oom_phase": "backward" if oom else None,
            "phases": {"load": [{"max_allocated_bytes": 1, "max_reserved_bytes": 2, "allocated_bytes_after": 1,
                                 "seconds": 0.1}]},
            "max_allocated_bytes": allocated, "max_reserved_bytes": reserved, "device_used_peak_bytes": device,
            "cuda_context_bytes": 500 * 2**20, "wall_s": 1.0}


def test_validate_computes_signed_errors_and_flags_bounds(tmp_path):
    job = {"model": "meta-llama/Llama-3.2-1B", "method": "lora"}
    on_h100 = {**job, "gpu": {"memory_gib": 81_559 / 1024}}
    e = memplan.estimate(on_h100)
    # measured 25% above the estimate on reserved: the estimate is 1/1.25 - 1 = -20% off (an underestimate)
    rec = _record(job, e.peak_allocated_bytes, round(e.peak_reserved_bytes * 1.25), e.peak_bytes)
    jsonschema.validate(rec, SCHEMA)
    (tmp_path / "lora-run.json").write_text(json.dumps(rec))
    (tmp_path / "oom-run.json").write_text(json.dumps(_record({**job, "method": "full", "seq_len": 8192,
                                                               "micro_batch_size": 64}, 0, 0, None, oom=True)))
    rows, text = validate(tmp_path)
    lora = next(r for r in rows if r.name == "lora-run")
    assert lora.allocated_pct == 0 and lora.device_pct == 0
    assert lora.reserved_pct == pytest.approx(-20.0, abs=1e-6)
    s = summarize(rows)["lora"]
    assert s["runs"] == 1 and s["underestimate_rate"] == 1.0
    assert claimed_max_pct("lora") == 17.0
    assert problems(rows) == ["lora-run: peak reserved off by -20.0% (claimed 17%)",
                              "median |error| on peak reserved 20.0% (claimed 4%)"]
    assert target_misses(rows) == ["lora-run: -20.0%", "median |error| 20.0% (target 3%)"]
    assert "| lora-run | meta-llama/Llama-3.2-1B | lora |" in text and "| oom-run |" in text
    # an OOM run estimated to fit is a failure
    (tmp_path / "oom-run.json").write_text(json.dumps(_record(job, 0, 0, None, oom=True)))
    assert "oom-run: ran out of memory but is estimated to fit" in problems(validate(tmp_path)[0])


def test_accuracy_table_is_generated_from_profiles():
    rows, text = validate()
    assert (ROOT / "docs" / "accuracy.md").read_text() == text, "run `memplan validate` and commit docs/accuracy.md"
    # the range's calibration is what these runs give (memplan validate writes both)
    assert catalog.calibration()["engines"]["formula"] == calibration(rows), \
        "run `memplan validate` and commit memplan/catalog/calibration.json"
    # the range is an upper bound the stored runs stay under: at most 5% of them above range.high
    fitted = [r for r in rows if r.device_ratio is not None]
    assert len(fitted) >= 50 and sum(r.above_range for r in fitted) <= 0.05 * len(fitted)


def test_calibration_per_family_from_made_up_runs():
    """Each family's ratios are the rounded-out min and max of its runs; a family with too few runs is left to
    "all"; every run lies inside its family's range."""
    def row(name, family, ratio):
        return Row(name=name, method="lora", model="m", oom=False, fits_estimated=True,
                                    allocated_pct=0.0, reserved_pct=0.0, device_pct=0.0, measured_reserved=1,
                                    estimated_reserved=1, family=family, device_ratio=ratio)
    rows = [row(f"t{i}", "train", r) for i, r in enumerate((0.9512, 0.97, 0.98, 0.99, 0.9999, 0.96))]
    rows.append(row("inf", "inference", 1.2))
    cal = calibration(rows)
    assert cal == {"all": {"runs": 7, "low_ratio": 0.951, "high_ratio": 1.2},
                   "train": {"runs": 6, "low_ratio": 0.951, "high_ratio": 1.0}}


# ---------------------------------------------------------------- every stored CUDA run

STORED = load_runs()


@pytest.mark.parametrize("path,record", STORED, ids=[p.stem for p, _ in STORED])
def test_stored_run(path, record):
    jsonschema.validate(record, SCHEMA)
    assert record["device"] == "cuda" and record["harness"]["steps"] >= 3
    row = compare(path.stem, record)
    if record["oom"]:
        assert not row.fits_estimated, "an out-of-memory run must be estimated as not fitting"
    else:
        assert row.fits_estimated, "a run that fit must be estimated as fitting"
        assert abs(row.reserved_pct) <= claimed_max_pct(row.method), f"peak reserved off by {row.reserved_pct:+.1f}%"


def test_building_a_model_leaves_the_catalog_config_unchanged():
    """transformers edits nested config dicts in place (Llama 3.1's rope_scaling gains rope_theta); before the fix,
    the harness's quantized runs of Llama-3.1-8B looked for their checkpoint under a different hash and failed on
    the H100."""
    from memplan.architecture import config_hash, load_config, prepare_config

    _, raw = load_config("meta-llama/Llama-3.1-8B", None, allow_path=False)
    before = config_hash(raw)
    prepare_config(raw)
    assert config_hash(load_config("meta-llama/Llama-3.1-8B", None, allow_path=False)[1]) == before
    assert "rope_theta" not in raw["rope_scaling"]


def test_the_table_written_with_a_calibration_describes_that_calibration():
    """`memplan validate` writes the accuracy table beside the calibration it computes: a run above the old
    calibration's high ratio but inside the new one is not counted above range.high."""
    from memplan.validate import recalibrated

    rows = [Row(name=f"r{i}", method="lora", model="m", oom=False, fits_estimated=True, allocated_pct=0.0,
                reserved_pct=0.0, device_pct=0.0, measured_reserved=1, estimated_reserved=1, family="train",
                device_ratio=ratio, above_range=ratio > 1.05) for i, ratio in enumerate([0.95, 1.0, 1.04, 1.07, 1.1])]
    assert sum(r.above_range for r in rows) == 2
    again = recalibrated(rows)
    assert [r.above_range for r in again] == [False] * 5
    assert [r.device_ratio for r in again] == [r.device_ratio for r in rows]
