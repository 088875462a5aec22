"""Engines: each turns a ResolvedJob (memplan.job) into an Estimate (memplan.result).

An engine is a module or package in this folder, found by its name (`memplan.estimate(job, engine=NAME)`, the
CLI's `--engine`), that defines

    estimate(job: ResolvedJob, progress: Callable[[str], None] | None = None) -> Estimate

and ends with memplan.result.assemble. Adding an engine is adding a module here: nothing else dispatches on the
name. Today: formula (closed-form terms), trace (the real step on fake tensors).
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import lru_cache
from typing import Callable, Protocol

from memplan.job import ResolvedJob
from memplan.result import Estimate
from memplan.spec import SpecError

Progress = Callable[[str], None]


class Engine(Protocol):
    """What an engine module provides."""

    def estimate(self, job: ResolvedJob, progress: Progress | None = None) -> Estimate: ...


@lru_cache(maxsize=1)
def names() -> tuple[str, ...]:
    """The engines in this folder, by name (a module or package whose name does not start with '_')."""
    return tuple(sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")))


def get(name: str) -> Engine:
    """The engine called `name`; a SpecError on the field `engine` naming the engines there are."""
    if name not in names():
        raise SpecError([("engine", f"unknown engine '{name}'; allowed: {', '.join(names())}")])
    return importlib.import_module(f"{__name__}.{name}")  # type: ignore[return-value]
