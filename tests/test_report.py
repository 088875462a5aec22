"""memplan.report: the CI-gate formats of `memplan check` (text, JSON, JUnit, GitHub workflow commands, Markdown
summary) on real check results, plus the GitHub Action, the pre-commit hooks and docs/ci.md's example outputs.

`python -m tests.test_report` (from the repository root) rewrites docs/ci.md's generated example outputs (after a change to the estimate).
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from memplan.check import CheckResult, check
from memplan.report import (CheckedJob, escape_data, escape_property, exit_code, job_dict, markdown_summary, render,
                            workflow_command)
from memplan.spec import SpecError

ROOT = Path(__file__).resolve().parent.parent
GIB = 2**30
FIT_JOB = {"model": "openai-community/gpt2", "method": "lora", "seq_len": 512, "gpu": "T4-16GB"}
SHORT_JOB = {"model": "openai-community/gpt2", "method": "lora", "seq_len": 512, "gpu": {"memory_gib": 1}}
BAD_JOB = {"model": "openai-community/gpt2", "method": "fulll", "gpu": "T4-16GB"}


def spec_error_text(exc: SpecError) -> str:
    """A SpecError as the CLI prints it, one `field: message` line per bad field."""
    return "\n".join(f"{loc}: {msg}" if loc else msg for loc, msg in exc.errors)


@pytest.fixture(scope="module")
def fit_result() -> CheckResult:
    r = check(FIT_JOB)
    assert r.fits
    return r


@pytest.fixture(scope="module")
def short_result() -> CheckResult:
    r = check(SHORT_JOB, margin_pct=5)
    assert not r.fits
    return r


@pytest.fixture(scope="module")
def bad_error() -> str:
    with pytest.raises(SpecError) as err:
        check(BAD_JOB)
    return spec_error_text(err.value)


@pytest.fixture
def fit(fit_result) -> CheckedJob:
    return CheckedJob("jobs/fit.yaml", ["jobs/fit.yaml"], fit_result, None)


@pytest.fixture
def short(short_result) -> CheckedJob:
    return CheckedJob("gpt2-tiny", [], short_result, None,
                      ignored=[("train/args.json", "report_to", "not a memory setting")])


@pytest.fixture
def bad(bad_error) -> CheckedJob:
    return CheckedJob("jobs/bad.yaml", ["jobs/bad.yaml"], None, bad_error)


# ---------------------------------------------------------------- the data model and the exit codes


@pytest.mark.parametrize("kinds,code", [
    ("", 0), ("f", 0), ("ff", 0), ("s", 1), ("fs", 1), ("sf", 1), ("e", 2), ("fe", 2), ("se", 2), ("es", 2),
    ("fse", 2),
])
def test_exit_code_every_combination(kinds, code, fit, short, bad):
    jobs = [{"f": fit, "s": short, "e": bad}[k] for k in kinds]
    assert exit_code(jobs) == code
    assert json.loads(render(jobs, "json"))["exit_code"] == code


def test_checked_job_needs_exactly_one_of_result_and_error(fit_result):
    with pytest.raises(ValueError, match="exactly one"):
        CheckedJob("x", [], None, None)
    with pytest.raises(ValueError, match="exactly one"):
        CheckedJob("x", [], fit_result, "bad")
    assert CheckedJob("x", [], fit_result, None).ignored == []


def test_unknown_format_is_refused(fit):
    with pytest.raises(ValueError, match="allowed: text, json, junit, github"):
        render([fit], "xml")


# ---------------------------------------------------------------- text


def test_text_single_job_is_the_check_message(fit, fit_result):
    assert render([fit], "text") == f"memplan check: {fit_result.message}\n"
    assert fit_result.message.startswith("FITS: openai-community/gpt2 on T4-16GB: peak ")


def test_text_many_jobs_names_each_lists_ignored_and_errors(fit, short, bad, fit_result, short_result, bad_error):
    assert bad_error.startswith("method: Input should be 'full', 'lora'") and bad_error.endswith("got 'fulll'")
    assert render([fit, short, bad], "text").splitlines() == [
        f"memplan check: jobs/fit.yaml: {fit_result.message}",
        f"memplan check: gpt2-tiny: {short_result.message}",
        "  ignored report_to (train/args.json): not a memory setting",
        f"memplan check: jobs/bad.yaml: error: {bad_error}",
    ]


def test_text_multiline_error_gives_one_prefixed_line_each(fit_result):
    job = CheckedJob("j.yaml", ["j.yaml"], None, "lora.r: must be >= 1\nseq_len: must be >= 1")
    assert render([job], "text") == ("memplan check: j.yaml: error: lora.r: must be >= 1\n"
                                      "memplan check: j.yaml: error: seq_len: must be >= 1\n")


# ---------------------------------------------------------------- json


def test_json_values_are_the_check_results(fit, short, bad, fit_result, short_result, bad_error):
    doc = json.loads(render([fit, short, bad], "json"))
    assert list(doc) == ["exit_code", "jobs"] and doc["exit_code"] == 2
    keys = ["name", "source_files", "fits", "verdict", "passed", "peak_bytes", "range_low_bytes", "range_high_bytes",
            "usable_bytes", "headroom_bytes", "margin_pct", "required_bytes", "peak_phase", "message", "ignored",
            "error", "estimate"]
    assert [list(j) for j in doc["jobs"]] == [keys, keys, keys]
    for j, r in zip(doc["jobs"][:2], (fit_result, short_result)):
        assert j["fits"] is r.fits and j["verdict"] == r.verdict and j["passed"] is r.passed
        assert j["peak_bytes"] == r.estimate.peak_bytes
        assert (j["range_low_bytes"], j["range_high_bytes"]) == (r.estimate.range.low_bytes, r.estimate.range.high_bytes)
        assert j["usable_bytes"] == r.usable_bytes == r.estimate.gpu.usable_bytes
        assert j["headroom_bytes"] == r.headroom_bytes
        assert j["required_bytes"] == r.required_bytes
        assert j["margin_pct"] == r.margin_pct
        assert j["peak_phase"] == r.estimate.peak_phase
        assert j["message"] == r.message and j["error"] is None
        assert j["estimate"] == r.estimate.model_dump(mode="json")
    assert doc["jobs"][0]["fits"] is True and doc["jobs"][1]["fits"] is False
    assert doc["jobs"][1]["margin_pct"] == 5 and doc["jobs"][1]["required_bytes"] == (
        short_result.estimate.peak_bytes + int(short_result.usable_bytes * 5 / 100))
    assert doc["jobs"][0]["ignored"] == [] and doc["jobs"][1]["ignored"] == [
        {"file": "train/args.json", "field": "report_to", "reason": "not a memory setting"}]
    err = doc["jobs"][2]
    assert err["name"] == "jobs/bad.yaml" and err["source_files"] == ["jobs/bad.yaml"]
    assert err["error"] == err["message"] == bad_error
    assert all(err[k] is None for k in ("fits", "peak_bytes", "usable_bytes", "headroom_bytes", "margin_pct",
                                        "required_bytes", "peak_phase", "estimate"))


def test_job_dict_matches_the_rendered_json(short):
    assert json.loads(render([short], "json"))["jobs"][0] == json.loads(json.dumps(job_dict(short)))


# ---------------------------------------------------------------- junit


def _cases(xml: str) -> tuple[ET.Element, dict[str, ET.Element]]:
    root = ET.fromstring(xml.encode())
    suite = root.find("testsuite")
    assert suite is not None
    return suite, {c.get("name"): c for c in suite.findall("testcase")}


def test_junit_parses_back_to_the_check_results(fit, short, bad, fit_result, short_result, bad_error):
    xml = render([fit, short, bad], "junit")
    assert xml.startswith("<?xml version='1.0' encoding='utf-8'?>\n<testsuites ")
    root = ET.fromstring(xml.encode())
    assert root.tag == "testsuites" and root.get("name") == "memplan check"
    suite, cases = _cases(xml)
    assert suite.get("name") == "memplan check"
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("3", "1", "1")
    assert list(cases) == ["jobs/fit.yaml", "gpt2-tiny", "jobs/bad.yaml"]
    for name, r in (("jobs/fit.yaml", fit_result), ("gpt2-tiny", short_result)):
        case = cases[name]
        assert case.get("classname") == r.estimate.gpu.id
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        assert int(props["peak_bytes"]) == r.estimate.peak_bytes
        assert int(props["usable_bytes"]) == r.usable_bytes
        assert int(props["headroom_bytes"]) == r.headroom_bytes
        assert int(props["required_bytes"]) == r.required_bytes
        assert float(props["margin_pct"]) == r.margin_pct and props["peak_phase"] == r.estimate.peak_phase
        out = case.find("system-out").text
        for term, value in r.estimate.components.items():
            if value:
                assert re.search(rf"^{term}\s+{value / GIB:.2f}$", out, re.M), term
        assert re.search(rf"^peak \(nvidia-smi\)\s+{r.estimate.peak_bytes / GIB:.2f}$", out, re.M)
        assert case.find("error") is None
    assert cases["jobs/fit.yaml"].get("classname") == "T4-16GB"
    assert cases["gpt2-tiny"].get("classname") == "custom-1GiB"
    assert cases["jobs/fit.yaml"].find("failure") is None
    failure = cases["gpt2-tiny"].find("failure")
    assert failure.get("message") == failure.text == short_result.message
    assert "ignored report_to (train/args.json): not a memory setting" in cases["gpt2-tiny"].find("system-out").text
    error = cases["jobs/bad.yaml"].find("error")
    assert error.get("message") == error.text == bad_error and cases["jobs/bad.yaml"].find("failure") is None
    assert cases["jobs/bad.yaml"].get("classname") == "memplan" and cases["jobs/bad.yaml"].get("file") == "jobs/bad.yaml"


def test_junit_escapes_markup_and_drops_control_characters():
    nasty = 'a <b> & "c" \x1b[31m\x00 end'
    job = CheckedJob('<job "1"> & co', ["dir/<x>.yaml"], None, nasty)
    suite, cases = _cases(render([job], "junit"))
    case = cases['<job "1"> & co']
    assert case.get("file") == "dir/<x>.yaml"
    assert case.find("error").get("message") == 'a <b> & "c" \ufffd[31m\ufffd end'


# ---------------------------------------------------------------- github


def test_github_escaping_rules_exactly():
    assert escape_data("50% a:b, c\nnext\r\nend") == "50%25 a:b, c%0Anext%0D%0Aend"
    assert escape_property("50% a:b, c\nnext\r\nend") == "50%25 a%3Ab%2C c%0Anext%0D%0Aend"
    assert escape_data("%0A") == "%250A"  # the escapes of the input are not read as escapes
    assert workflow_command("error", "m", file=None, title="t") == "::error title=t::m"
    assert workflow_command("notice", "m") == "::notice::m"


def test_github_bad_input_message_and_file_escaped():
    job = CheckedJob("x", ["cfg/a:b,c.yaml"], None, "seq_len: 100% wrong, see:\nline two\r\nend")
    assert render([job], "github") == (
        "::error file=cfg/a%3Ab%2Cc.yaml,title=memplan%3A bad input::"
        "seq_len: 100%25 wrong, see:%0Aline two%0D%0Aend\n")


def test_github_annotations_for_real_results(fit, short, bad, fit_result, short_result, bad_error):
    assert "%" in fit_result.message and "," in short_result.message  # "(70.3%)", "(…%, margin 5%)"
    lines = render([fit, short, bad], "github").splitlines()
    assert lines == [
        "::notice file=jobs/fit.yaml,title=memplan%3A fits::" + fit_result.message.replace("%", "%25"),
        "::error title=memplan%3A does not fit::gpt2-tiny: " + short_result.message.replace("%", "%25"),
        "::warning file=train/args.json,title=memplan%3A ignored field::report_to: not a memory setting",
        "::error file=jobs/bad.yaml,title=memplan%3A bad input::" + bad_error.replace("%", "%25"),
    ]
    assert render([], "github") == ""


# ---------------------------------------------------------------- markdown summary


def test_markdown_summary_table_and_details(fit, short, bad, fit_result, short_result):
    md = markdown_summary([fit, short, bad])
    lines = md.splitlines()
    assert lines[0] == "## memplan check: ❌ 1 of 3 jobs pass, 1 bad input"
    assert lines[2] == "| job | GPU | peak GiB | usable GiB | headroom GiB | verdict |"

    def gib(n: int) -> str:
        return f"{n / GIB:.2f}"

    r, s = fit_result, short_result
    assert lines[4] == (f"| jobs/fit.yaml | T4-16GB | {gib(r.estimate.peak_bytes)} | {gib(r.usable_bytes)} | "
                        f"{gib(r.headroom_bytes)} | ✅ fits |")
    assert lines[5] == (f"| gpt2-tiny | custom-1GiB | {gib(s.estimate.peak_bytes)} | {gib(s.usable_bytes)} | "
                        f"{gib(s.headroom_bytes)} | ❌ does not fit (margin 5%) |")
    assert gib(s.usable_bytes) == "0.50" and s.headroom_bytes < 0 and gib(s.headroom_bytes).startswith("-")
    assert lines[6].startswith("| jobs/bad.yaml | – | – | – | – | ❌ bad input: method: Input should be ")
    blocks = re.findall(r"<details><summary>(.*?)</summary>\n(.*?)</details>", md, re.S)
    assert [b[0] for b in blocks] == [
        "jobs/fit.yaml: openai-community/gpt2 on T4-16GB, peak in the backward phase",
        "gpt2-tiny: openai-community/gpt2 on custom-1GiB, peak in the backward phase"]
    for (_, body), res in zip(blocks, (r, s)):
        rows = {k: v for k, v in re.findall(r"^\| (\w+) \| (-?[\d.]+) \|$", body, re.M) if k != "usable"}
        assert rows == {k: gib(v) for k, v in res.estimate.components.items() if v}
        assert f"| **peak (nvidia-smi)** | **{gib(res.estimate.peak_bytes)}** |" in body
    assert f"| required (peak + 5% of usable) | {gib(s.required_bytes)} |" in blocks[1][1]
    assert "required" not in blocks[0][1] and "Ignored" not in blocks[0][1]
    assert "- <code>report_to</code> in <code>train/args.json</code>: not a memory setting" in blocks[1][1]
    assert markdown_summary([fit]).splitlines()[0] == "## memplan check: ✅ 1 of 1 job pass"


def test_markdown_summary_escapes_cells():
    job = CheckedJob("a|b <c>", [], None, "x | y\nz")
    assert markdown_summary([job]).splitlines()[4] == "| a\\|b &lt;c&gt; | – | – | – | – | ❌ bad input: x \\| y<br>z |"


# ---------------------------------------------------------------- the GitHub Action


ACTION = yaml.safe_load((ROOT / "action.yml").read_text())


def test_action_inputs_outputs_and_defaults():
    inputs = ACTION["inputs"]
    assert {k: v.get("default") for k, v in inputs.items()} == {
        "jobs": "", "from": "", "model": "", "gpu": "", "margin": "0", "accept-borderline": "false",
        "format": "github", "summary": "true",
        "output-file": "", "working-directory": ".", "python-version": "3.11", "install": "",
        "torch-index-url": "https://download.pytorch.org/whl/cpu"}
    assert ACTION["runs"]["using"] == "composite"
    assert set(ACTION["outputs"]) == {"fits", "exit-code"}
    install = next(s for s in ACTION["runs"]["steps"] if s.get("name") == "Install memplan")
    assert install["env"]["ACTION_PATH"] == "${{ github.action_path }}" and '"$ACTION_PATH"' in install["run"]
    for step in ACTION["runs"]["steps"]:  # inputs reach scripts only through env (no script injection)
        assert "${{" not in step.get("run", "")


def _run_check_step(tmp_path: Path, rc: int, inputs: dict[str, str]) -> tuple[int, list[str], dict[str, str], str]:
    """Run the action's check step with a stub `memplan` that records its argv and exits with rc."""
    step = next(s for s in ACTION["runs"]["steps"] if s.get("id") == "check")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    stub = bindir / "memplan"
    stub.write_text(f'#!/bin/bash\nprintf "%s\\n" "$@" > "{tmp_path}/argv"\necho "::notice::report"\nexit {rc}\n')
    stub.chmod(stub.stat().st_mode | stat.S_IEXEC)
    work = tmp_path / "work"
    (work / "memplan-jobs").mkdir(parents=True)
    for name in ("a.yaml", "b.yaml"):
        (work / "memplan-jobs" / name).write_text("model: openai-community/gpt2\n")
    env = {"PATH": f"{bindir}:{os.environ['PATH']}", "GITHUB_OUTPUT": str(tmp_path / "output"),
           "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md")}
    for key, spec in ACTION["inputs"].items():
        env_name = "INPUT_" + key.upper().replace("-", "_")
        if env_name in step["env"]:
            env[env_name] = inputs.get(key, spec.get("default", ""))
    proc = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]], cwd=work,
                          env=env, capture_output=True, text=True)
    argv = (tmp_path / "argv").read_text().splitlines()
    outputs = dict(line.split("=", 1) for line in (tmp_path / "output").read_text().splitlines())
    return proc.returncode, argv, outputs, proc.stdout


