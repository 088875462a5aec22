"""What `memplan check` prints for people and CI systems: the verdicts of one run (one or more jobs) as text, JSON,
JUnit XML, GitHub Actions workflow commands, and a Markdown summary (for $GITHUB_STEP_SUMMARY).

Pure functions: they take `CheckedJob`s and return strings; the CLI does the reading, printing and writing. No
formulas: every number comes from `memplan.check.check`'s `CheckResult` (and its `Estimate`).

Exit codes of a run (`exit_code`): 0 every job passes (fits, or borderline with --accept-borderline), 1 at least one
does not fit or is borderline, 2 at least one job is bad input (bad input wins over does-not-fit, so a typo never
passes or fails a gate silently as a memory verdict).
"""

from __future__ import annotations

import html
import json
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any, Iterable

from memplan.check import CheckResult
from memplan.terms.dtypes import GIB

FORMATS = ("text", "json", "junit", "github")
SUITE_NAME = "memplan check"
#: JUnit classname of a job that has no GPU (bad input)
NO_GPU_CLASSNAME = "memplan"


@dataclass
class CheckedJob:
    """One job of a `memplan check` run: its verdict (`result`) or why it could not be checked (`error`).

    name: what the user named the job (the job file, the catalog model id, or the `--from` files joined by '+').
    source_files: the files the job came from (job spec, trainer / PEFT / DeepSpeed / accelerate / axolotl configs);
        the first is where GitHub annotations point. Empty for a job given as a catalog model id.
    result: the check's result, None for bad input.
    error: the bad-input message for this job (one line per bad field), None when `result` is set.
    ignored: (file, source_field, reason) for each field of an imported config that the estimate does not use.
    """

    name: str
    source_files: list[str]
    result: CheckResult | None
    error: str | None
    ignored: list[tuple[str, str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if (self.result is None) == (self.error is None):
            raise ValueError(f"CheckedJob {self.name!r}: give exactly one of result and error")

    @property
    def passed(self) -> bool | None:
        return None if self.result is None else self.result.passed


def exit_code(jobs: Iterable[CheckedJob]) -> int:
    """2 if any job is bad input, else 1 if any job does not pass (does not fit, or borderline not accepted), else 0
    (also for no jobs)."""
    jobs = list(jobs)
    if any(j.error is not None for j in jobs):
        return 2
    if any(j.result is not None and not j.result.passed for j in jobs):
        return 1
    return 0


def render(jobs: Iterable[CheckedJob], fmt: str) -> str:
    """The run in one of FORMATS (text, json, junit, github), ending with a newline; text and github give "" for no
    jobs."""
    jobs = list(jobs)
    if fmt == "text":
        return render_text(jobs)
    if fmt == "json":
        return render_json(jobs)
    if fmt == "junit":
        return render_junit(jobs)
    if fmt == "github":
        return render_github(jobs)
    raise ValueError(f"unknown format {fmt!r}; allowed: {', '.join(FORMATS)}")


def _gib(n: int) -> str:
    return f"{n / GIB:.2f}"


def _nonzero_components(result: CheckResult) -> list[tuple[str, int]]:
    """The estimate's terms at the peak, largest first, zero terms left out."""
    return [(k, v) for k, v in sorted(result.estimate.components.items(), key=lambda kv: (-kv[1], kv[0])) if v]


# ---------------------------------------------------------------- text


def render_text(jobs: list[CheckedJob]) -> str:
    """One line per job, `memplan check: MESSAGE` (with the job's name after `memplan check: ` when the run has
    more than one job), each ignored field on an indented line after it; bad input as
    `memplan check: NAME: error: MESSAGE` (one line per line of the message)."""
    lines: list[str] = []
    many = len(jobs) > 1
    for j in jobs:
        if j.error is not None:
            for part in j.error.splitlines() or [""]:
                lines.append(f"memplan check: {j.name}: error: {part}")
        else:
            assert j.result is not None
            lines.append(f"memplan check: {j.name + ': ' if many else ''}{j.result.message}")
        for file, src, reason in j.ignored:
            lines.append(f"  ignored {src} ({file}): {reason}")
    return "".join(line + "\n" for line in lines)


# ---------------------------------------------------------------- json


def job_dict(j: CheckedJob) -> dict[str, Any]:
    """One job's JSON object; every key is present for every job (None where it does not apply)."""
    r = j.result
    return {
        "name": j.name,
        "source_files": list(j.source_files),
        "fits": None if r is None else r.fits,
        "verdict": None if r is None else r.verdict,
        "passed": None if r is None else r.passed,
        "peak_bytes": None if r is None else r.estimate.peak_bytes,
        "range_low_bytes": None if r is None else r.estimate.range.low_bytes,
        "range_high_bytes": None if r is None else r.estimate.range.high_bytes,
        "usable_bytes": None if r is None else r.usable_bytes,
        "headroom_bytes": None if r is None else r.headroom_bytes,
        "margin_pct": None if r is None else r.margin_pct,
        "required_bytes": None if r is None else r.required_bytes,
        "peak_phase": None if r is None else r.estimate.peak_phase,
        "message": j.error if r is None else r.message,
        "ignored": [{"file": f, "field": s, "reason": why} for f, s, why in j.ignored],
        "error": j.error,
        "estimate": None if r is None else r.estimate.model_dump(mode="json"),
    }


def render_json(jobs: list[CheckedJob]) -> str:
    """{"exit_code": n, "jobs": [job_dict, ...]}, indented, keys in a fixed order."""
    return json.dumps({"exit_code": exit_code(jobs), "jobs": [job_dict(j) for j in jobs]}, indent=2,
                      ensure_ascii=False) + "\n"


# ---------------------------------------------------------------- junit

# XML 1.0 allows no C0 control characters other than tab, LF and CR (ElementTree would write them as they are and
# produce a file no parser reads), nor U+FFFE / U+FFFF or lone surrogates
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def _xml_text(s: str) -> str:
    return _XML_INVALID.sub("\ufffd", s)


def _breakdown(j: CheckedJob) -> str:
    """The component breakdown in GiB (system-out of the JUnit testcase)."""
    r = j.result
    lines = []
    if j.source_files:
        lines.append("source files: " + ", ".join(j.source_files))
    if r is not None:
        e = r.estimate
        lines.append(f"{e.model.id} on {e.gpu.id}: peak in the {e.peak_phase} phase")
        comps = _nonzero_components(r)
        width = max([len("peak (nvidia-smi)")] + [len(k) for k, _ in comps])
        lines.append(f"{'term'.ljust(width)}  {'GiB':>9}")
        lines += [f"{k.ljust(width)}  {v / GIB:9.2f}" for k, v in comps]
        lines.append(f"{'peak (nvidia-smi)'.ljust(width)}  {e.peak_bytes / GIB:9.2f}")
        lines.append(f"{'range low'.ljust(width)}  {e.range.low_bytes / GIB:9.2f}")
        lines.append(f"{'range high'.ljust(width)}  {e.range.high_bytes / GIB:9.2f}")
        lines.append(f"{'usable'.ljust(width)}  {r.usable_bytes / GIB:9.2f}")
        lines.append(f"{'headroom'.ljust(width)}  {r.headroom_bytes / GIB:9.2f}")
        if r.margin_pct:
            lines.append(f"required with a {r.margin_pct:g}% margin: {r.required_bytes / GIB:.2f} GiB")
    for file, src, reason in j.ignored:
        lines.append(f"ignored {src} ({file}): {reason}")
    return "\n".join(lines) + "\n"


def render_junit(jobs: list[CheckedJob]) -> str:
    """JUnit XML: <testsuites> holding one <testsuite name="memplan check">, one <testcase> per job (name = the
    job's name, classname = the GPU id), <failure> when the job does not pass (type DoesNotFit or Borderline),
    <error> for bad input, the verdict and the peak / range / usable / headroom / required bytes as <properties>,
    and the component breakdown in <system-out>."""
    failures = sum(1 for j in jobs if j.result is not None and not j.result.passed)
    errors = sum(1 for j in jobs if j.error is not None)
    counts = {"tests": str(len(jobs)), "failures": str(failures), "errors": str(errors), "skipped": "0",
              "time": "0"}
    root = ET.Element("testsuites", {"name": SUITE_NAME, **counts})
    suite = ET.SubElement(root, "testsuite", {"name": SUITE_NAME, **counts})
    for j in jobs:
        r = j.result
        attrs = {"name": _xml_text(j.name), "classname": r.estimate.gpu.id if r is not None else NO_GPU_CLASSNAME,
                 "time": "0"}
        if j.source_files:
            attrs["file"] = _xml_text(j.source_files[0])
        case = ET.SubElement(suite, "testcase", attrs)
        if r is not None:
            props = ET.SubElement(case, "properties")
            for key, value in (("verdict", r.verdict), ("peak_bytes", r.estimate.peak_bytes),
                               ("range_low_bytes", r.estimate.range.low_bytes),
                               ("range_high_bytes", r.estimate.range.high_bytes), ("usable_bytes", r.usable_bytes),
                               ("headroom_bytes", r.headroom_bytes), ("required_bytes", r.required_bytes),
                               ("margin_pct", format(r.margin_pct, "g")), ("peak_phase", r.estimate.peak_phase),
                               ("model", r.estimate.model.id)):
                ET.SubElement(props, "property", {"name": key, "value": _xml_text(str(value))})
            if not r.passed:
                kind = "Borderline" if r.verdict == "borderline" else "DoesNotFit"
                fail = ET.SubElement(case, "failure", {"message": _xml_text(r.message), "type": kind})
                fail.text = _xml_text(r.message)
        else:
            assert j.error is not None
            err = ET.SubElement(case, "error", {"message": _xml_text(j.error), "type": "BadInput"})
            err.text = _xml_text(j.error)
        ET.SubElement(case, "system-out").text = _xml_text(_breakdown(j))
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


# ---------------------------------------------------------------- github

# The escaping of workflow commands, from GitHub's docs "Workflow commands for GitHub Actions"
# (https://docs.github.com/en/actions/reference/workflow-commands-for-github-actions) and its reference
# implementation, actions/toolkit packages/core/src/command.ts (escapeData, escapeProperty): in the message
# (data) % -> %25, CR -> %0D, LF -> %0A; in property values (file=..., title=...) also : -> %3A and , -> %2C.
# '%' first, so that the escapes themselves are not escaped again.


def escape_data(s: str) -> str:
    return s.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(s: str) -> str:
    return escape_data(s).replace(":", "%3A").replace(",", "%2C")


def workflow_command(command: str, message: str, **properties: str | None) -> str:
    """`::command key=value,...::message` with GitHub's escaping; properties that are None are left out."""
    props = ",".join(f"{k}={escape_property(v)}" for k, v in properties.items() if v is not None)
    return f"::{command}{' ' + props if props else ''}::{escape_data(message)}"


def render_github(jobs: list[CheckedJob]) -> str:
    """One annotation per job: `::error` (title "memplan: does not fit" or "memplan: borderline") when it does not
    pass, `::notice` (title "memplan: fits") when it fits, `::warning` (title "memplan: borderline") for an accepted
    borderline job, `::error` (title "memplan: bad input") for bad input; then one `::warning`
    (title "memplan: ignored field") per ignored field of an imported config, pointing at that config. An
    annotation points at the job's first source file; a job without one (a catalog model id) has its name put
    before the message instead."""
    lines: list[str] = []
    for j in jobs:
        file = j.source_files[0] if j.source_files else None
        prefix = "" if file is not None else f"{j.name}: "
        if j.error is not None:
            lines.append(workflow_command("error", prefix + j.error, file=file, title="memplan: bad input"))
        else:
            assert j.result is not None
            title = {"fits": "memplan: fits", "borderline": "memplan: borderline",
                     "does_not_fit": "memplan: does not fit"}[j.result.verdict]
            command = "notice" if j.result.verdict == "fits" else "warning" if j.result.passed else "error"
            lines.append(workflow_command(command, prefix + j.result.message, file=file, title=title))
        for ifile, src, reason in j.ignored:
            lines.append(workflow_command("warning", f"{src}: {reason}", file=ifile or None,
                                          title="memplan: ignored field"))
    return "".join(line + "\n" for line in lines)


# ---------------------------------------------------------------- markdown summary


def _md_cell(s: str) -> str:
    """Text safe inside a Markdown table cell and inline HTML: HTML escaped, pipes escaped, newlines as <br>."""
    return html.escape(s, quote=False).replace("|", "\\|").replace("\r\n", "\n").replace("\n", "<br>")


def _verdict(j: CheckedJob) -> str:
    if j.error is not None:
        return "❌ bad input: " + _md_cell(j.error)
    assert j.result is not None
    margin = f" (margin {j.result.margin_pct:g}%)" if j.result.margin_pct else ""
    if j.result.verdict == "borderline":
        return ("⚠️ borderline, accepted" if j.result.passed else "❌ borderline") + margin
    return ("✅ fits" if j.result.verdict == "fits" else "❌ does not fit") + margin


def markdown_summary(jobs: Iterable[CheckedJob]) -> str:
    """A Markdown summary for $GITHUB_STEP_SUMMARY: a heading with the counts, a table (job, GPU, peak GiB, usable
    GiB, headroom GiB, verdict), then per checked job a collapsible <details> with its component breakdown in GiB
    and the ignored fields of its imported configs."""
    jobs = list(jobs)
    fit = sum(1 for j in jobs if j.passed)
    bad = sum(1 for j in jobs if j.error is not None)
    icon = "✅" if exit_code(jobs) == 0 else "❌"
    heading = f"{icon} {fit} of {len(jobs)} job{'s' if len(jobs) != 1 else ''} pass" + (
        f", {bad} bad input" if bad else "")
    out = [f"## memplan check: {heading}", "",
           "| job | GPU | peak GiB | usable GiB | headroom GiB | verdict |",
           "|---|---|---:|---:|---:|---|"]
    for j in jobs:
        r = j.result
        if r is None:
            out.append(f"| {_md_cell(j.name)} | – | – | – | – | {_verdict(j)} |")
        else:
            out.append(f"| {_md_cell(j.name)} | {_md_cell(r.estimate.gpu.id)} | {_gib(r.estimate.peak_bytes)} | "
                       f"{_gib(r.usable_bytes)} | {_gib(r.headroom_bytes)} | {_verdict(j)} |")
    out.append("")
    for j in jobs:
        r = j.result
        if r is None and not j.ignored:
            continue
        head = _md_cell(j.name)
        if r is not None:
            e = r.estimate
            head += f": {_md_cell(e.model.id)} on {_md_cell(e.gpu.id)}, peak in the {_md_cell(e.peak_phase)} phase"
        out += [f"<details><summary>{head}</summary>", ""]
        if j.source_files and j.source_files != [j.name]:
            out += ["Source files: " + ", ".join(f"<code>{_md_cell(f)}</code>" for f in j.source_files), ""]
        if r is not None:
            out += ["| term | GiB |", "|---|---:|"]
            out += [f"| {_md_cell(k)} | {_gib(v)} |" for k, v in _nonzero_components(r)]
            out.append(f"| **peak (nvidia-smi)** | **{_gib(r.estimate.peak_bytes)}** |")
            out.append(f"| range | {_gib(r.estimate.range.low_bytes)} to {_gib(r.estimate.range.high_bytes)} |")
            out.append(f"| usable | {_gib(r.usable_bytes)} |")
            if r.margin_pct:
                out.append(f"| required (peak + {r.margin_pct:g}% of usable) | {_gib(r.required_bytes)} |")
            out.append("")
        if j.ignored:
            out += ["Ignored fields (not used by the estimate):", ""]
            out += [f"- <code>{_md_cell(s)}</code> in <code>{_md_cell(f)}</code>: {_md_cell(why)}"
                    for f, s, why in j.ignored]
            out.append("")
        out += ["</details>", ""]
    return "\n".join(out).rstrip("\n") + "\n"
