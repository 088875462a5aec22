"""`memplan check` as a CI gate: several jobs, `--from` trainer configs, `--format`, `--summary`, exit codes.

The numbers each format prints are compared with `memplan.check.check` on the job dict the command should have
built, so a mapping that did not reach the estimate (or a format that prints other numbers) fails here.
"""

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from memplan.check import check
from memplan.cli import main

ROOT = Path(__file__).parent.parent
EXAMPLE = str(ROOT / "examples" / "llama3-8b-qlora-t4.yaml")
FIX = Path(__file__).parent / "fixtures" / "configs"
GIB = 2**30


def fx(name: str) -> str:
    return str(FIX / name)


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def example_job(**changes) -> dict:
    job = yaml.safe_load(Path(EXAMPLE).read_text())
    job.update(changes)
    return job


#: the README's example is borderline on its T4 (the usable memory inside its calibrated range); on an L4 it fits
FITS_GPU = "L4-24GB"


def fitting_job(**changes) -> dict:
    return example_job(gpu=FITS_GPU, **changes)


@pytest.fixture
def jobs(tmp_path):
    """Three job files: one that fits (the README's example on an L4), one that does not, one with a typo."""
    fits = tmp_path / "fits.yaml"
    fits.write_text(yaml.safe_dump(fitting_job()))
    too_big = tmp_path / "too-big.yaml"
    too_big.write_text(yaml.safe_dump(example_job(seq_len=8192, micro_batch_size=4)))
    typo = tmp_path / "typo.yaml"
    typo.write_text("model: Qwen/Qwen2.5-0.5B\nmethod: fulll\ngpu: A10G-24GB\n")
    return {"fits": str(fits), "too_big": str(too_big), "typo": str(typo)}


# -------------------------------------------------------------------------------- several jobs, exit codes


def test_several_jobs_one_line_each_and_the_exit_code(capsys, jobs):
    fits = check(fitting_job(), allow_path=True)
    too_big = check(example_job(seq_len=8192, micro_batch_size=4), allow_path=True)
    assert fits.fits and not too_big.fits  # the fixture really mixes the verdicts

    code, out, err = run(capsys, "check", jobs["fits"], jobs["too_big"])
    assert code == 1 and err == ""
    assert out.splitlines() == [f"memplan check: {jobs['fits']}: {fits.message}",
                                f"memplan check: {jobs['too_big']}: {too_big.message}"]

    code, out, _ = run(capsys, "check", jobs["fits"], jobs["typo"], jobs["too_big"])
    lines = out.splitlines()
    assert code == 2 and len(lines) == 3  # bad input wins, and the other jobs are still checked
    assert lines[0] == f"memplan check: {jobs['fits']}: {fits.message}"
    assert lines[1].startswith(f"memplan check: {jobs['typo']}: error: method: ") and "'fulll'" in lines[1]
    assert lines[2] == f"memplan check: {jobs['too_big']}: {too_big.message}"

    code, out, _ = run(capsys, "check", jobs["fits"], "Qwen/Qwen2.5-0.5B", "--gpu", FITS_GPU)
    assert code == 0 and len(out.splitlines()) == 2 and "Qwen2.5-0.5B: FITS: Qwen/Qwen2.5-0.5B on L4-24GB" in out


def test_field_flags_and_the_margin_apply_to_every_job(capsys, jobs):
    code, out, _ = run(capsys, "check", jobs["fits"], "Qwen/Qwen2.5-0.5B", "--gpu", "T4-16GB", "--margin", "50")
    qwen = check({"model": "Qwen/Qwen2.5-0.5B", "gpu": "T4-16GB"}, 50, allow_path=True)
    assert code == 1  # the 8B example fits only without a margin
    assert out.splitlines()[1] == f"memplan check: Qwen/Qwen2.5-0.5B: {qwen.message}"
    code, out, _ = run(capsys, "check", jobs["fits"], jobs["fits"], "--seq-len", "8192", "--micro-batch-size", "4")
    assert code == 1 and out.count("DOES NOT FIT") == 2