@pytest.mark.parametrize("rc,fits", [(0, "true"), (1, "false"), (2, "false")])
def test_action_check_step_passes_the_exit_code_and_sets_fits(tmp_path, rc, fits):
    code, argv, outputs, stdout = _run_check_step(tmp_path, rc, {"jobs": "memplan-jobs/*.yaml"})
    assert code == rc and outputs == {"fits": fits, "exit-code": str(rc)}
    assert stdout == "::notice::report\n"
    assert argv == ["check", "memplan-jobs/a.yaml", "memplan-jobs/b.yaml", "--margin", "0", "--format", "github",
                    "--summary", str(tmp_path / "summary.md")]


def test_action_check_step_maps_every_input_to_its_flag(tmp_path):
    code, argv, outputs, _ = _run_check_step(
        tmp_path, 1, {"jobs": "", "from": "train/sft.yaml\npeft:train/adapter.json", "model": "Qwen/Qwen2.5-7B",
                      "gpu": "L4-24GB", "margin": "10", "accept-borderline": "true", "format": "junit",
                      "summary": "false", "output-file": "report.xml"})
    assert code == 1 and outputs["fits"] == "false"
    assert argv == ["check", "--from", "train/sft.yaml", "--from", "peft:train/adapter.json", "--model",
                    "Qwen/Qwen2.5-7B", "--gpu", "L4-24GB", "--margin", "10", "--format", "junit",
                    "--accept-borderline"]
    assert (tmp_path / "work" / "report.xml").read_text() == "::notice::report\n"


