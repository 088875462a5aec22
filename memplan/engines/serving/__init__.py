"""The serving engine: the memory budget a serving engine (vLLM, SGLang) computes at startup, per GPU.

    memplan.estimate({"task": "serve", "serving": {"engine": "vllm", ...}})   -> Estimate with `serving` set

Each serving engine is a module here named as `serving.engine` names it (vllm.py, sglang.py) that defines
`budget(job) -> Budget` from the terms (memplan.terms.serving, paged_kv, tensor_parallel); shards.py gives each
GPU's share of the weights, kv_layout.py the cache's layer groups. This package assembles the Estimate
(memplan.result.assemble_serving). Adding a serving engine is adding a module here.
"""

from __future__ import annotations

import importlib

from memplan.engines.serving.common import Budget
from memplan.job import ResolvedJob
from memplan.result import Estimate, assemble_serving
from memplan.spec import SpecError
from memplan.terms import tensor_parallel as tpt

NAME = "serving"
TASKS = ("serve",)
AUTO = True


def estimate(job: ResolvedJob, progress: object = None) -> Estimate:
    """The Estimate of a serve job from its engine's budget rules (milliseconds; `progress` is not called)."""
    info = job.info
    if info.head != "causal_lm" or info.is_encoder_decoder:
        raise SpecError([("model", f"{info.model_id} ({info.model_type}, {info.head}) is not a decoder-only causal "
                                   "LM: serving engines' budgets are modelled for those (use task 'inference' for "
                                   "generate())")])
    tp = job.spec.serving.tensor_parallel_size
    problem = tpt.tp_divisibility_problem(info.num_heads, info.num_kv_heads, tp)
    if problem:  # vLLM and SGLang assert the same (QKVParallelLinear)
        raise SpecError([("serving.tensor_parallel_size", f"{job.spec.serving.engine} cannot split "
                                                           f"{info.model_id}: {problem}")])
    rules = importlib.import_module(f"{__name__}.{job.spec.serving.engine}")
    b: Budget = rules.budget(job)
    return assemble_serving(job, b.serving, b.components, b.notes, b.non_kv_modelled_bytes)


__all__ = ["AUTO", "NAME", "TASKS", "estimate"]