def test_a_single_job_prints_the_line_it_always_printed(capsys):
    code, out, _ = run(capsys, "check", EXAMPLE)
    assert code == 1 and out == f"memplan check: {check(example_job(), allow_path=True).message}\n"
    assert out.startswith("memplan check: BORDERLINE")  # the README's T4 example: usable memory inside its range


def test_no_job_is_exit_2_with_a_message(capsys):
    for argv in (["check"], ["check", "--gpu", "T4-16GB", "--margin", "10"], ["check", "--format", "json"]):
        code, out, err = run(capsys, *argv)
        assert code == 2 and out == "", argv
        assert "no job to check" in err and "--from" in err and "Traceback" not in err


def test_bad_margin_is_a_usage_error_before_any_job(capsys, jobs):
    code, out, err = run(capsys, "check", jobs["fits"], jobs["too_big"], "--margin", "100")
    assert code == 2 and out == "" and "error: --margin: must be a percentage" in err


# -------------------------------------------------------------------------------- --from


def test_from_trainer_config_reaches_the_estimate(capsys):
    """TRL SFT QLoRA config: the mapped fields (4-bit, LoRA r 32 on all linear layers, batch 4 x 4096 tokens,
    paged 8-bit AdamW ...) are what is checked; --gpu and --seq-len override the file."""
    expected = {"model": "Qwen/Qwen2.5-7B-Instruct", "head": "causal_lm", "method": "qlora", "weight_dtype": "nf4",
                "mixed_precision": "bf16", "double_quant": True, "optimizer": "paged_adamw_8bit",
                "lora": {"alpha": 64, "dropout": 0.05, "r": 32, "target_modules": "all-linear"},
                "micro_batch_size": 4, "seq_len": 1024, "gradient_accumulation_steps": 8,
                "gradient_checkpointing": True, "attention": "flash_attention_2", "gpu": "L4-24GB"}
    want = check(expected, allow_path=True)
    # the mapping matters: the model alone, or the file's own seq_len, give other peaks
    assert want.estimate.peak_bytes != check({"model": expected["model"], "gpu": "L4-24GB"}).estimate.peak_bytes
    assert want.estimate.peak_bytes != check({**expected, "seq_len": 4096}).estimate.peak_bytes

    code, out, _ = run(capsys, "check", "--from", fx("trl_sft_qlora.yaml"), "--gpu", "L4-24GB", "--seq-len", "1024",
                       "--format", "json")
    data = json.loads(out)
    (job,) = data["jobs"]
    assert code == (0 if want.passed else 1) and data["exit_code"] == code
    assert job["name"] == fx("trl_sft_qlora.yaml") and job["source_files"] == [fx("trl_sft_qlora.yaml")]
    assert job["peak_bytes"] == want.estimate.peak_bytes and job["message"] == want.message
    assert job["estimate"] == want.estimate.model_dump(mode="json")


def test_from_accelerate_config_with_model(capsys):
    expected = {"model": "meta-llama/Llama-3.1-8B", "gpu": "A100-SXM-80GB", "mixed_precision": "bf16",
                "gradient_checkpointing": True, "num_gpus": 8, "parallelism": "fsdp", "fsdp_version": 1,
                "zero_stage": 3, "offload_params": False}
    want = check(expected, allow_path=True)
    alone = check({"model": "meta-llama/Llama-3.1-8B", "gpu": "A100-SXM-80GB"}, allow_path=True)
    assert want.estimate.peak_bytes != alone.estimate.peak_bytes  # FSDP over 8 GPUs shards the states
    code, out, _ = run(capsys, "check", "--from", fx("accelerate_fsdp.yaml"), "--model", "meta-llama/Llama-3.1-8B",
                       "--gpu", "A100-SXM-80GB", "--format", "json")
    job = json.loads(out)["jobs"][0]
    assert code == 0 and job["peak_bytes"] == want.estimate.peak_bytes and job["fits"] is True
    assert job["estimate"]["params"] == want.estimate.model_dump(mode="json")["params"]