def test_action_inputs_reach_the_step_env():
    step = next(s for s in ACTION["runs"]["steps"] if s.get("id") == "check")
    for key in ("jobs", "from", "model", "gpu", "margin", "format", "summary", "output-file"):
        assert step["env"]["INPUT_" + key.upper().replace("-", "_")] == f"${{{{ inputs.{key} }}}}"


# ---------------------------------------------------------------- pre-commit hooks and the example workflow


def test_pre_commit_hooks():
    hooks = {h["id"]: h for h in yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())}
    assert set(hooks) == {"memplan-check", "memplan-check-system"}
    assert hooks["memplan-check"]["language"] == "python" and hooks["memplan-check-system"]["language"] == "system"
    for hook in hooks.values():
        assert hook["entry"] == "memplan check" and hook["pass_filenames"] is True
        files = re.compile(hook["files"])
        for path in ("memplan-jobs/a.yaml", "memplan-jobs/sub/b.yml", "ml/memplan-jobs/c.json",
                     "train/llama.memplan.yaml", "llama.memplan.json"):
            assert files.search(path), path
        for path in ("jobs/a.yaml", ".github/workflows/ci.yml", "memplan-jobs/readme.md", "memplan/catalog/x.json",
                     "train/config.yaml", "memplan-jobs.yaml"):
            assert not files.search(path), path


