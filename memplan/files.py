"""Reading the files users give (job specs, trainer configs, config.json): one mapping per file, or a SpecError
naming the file and what is wrong with it, never a traceback. Bounded: the file's size, YAML aliases (a 489-byte
alias bomb once expanded to 1.46 GB) and nesting depth."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from memplan.spec import MAX_DEPTH, SpecError, shape_problem

MAX_FILE_BYTES = 16 * 2**20
#: YAML aliases one file may use (real trainer configs use a handful of anchors)
MAX_YAML_ALIASES = 100


class _BoundedLoader(yaml.SafeLoader):
    """yaml.SafeLoader that counts alias uses while composing and stops past MAX_YAML_ALIASES."""

    aliases_used = 0

    def compose_node(self, parent, index):  # type: ignore[override]
        if self.check_event(yaml.AliasEvent):
            self.aliases_used += 1
            if self.aliases_used > MAX_YAML_ALIASES:
                raise yaml.YAMLError(f"more than {MAX_YAML_ALIASES} YAML aliases (an alias bomb?)")
        return super().compose_node(parent, index)


def parse_text(text: str, name: str, as_json: bool = False) -> Any:
    """JSON (as_json) or YAML (which reads JSON too) text to Python, bounded in aliases and depth; SpecError
    naming `name` otherwise."""
    try:
        if as_json:
            data = json.loads(text)
        else:
            data = yaml.load(text, Loader=_BoundedLoader)  # noqa: S506 - a SafeLoader subclass
    except json.JSONDecodeError as exc:
        raise SpecError([(name, f"is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or (str(exc).splitlines() or ["?"])[0]
        raise SpecError([(name, f"is not valid YAML: {problem}{where}")]) from None
    except RecursionError:
        raise SpecError([(name, f"is nested too deeply (more than {MAX_DEPTH} levels)")]) from None
    problem = shape_problem(data)
    if problem:
        raise SpecError([(name, problem)])
    return data


def read_text(path: str | Path) -> str:
    """A file's text: UTF-8 (a BOM is dropped), at most MAX_FILE_BYTES; SpecError naming the file otherwise."""
    name = str(path)
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise SpecError([(name, f"cannot read the file: {exc.strerror or exc}")]) from None
    if len(raw) > MAX_FILE_BYTES:
        raise SpecError([(name, f"is larger than {MAX_FILE_BYTES // 2**20} MiB: not a config file")])
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise SpecError([(name, "is UTF-16 text: save it as UTF-8 (JSON or YAML)")])
    if b"\x00" in raw:
        raise SpecError([(name, "is a binary file, not JSON or YAML text")])
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise SpecError([(name, "is not a UTF-8 text file (expected JSON or YAML)")]) from None


def read_mapping(path: str | Path, what: str = "config fields") -> dict[str, Any]:
    """The one mapping a JSON (*.json) or YAML file holds; SpecError naming the file otherwise."""
    name = str(path)
    data = parse_text(read_text(path), name, as_json=name.lower().endswith(".json"))
    if data is None:
        raise SpecError([(name, f"is empty: expected a JSON or YAML mapping of {what}")])
    if not isinstance(data, dict):
        raise SpecError([(name, f"holds a {type(data).__name__}, not a mapping of {what}")])
    return data