def test_from_two_configs_combined_into_one_job(capsys):
    """HF TrainingArguments + DeepSpeed ZeRO-2 offload: the "auto" values come from the trainer config."""
    expected = {"model": "Qwen/Qwen2.5-0.5B", "gpu": "A10G-24GB", "mixed_precision": "bf16", "optimizer": "adamw",
                "optimizer_impl": "foreach", "micro_batch_size": 4, "gradient_accumulation_steps": 2,
                "gradient_checkpointing": True, "zero_stage": 2, "offload_optimizer": True}
    want = check(expected, allow_path=True)
    assert want.estimate.peak_bytes != check({**expected, "offload_optimizer": False}).estimate.peak_bytes
    files = [fx("trainer_ddp.yaml"), fx("ds_zero2_offload.json")]
    code, out, _ = run(capsys, "check", "--from", files[0], "--from", f"deepspeed:{files[1]}",
                       "--model", "Qwen/Qwen2.5-0.5B", "--gpu", "A10G-24GB", "--format", "json")
    job = json.loads(out)["jobs"][0]
    assert code == (0 if want.passed else 1)
    assert job["name"] == "+".join(files) and job["source_files"] == files  # KIND: is not part of the name
    assert job["peak_bytes"] == want.estimate.peak_bytes and job["required_bytes"] == want.required_bytes
    assert {i["field"] for i in job["ignored"]} == {"zero_optimization.reduce_bucket_size",
                                                     "zero_optimization.allgather_bucket_size"}


def test_job_file_is_the_base_of_the_import(capsys):
    """A JOB file plus --from: the job file is the first source (model, GPU, GPU count), the configs fill in the
    rest, and files they reference (the trainer's `deepspeed: ds_zero3.json`) are read and listed too."""
    expected = {"model": "meta-llama/Llama-3.1-8B", "task": "train", "weight_dtype": "bf16",
                "mixed_precision": "bf16", "optimizer": "adamw", "lora": {"target_modules": ["q_proj", "v_proj"]},
                "micro_batch_size": 2, "seq_len": 2048, "gradient_accumulation_steps": 4,
                "gradient_checkpointing": True, "attention": "sdpa", "num_gpus": 8, "zero_stage": 3,
                "offload_optimizer": False, "offload_params": False, "gpu": "A100-SXM-80GB"}
    want = check(expected, allow_path=True)
    assert want.estimate.peak_bytes != check({**expected, "zero_stage": 0}).estimate.peak_bytes
    code, out, _ = run(capsys, "check", fx("memplan_job.yaml"), "--from", fx("trl_sft_full_zero3.yaml"),
                       "--format", "json")
    job = json.loads(out)["jobs"][0]
    assert code == 0 and job["name"] == fx("memplan_job.yaml")
    assert job["source_files"][:2] == [fx("memplan_job.yaml"), fx("trl_sft_full_zero3.yaml")]
    assert any(Path(f).name == "ds_zero3.json" for f in job["source_files"])
    assert job["peak_bytes"] == want.estimate.peak_bytes and job["message"] == want.message


def test_each_job_file_is_imported_with_the_same_configs(capsys, tmp_path):
    small = tmp_path / "small.yaml"
    small.write_text("model: Qwen/Qwen2.5-0.5B\ngpu: A10G-24GB\n")
    big = tmp_path / "big.yaml"
    big.write_text("model: Qwen/Qwen2.5-7B\ngpu: A10G-24GB\n")
    code, out, _ = run(capsys, "check", small, big, "--from", fx("trainer_ddp.yaml"), "--format", "json")
    data = json.loads(out)
    common = {"mixed_precision": "bf16", "optimizer": "adamw", "optimizer_impl": "foreach", "micro_batch_size": 4,
              "gradient_accumulation_steps": 2, "gradient_checkpointing": True, "gpu": "A10G-24GB"}
    for job, model in zip(data["jobs"], ["Qwen/Qwen2.5-0.5B", "Qwen/Qwen2.5-7B"]):
        assert job["peak_bytes"] == check({**common, "model": model}, allow_path=True).estimate.peak_bytes
    assert [j["name"] for j in data["jobs"]] == [str(small), str(big)]
    assert code == 1 and [j["verdict"] for j in data["jobs"]] == ["borderline", "does_not_fit"]