def test_example_workflow_uses_the_action_inputs():
    wf = yaml.safe_load((ROOT / "examples" / "github-workflow.yml").read_text())
    steps = wf["jobs"]["memory"]["steps"]
    uses = [s for s in steps if str(s.get("uses", "")).startswith("OWNER/memplan@")]
    assert len(uses) == 2
    for s in uses:
        assert set(s["with"]) <= set(ACTION["inputs"]), set(s["with"]) - set(ACTION["inputs"])
    assert uses[0]["with"]["jobs"] == "memplan-jobs/*.yaml" and uses[1]["with"]["format"] == "junit"
    docs = (ROOT / "docs" / "ci.md").read_text()
    assert (ROOT / "examples" / "github-workflow.yml").read_text() in docs


# ---------------------------------------------------------------- docs/ci.md's example outputs

DOCS = ROOT / "docs" / "ci.md"
GENERATED = re.compile(r"(<!-- generated: (\w+) -->\n```\w*\n)(.*?)(```)", re.S)
EXAMPLE_JOB = re.compile(r"<!-- example-job: (\S+) -->\n```yaml\n(.*?)```", re.S)
README_JOB = "examples/llama3-8b-qlora-t4.yaml"
ESTIMATE_CUT = "<the full estimate JSON, as `memplan estimate --json` prints it>"


