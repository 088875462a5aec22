"""The house rules of shared/DESIGN.md, read from the code with `ast`: no import cycle among memplan/ and api/
modules, no module imports another module's private (`_name`) names, and engines are found by name, so that a new
engine is one new module."""

from __future__ import annotations

import ast
import sys
import textwrap
from pathlib import Path

import pytest

import memplan
from memplan import engines
from memplan.spec import SpecError

ROOT = Path(__file__).resolve().parents[1]


def _modules(*folders: str) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file under the folders."""
    out = {}
    for folder in folders:
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(name: str, path: Path) -> list[tuple[str, str | None, int]]:
    """(module imported, name imported from it or None, line) for every import in the file, at any depth (an
    import inside a function closes a cycle as surely as one at the top)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, None, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            out += [(base, a.name, node.lineno) for a in node.names]
    return out


def _private(part: str) -> bool:
    return part.startswith("_") and not part.startswith("__")


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the modules of `modules` it imports (`from pkg import mod` names the module mod)."""
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for target, imported, _ in _imports(name, path):
            full = f"{target}.{imported}" if imported else target
            hit = full if full in modules else target if target in modules else None
            if hit is not None and hit != name:
                graph[name].add(hit)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def private_uses(modules: dict[str, Path], known: dict[str, Path]) -> list[str]:
    """`from m import _x`, `m._x` on an imported module m, and imports of a `_module` from outside its package."""
    found = []
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        aliases: dict[str, str] = {}
        for target, imported, line in _imports(name, path):
            full = f"{target}.{imported}" if imported else target
            parts = full.split(".")
            for i, part in enumerate(parts):
                owner = ".".join(parts[:i])
                if (_private(part) and parts[0] in ("memplan", "api") and not name.startswith(owner + ".")
                        and name != owner):
                    found.append(f"{path.relative_to(ROOT)}:{line}: imports {full}")
                    break
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ("memplan", "api"):
                for a in node.names:
                    if f"{node.module}.{a.name}" in known:
                        aliases[a.asname or a.name] = f"{node.module}.{a.name}"
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name in known and a.asname:
                        aliases[a.asname] = a.name
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and _private(node.attr)):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: uses {aliases[node.value.id]}.{node.attr}")
    return found


def test_no_import_cycle():
    found = cycles(import_graph(_modules("memplan", "api")))
    assert found == [], f"import cycles: {found}"


def test_no_private_names_across_modules():
    known = _modules("memplan", "api")
    callers = {**known, **_modules("bench"), **_modules("scripts")}
    assert private_uses(callers, known) == []


def test_the_checks_can_fail():
    """A cycle and each kind of private use, in made-up modules, are caught."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    known = {"memplan.x": ROOT / "memplan/x.py", "memplan.pkg._inner": ROOT / "memplan/pkg/_inner.py"}
    tmp = ROOT / "tests" / "_layout_probe.py"
    tmp.write_text(textwrap.dedent("""
        from memplan.x import _hidden, public
        from memplan.pkg._inner import thing
        from memplan import x
        x._other()
    """))
    try:
        found = private_uses({"tests._layout_probe": tmp}, known)
    finally:
        tmp.unlink()
    assert [f.split(": ", 1)[1] for f in found] == ["imports memplan.x._hidden", "imports memplan.pkg._inner.thing",
                                                     "uses memplan.x._other"]


def test_engines_are_found_by_name():
    assert engines.names() == ("formula", "serving", "trace")
    for name in engines.names():
        assert callable(engines.get(name).estimate)
    with pytest.raises(SpecError) as err:
        memplan.estimate({"model": "openai-community/gpt2", "seq_len": 128}, engine="formul")
    assert err.value.errors[0][0] == "engine" and "auto, formula, serving, trace" in err.value.errors[0][1]


def test_a_new_engine_is_one_new_module(tmp_path, monkeypatch):
    """An engine module dropped into memplan/engines' search path is found by its name and gets the resolved job;
    nothing else is edited."""
    (tmp_path / "echo.py").write_text(textwrap.dedent("""
        from memplan.result import Phase, assemble

        def estimate(job, progress=None):
            return assemble(job, [Phase("load", {"weights": 1234})], 0, {}, lambda allocated: 0, engine="echo")
    """))
    monkeypatch.setattr(engines, "__path__", [*engines.__path__, str(tmp_path)])
    engines.names.cache_clear()
    try:
        e = memplan.estimate({"model": "openai-community/gpt2", "seq_len": 128, "gpu": "T4-16GB"}, engine="echo")
        assert "echo" in engines.names()
    finally:
        sys.modules.pop("memplan.engines.echo", None)
        engines.names.cache_clear()
    assert (e.engine, e.peak_allocated_bytes, e.gpu.id, e.model.model_type) == ("echo", 1234, "T4-16GB", "gpt2")