def test_model_id_job_with_from_sets_the_model(capsys):
    """A catalog id as JOB acts as --model does: it replaces the trainer config's model_name_or_path."""
    expected = {"model": "Qwen/Qwen2.5-0.5B", "head": "causal_lm", "method": "qlora", "weight_dtype": "nf4",
                "mixed_precision": "bf16", "double_quant": True, "optimizer": "paged_adamw_8bit",
                "lora": {"alpha": 64, "dropout": 0.05, "r": 32, "target_modules": "all-linear"},
                "micro_batch_size": 4, "seq_len": 4096, "gradient_accumulation_steps": 8,
                "gradient_checkpointing": True, "attention": "flash_attention_2", "gpu": "A100-SXM-80GB"}
    want = check(expected, allow_path=True)
    code, out, _ = run(capsys, "check", "Qwen/Qwen2.5-0.5B", "--from", fx("trl_sft_qlora.yaml"), "--gpu",
                       "A100-SXM-80GB", "--format", "json")
    job = json.loads(out)["jobs"][0]
    assert code == 0 and job["fits"] is True and job["estimate"]["model"]["id"] == "Qwen/Qwen2.5-0.5B"
    assert job["peak_bytes"] == want.estimate.peak_bytes and job["message"] == want.message


def test_conflicting_configs_exit_2_naming_both_files(capsys):
    a, b = fx("trl_sft_qlora.yaml"), fx("ds_zero2_offload.json")
    code, out, err = run(capsys, "check", "--from", a, "--from", b, "--gpu", "A100-SXM-80GB")
    assert code == 2 and "Traceback" not in out + err
    (line,) = out.splitlines()
    assert line.startswith(f"memplan check: {a}+{b}: error: optimizer: conflicting values")
    assert f"{a}: optim='paged_adamw_8bit'" in line and f"{b}: optimizer.type='AdamW'" in line