def docs_jobs(docs: str) -> list[CheckedJob]:
    """The run docs/ci.md shows: the README's example job, then the job files written out in docs/ci.md."""
    specs = [(README_JOB, yaml.safe_load((ROOT / README_JOB).read_text()))]
    specs += [(name, yaml.safe_load(body)) for name, body in EXAMPLE_JOB.findall(docs)]
    jobs = []
    for name, spec in specs:
        try:
            jobs.append(CheckedJob(name, [name], check(spec), None))
        except SpecError as exc:
            jobs.append(CheckedJob(name, [name], None, spec_error_text(exc)))
    return jobs


def docs_outputs(jobs: list[CheckedJob]) -> dict[str, str]:
    doc = json.loads(render(jobs, "json"))
    for j in doc["jobs"]:
        if j["estimate"] is not None:
            j["estimate"] = ESTIMATE_CUT
    return {"text": render(jobs, "text"), "json": json.dumps(doc, indent=2, ensure_ascii=False) + "\n",
            "junit": render(jobs, "junit"), "github": render(jobs, "github"), "summary": markdown_summary(jobs),
            "exit": f"{exit_code(jobs)}\n"}


def rewrite_docs() -> str:
    docs = DOCS.read_text()
    outputs = docs_outputs(docs_jobs(docs))
    return GENERATED.sub(lambda m: m.group(1) + outputs[m.group(2)] + m.group(4), docs)


def test_docs_example_outputs_are_current():
    docs = DOCS.read_text()
    found = {m.group(2): m.group(3) for m in GENERATED.finditer(docs)}
    jobs = docs_jobs(docs)
    assert [j.name for j in jobs] == [README_JOB, "memplan-jobs/qwen7b-lora-l4.yaml", "memplan-jobs/typo.yaml"]
    # one of each: borderline (the README's T4 example), does not fit, bad input
    assert [j.result.verdict if j.result else None for j in jobs] == ["borderline", "does_not_fit", None]
    outputs = docs_outputs(jobs)
    assert set(found) == set(outputs)
    for kind, text in outputs.items():
        assert found[kind] == text, f"docs/ci.md's {kind} example is stale: run `python -m tests.test_report`"


if __name__ == "__main__":
    DOCS.write_text(rewrite_docs())
    print(f"rewrote the generated examples in {DOCS}")
