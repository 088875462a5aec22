"""Engines: each turns a ResolvedJob (memplan.job) into an Estimate (memplan.result).

An engine is a module or package in this folder, found by its name (`memplan.estimate(job, engine=NAME)`, the
CLI's `--engine`), that defines

    estimate(job: ResolvedJob, progress: Callable[[str], None] | None = None) -> Estimate
    TASKS: tuple[str, ...]      the job tasks it estimates (default: every task)
    AUTO: bool                  whether `engine="auto"` picks it for those tasks (default: no)

and ends with memplan.result.assemble (assemble_serving for task serve). Adding an engine is adding a module here:
nothing else dispatches on the name. Today: formula (closed-form terms of training and generate()), trace (the real
step on fake tensors), serving (a serving engine's memory budget: vLLM, SGLang).
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import lru_cache
from typing import Callable, Protocol, get_args

from memplan.job import ResolvedJob
from memplan.result import Estimate
from memplan.spec import SpecError, Task

Progress = Callable[[str], None]


class Engine(Protocol):
    """What an engine module provides."""

    TASKS: tuple[str, ...]
    AUTO: bool

    def estimate(self, job: ResolvedJob, progress: Progress | None = None) -> Estimate: ...


@lru_cache(maxsize=1)
def names() -> tuple[str, ...]:
    """The engines in this folder, by name (a module or package whose name does not start with '_')."""
    return tuple(sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")))


def get(name: str) -> Engine:
    """The engine called `name`; a SpecError on the field `engine` naming the engines there are."""
    if name not in names():
        raise SpecError([("engine", f"unknown engine '{name}'; allowed: auto, {', '.join(names())}")])
    return importlib.import_module(f"{__name__}.{name}")  # type: ignore[return-value]


def tasks(engine: Engine) -> tuple[str, ...]:
    """The tasks an engine estimates: its TASKS, or every task when it names none."""
    return getattr(engine, "TASKS", get_args(Task))


def for_task(name: str, task: str) -> Engine:
    """The engine that estimates a job of `task`: `name`, or for "auto" the engine that is AUTO for the task. An
    engine that does not estimate the task is a SpecError on `engine` naming the ones that do."""
    if name == "auto":
        picked = [get(n) for n in names() if getattr(get(n), "AUTO", False) and task in tasks(get(n))]
        if picked:
            return picked[0]
        raise SpecError([("task", f"no engine estimates task '{task}'")])
    engine = get(name)
    if task not in tasks(engine):
        able = [n for n in names() if task in tasks(get(n))]
        raise SpecError([("engine", f"engine '{name}' estimates task {', '.join(tasks(engine))}, not '{task}'; "
                                    f"allowed for task '{task}': auto, {', '.join(able)}")])
    return engine