def test_job_file_conflicting_with_a_config_names_the_job_file(capsys, tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text("model: Qwen/Qwen2.5-7B-Instruct\nseq_len: 512\n")
    code, out, _ = run(capsys, "check", job, "--from", fx("trl_sft_qlora.yaml"), "--format", "json")
    (bad,) = json.loads(out)["jobs"]
    assert code == 2 and bad["fits"] is None and bad["error"].startswith("seq_len: conflicting values")
    assert f"{job}: seq_len=512" in bad["error"] and f"{fx('trl_sft_qlora.yaml')}: max_length=4096" in bad["error"]


@pytest.mark.parametrize("argv,words", [
    (["--from", fx("broken.yaml"), "--model", "gpt2"], ["broken.yaml: is not valid YAML", "line 3"]),
    (["--from", fx("unknown_format.yaml"), "--model", "gpt2"], ["unknown_format.yaml: cannot tell which kind"]),
    (["--from", fx("accelerate_fsdp.yaml")], ["model: required", "--model"]),
    (["--from", str(FIX / "no-such.json"), "--model", "gpt2"], ["no-such.json: cannot read the file"]),
    (["--from", f"trainerr:{fx('trainer_ddp.yaml')}", "--model", "gpt2"], ["unknown kind 'trainerr'"]),
])
def test_bad_from_input_is_exit_2_without_a_traceback(capsys, argv, words):
    code, out, err = run(capsys, "check", *argv)
    assert code == 2 and "Traceback" not in out + err and err == ""
    assert len(out.splitlines()) == 1 and ": error: " in out
    for w in words:
        assert w in out


def test_bad_input_in_a_subprocess_prints_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "memplan.cli", "check", "--from", fx("broken.yaml"), "no-such/x"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT, env={**os.environ,
                                                                                      "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2 and "Traceback" not in proc.stdout + proc.stderr
    assert "is not valid YAML" in proc.stdout


# -------------------------------------------------------------------------------- ignored fields


def test_ignored_fields_appear_in_text_output(capsys):
    code, out, _ = run(capsys, "check", "--from", fx("trl_sft_qlora.yaml"), "--gpu", "A100-SXM-80GB")
    lines = out.splitlines()
    assert code == 0 and lines[0].startswith("memplan check: FITS: Qwen/Qwen2.5-7B-Instruct on A100-SXM-80GB")
    assert lines[1:] == [
        f"  ignored dtype ({fx('trl_sft_qlora.yaml')}): dtype of the modules left unquantized; weight_dtype comes "
        "from the quantization",
        f"  ignored per_device_eval_batch_size ({fx('trl_sft_qlora.yaml')}): evaluation is not modelled: memplan "
        "estimates the training step (evaluation keeps no gradients or optimizer step)",
    ]
    code, out, _ = run(capsys, "check", "--from", fx("trl_sft_qlora.yaml"), "--gpu", "A100-SXM-80GB",
                       "--format", "github")
    warnings = [line for line in out.splitlines() if line.startswith("::warning")]
    assert len(warnings) == 2 and all("title=memplan%3A ignored field" in w for w in warnings)


# -------------------------------------------------------------------------------- formats


def _mixed(capsys, jobs, fmt):
    return run(capsys, "check", jobs["fits"], jobs["too_big"], jobs["typo"], "--margin", "0", "--format", fmt)


def test_json_format_parses_and_matches_check(capsys, jobs):
    code, out, _ = _mixed(capsys, jobs, "json")
    data = json.loads(out)
    assert code == 2 and data["exit_code"] == 2
    assert [j["name"] for j in data["jobs"]] == [jobs["fits"], jobs["too_big"], jobs["typo"]]
    for j, want in zip(data["jobs"], [check(fitting_job(), allow_path=True),
                                      check(example_job(seq_len=8192, micro_batch_size=4), allow_path=True)]):
        assert (j["fits"], j["peak_bytes"], j["usable_bytes"], j["headroom_bytes"], j["required_bytes"]) == (
            want.fits, want.estimate.peak_bytes, want.usable_bytes, want.headroom_bytes, want.required_bytes)
    bad = data["jobs"][2]
    assert bad["fits"] is None and bad["peak_bytes"] is None and bad["error"].startswith("method: ")


def test_junit_format_parses_and_matches_check(capsys, jobs):
    code, out, _ = _mixed(capsys, jobs, "junit")
    root = ET.fromstring(out.encode())
    assert code == 2 and root.tag == "testsuites"
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("3", "1", "1")
    cases = root.findall("./testsuite/testcase")
    assert [c.get("name") for c in cases] == [jobs["fits"], jobs["too_big"], jobs["typo"]]
    for case, want in zip(cases, [check(fitting_job(), allow_path=True),
                                  check(example_job(seq_len=8192, micro_batch_size=4), allow_path=True)]):
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        assert int(props["peak_bytes"]) == want.estimate.peak_bytes
        assert int(props["headroom_bytes"]) == want.headroom_bytes and int(props["usable_bytes"]) == want.usable_bytes
        assert (case.find("failure") is None) == want.passed
    assert cases[2].find("error") is not None and cases[2].find("error").get("type") == "BadInput"


def test_github_format_and_text_format_carry_the_same_verdicts(capsys, jobs):
    fits = check(fitting_job(), allow_path=True)
    too_big = check(example_job(seq_len=8192, micro_batch_size=4), allow_path=True)
    code, out, _ = _mixed(capsys, jobs, "github")
    lines = out.splitlines()
    assert code == 2 and len(lines) == 3
    assert lines[0] == (f"::notice file={jobs['fits']},title=memplan%3A fits::"
                        + fits.message.replace("%", "%25"))
    assert lines[1] == (f"::error file={jobs['too_big']},title=memplan%3A does not fit::"
                        + too_big.message.replace("%", "%25"))
    assert lines[2].startswith(f"::error file={jobs['typo']},title=memplan%3A bad input::method: ")
    code, out, _ = _mixed(capsys, jobs, "text")
    assert code == 2 and fits.message in out and too_big.message in out and len(out.splitlines()) == 3


def test_unknown_format_is_refused(capsys, jobs):
    code, out, err = run(capsys, "check", jobs["fits"], "--format", "yaml")
    assert code == 2 and out == "" and "--format" in err and "junit" in err


def test_json_flag_keeps_the_one_job_shape(capsys, jobs):
    want = check(fitting_job(), allow_path=True)
    code, out, _ = run(capsys, "check", jobs["fits"], "--json")
    data = json.loads(out)
    assert code == 0 and data["check"] == {"fits": True, "verdict": "fits", "passed": True, "margin_pct": 0.0,
                                           "required_bytes": want.required_bytes}
    assert {k: v for k, v in data.items() if k != "check"} == want.estimate.model_dump(mode="json")
    code, out, err = run(capsys, "check", jobs["fits"], jobs["too_big"], "--json")
    assert code == 2 and out == "" and "--format json" in err
    code, out, err = run(capsys, "check", jobs["typo"], "--json")
    assert code == 2 and out == "" and "memplan: error: method: " in err
    code, out, err = run(capsys, "check", EXAMPLE, "--json", "--format", "json")
    assert code == 2 and out == "" and "not allowed with" in err


# -------------------------------------------------------------------------------- --summary


def test_summary_appends_the_markdown_table(capsys, jobs, tmp_path):
    summary = tmp_path / "sub" / "summary.md"
    summary.parent.mkdir()
    fits = check(fitting_job(), allow_path=True)
    too_big = check(example_job(seq_len=8192, micro_batch_size=4), allow_path=True)
    code, out, _ = run(capsys, "check", jobs["fits"], jobs["too_big"], "--summary", summary)
    assert code == 1 and len(out.splitlines()) == 2  # stdout is still the report
    text = summary.read_text(encoding="utf-8")
    assert text.startswith("## memplan check: ❌ 1 of 2 jobs pass\n")
    assert "| job | GPU | peak GiB | usable GiB | headroom GiB | verdict |" in text
    assert (f"| {jobs['fits']} | L4-24GB | {fits.estimate.peak_bytes / GIB:.2f} | {fits.usable_bytes / GIB:.2f} | "
            f"{fits.headroom_bytes / GIB:.2f} | ✅ fits |") in text
    assert (f"| {jobs['too_big']} | T4-16GB | {too_big.estimate.peak_bytes / GIB:.2f} | "
            f"{too_big.usable_bytes / GIB:.2f} | {too_big.headroom_bytes / GIB:.2f} | ❌ does not fit |") in text

    code, _, _ = run(capsys, "check", jobs["typo"], "--summary", summary, "--format", "json")
    again = summary.read_text(encoding="utf-8")
    assert code == 2 and again.startswith(text) and again.count("## memplan check:") == 2
    assert "## memplan check: ❌ 0 of 1 job pass, 1 bad input" in again and "❌ bad input: method: " in again


def test_summary_to_an_unwritable_path_is_exit_2(capsys, tmp_path):
    code, out, err = run(capsys, "check", EXAMPLE, "--summary", tmp_path / "missing-dir" / "s.md")
    assert code == 2 and "BORDERLINE" in out and "--summary: cannot write" in err and "Traceback" not in err


# -------------------------------------------------------------------------------- end to end


def test_exit_codes_end_to_end_in_a_subprocess(jobs, tmp_path):
    summary = tmp_path / "summary.md"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "memplan.cli", "check", jobs["fits"], jobs["too_big"],
                           "--format", "junit", "--summary", str(summary)],
                          capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert proc.returncode == 1, proc.stderr
    root = ET.fromstring(proc.stdout.encode())
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("2", "1", "0")
    assert "❌ 1 of 2 jobs pass" in summary.read_text(encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "memplan.cli", "check", jobs["fits"], jobs["typo"]],
                          capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert proc.returncode == 2 and "Traceback" not in proc.stdout + proc.stderr
    assert len(proc.stdout.splitlines()) == 2 and "FITS" in proc.stdout.splitlines()[0]


def test_a_trainer_config_with_bf16_on_a_t4_is_bad_input(capsys):
    """The trainer config says bf16: true; a T4 has no bf16 (the HF Trainer refuses it there): exit 2 naming the
    field and what to use, not a memory verdict."""
    code, out, _ = run(capsys, "check", "--from", fx("trainer_ddp.yaml"), "--model", "Qwen/Qwen2.5-0.5B",
                       "--gpu", "T4-16GB")
    assert code == 2 and "error: mixed_precision: T4-16GB (compute capability 7.5) has no bf16" in out
    assert "use mixed_precision fp16" in out
