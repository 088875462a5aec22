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
