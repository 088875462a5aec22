"""The `memplan` command: output, exit codes (0 fits, 1 does not fit, 2 bad input) and error messages."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

import memplan
from memplan.cli import main

EXAMPLE = str(Path(__file__).parent.parent / "examples" / "llama3-8b-qlora-t4.yaml")


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_estimate_table_and_json_match_the_library(capsys):
    code, out, _ = run(capsys, "estimate", EXAMPLE)
    assert code == 0 and "peak on GPU" in out and "GiB" in out and "BORDERLINE: the 14.50 GiB usable" in out
    code, out, _ = run(capsys, "estimate", EXAMPLE, "--json")
    data = json.loads(out)
    import yaml

    expected = memplan.estimate(yaml.safe_load(Path(EXAMPLE).read_text())).model_dump(mode="json")
    assert data == expected


def test_check_exit_codes(capsys):
    code, out, _ = run(capsys, "check", EXAMPLE, "--gpu", "T4-16GB")
    assert code == 1 and out.startswith("memplan check: BORDERLINE") and out.count("\n") == 1
    code, out, _ = run(capsys, "check", EXAMPLE, "--gpu", "T4-16GB", "--accept-borderline")
    assert code == 0 and out.startswith("memplan check: BORDERLINE (accepted)")
    code, out, _ = run(capsys, "check", EXAMPLE, "--gpu", "L4-24GB")
    assert code == 0 and out.startswith("memplan check: FITS")
    code, out, _ = run(capsys, "check", EXAMPLE, "--gpu", "T4-16GB", "--seq-len", "8192", "--micro-batch-size", "4")
    assert code == 1 and "DOES NOT FIT" in out
    code, out, _ = run(capsys, "check", EXAMPLE, "--gpu", "L4-24GB", "--margin", "50")
    assert code == 1  # fits, but not with half the GPU kept free


def test_flags_override_and_model_as_job(capsys, tmp_path):
    code, out, _ = run(capsys, "estimate", "meta-llama/Llama-3.1-8B", "--method", "full", "--gpu-memory-gib", "200",
                       "--lora-target-modules", "q_proj,v_proj", "--json")
    data = json.loads(out)
    assert code == 0 and data["params"]["trainable"] == 8_030_261_248 and data["gpu"]["id"] == "custom-200GiB"
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"model_type": "llama", "hidden_size": 256, "intermediate_size": 688,
                               "num_hidden_layers": 4, "num_attention_heads": 8, "num_key_value_heads": 2,
                               "vocab_size": 32000}))
    code, out, _ = run(capsys, "estimate", "--model", str(cfg), "--method", "full", "--json")
    assert code == 0 and json.loads(out)["params"]["total"] == 19_155_200


@pytest.mark.parametrize("argv,field", [
    (["estimate", EXAMPLE, "--method", "fulll"], "method"),
    (["estimate", EXAMPLE, "--seq-len", "-3"], "seq_len"),
    (["estimate", EXAMPLE, "--gpu", "H100-SXM-81GB"], "gpu"),
    (["estimate", "no-such/model"], "model"),
    (["check", EXAMPLE, "--margin", "150"], "--margin"),
    (["estimate", EXAMPLE, "--lora-target-modules", "nothing_here"], "lora.target_modules"),
])
def test_bad_input_exits_2_naming_the_field(capsys, argv, field):
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert f"error: {field}" in err and "Traceback" not in err


def test_unknown_field_in_job_file(capsys, tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text("model: meta-llama/Llama-3.1-8B\nmicro_bach_size: 4\n")
    code, _, err = run(capsys, "estimate", str(job))
    assert code == 2 and "unknown field 'micro_bach_size'" in err and "micro_batch_size" in err


def test_models_and_gpus(capsys):
    code, out, _ = run(capsys, "models", "--search", "llama-3.1")
    assert code == 0 and "meta-llama/Llama-3.1-8B" in out and "gpt2" not in out
    code, out, _ = run(capsys, "gpus", "--json")
    assert code == 0 and any(g["id"] == "T4-16GB" for g in json.loads(out))


def test_console_script_runs():
    proc = subprocess.run([sys.executable, "-m", "memplan.cli", "check", EXAMPLE, "--accept-borderline"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "BORDERLINE (accepted)" in proc.stdout


def test_name_flags_are_not_read_as_yaml(capsys):
    """`--mixed-precision no` is the choice 'no', not YAML's false."""
    code, out, _ = run(capsys, "estimate", "openai-community/gpt2", "--method", "full", "--weight-dtype", "fp32",
                       "--mixed-precision", "no", "--seq-len", "1024", "--json")
    assert code == 0
    import json

    from memplan import estimate
    assert json.loads(out)["peak_bytes"] == estimate({"model": "openai-community/gpt2", "method": "full",
                                                      "weight_dtype": "fp32", "mixed_precision": "no",
                                                      "seq_len": 1024}).peak_bytes


TRL = str(Path(__file__).parent / "fixtures" / "configs" / "trl_sft_qlora.yaml")
#: what the TRL QLoRA config maps to (tests/test_cli_check.py checks the mapping field by field), on an L4
TRL_JOB = {"model": "Qwen/Qwen2.5-7B-Instruct", "head": "causal_lm", "method": "qlora", "weight_dtype": "nf4",
           "mixed_precision": "bf16", "double_quant": True, "optimizer": "paged_adamw_8bit",
           "lora": {"alpha": 64, "dropout": 0.05, "r": 32, "target_modules": "all-linear"}, "micro_batch_size": 4,
           "seq_len": 1024, "gradient_accumulation_steps": 8, "gradient_checkpointing": True,
           "attention": "flash_attention_2", "gpu": "L4-24GB"}


def test_estimate_and_plan_take_the_configs_users_have(capsys):
    """`--from` works in estimate and plan as in check, and a trainer config given as JOB is recognised by its keys
    and imported, never "model: required"."""
    want = memplan.estimate(TRL_JOB).model_dump(mode="json")
    code, out, err = run(capsys, "estimate", "--from", TRL, "--gpu", "L4-24GB", "--seq-len", "1024", "--json")
    assert code == 0 and json.loads(out) == want
    assert "memplan: ignored per_device_eval_batch_size" in err  # what the config sets and memplan does not use
    code, out, _ = run(capsys, "estimate", TRL, "--gpu", "L4-24GB", "--seq-len", "1024", "--json")
    assert code == 0 and json.loads(out) == want
    code, out, _ = run(capsys, "plan", TRL, "--gpu", "L4-24GB", "--seq-len", "1024", "--json")
    assert code == 0 and json.loads(out)["estimate"] == want
    code, out, _ = run(capsys, "check", TRL, "--gpu", "L4-24GB", "--seq-len", "1024")
    assert out.startswith("memplan check: BORDERLINE (fails the check; --accept-borderline passes it): "
                          "Qwen/Qwen2.5-7B-Instruct on L4-24GB")
    # a config that names no model: the message says what was read and what to add
    ds = str(Path(TRL).parent / "ds_zero3.json")
    code, out, err = run(capsys, "estimate", ds)
    assert code == 2 and f"none of the configs (deepspeed:{ds}) names the model; give --model ID" in err
