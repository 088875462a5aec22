"""`memplan plan`: the text and JSON outputs carry the library's plan, and bad targets name the flag."""

import json

from memplan.cli import main
from memplan.estimate import estimate
from memplan.plan import plan

JOB = {"model": "openai-community/gpt2", "method": "full", "seq_len": 1024, "gpu": "T4-16GB"}
ARGS = ["plan", "openai-community/gpt2", "--method", "full", "--seq-len", "1024", "--gpu", "T4-16GB",
        "--global-batch", "16"]


def test_json_is_the_library_plan_and_reestimates(capsys):
    assert main([*ARGS, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    expected = plan(JOB, {"global_batch_size": 16}).model_dump(mode="json")
    assert [o["label"] for o in out["configurations"]] == [o["label"] for o in expected["configurations"]]
    first = out["configurations"][0]
    assert estimate(first["job"]).peak_bytes == first["peak_bytes"]
    assert first["micro_batch_size"] * first["gradient_accumulation_steps"] * first["num_gpus"] == 16


def test_text_lists_the_best_configuration(capsys):
    assert main(ARGS) == 0
    text = capsys.readouterr().out
    best = plan(JOB, {"global_batch_size": 16}).configurations[0]
    assert "configurations that fit (best first):" in text
    assert f"  {best.label:44s} {best.peak_bytes / 2**30:9.2f}" in text


def test_bad_target_names_the_flag(capsys):
    assert main([*ARGS[:-1], "7", "--target-gpus", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("memplan: error: --global-batch: 7 is not a multiple of num_gpus 2")
