"""The two engines on 50 small configurations (tests/trace/crosscheck_configs.py): 13 architectures (mixture of
experts and multi-head latent attention among them), every method, checkpointing on and off, eager and sdpa, AMP and
pure bf16, AdamW (fused / foreach), 8-bit and paged AdamW, SGD, Adafactor, inference.

The target is agreement of peak allocated within TARGET_PCT. The trace runs the real code and matches the stored
CUDA runs to about 1% (docs/accuracy-trace.md), so where the engines disagree the formula is the one to fix.
KNOWN_GAPS records, per configuration still outside the target, the disagreement measured today rounded up to a
whole percent: the test fails if a gap grows (the formula drifted further), and also if it closes (then the entry
must be deleted, so that the target applies again).
"""

from __future__ import annotations

import pytest

from memplan.estimate import estimate
from tests.trace.crosscheck_configs import CONFIGS, compared_bytes, traced

TARGET_PCT = 2.0
#: formula vs trace today, |%| rounded up, for the configurations outside TARGET_PCT (see the issue-5 note)
KNOWN_GAPS: dict[str, float] = {
    # MLA prefill of DeepSeek-V2's attention (its complex-number rotary) and shared experts: 3.2% short, not found yet
    "deepseekv2-infer-bf16": 4.0,
    # LoRA on experts: the grouped_mm's per-route tensors the backward holds beside the merged stacks' gradient
    "qwen3moe-lora-all": 4.0,
}


def test_enough_configurations():
    archs = {job["model_config"]["model_type"] for _, job in CONFIGS}
    methods = {job.get("method", "lora") for _, job in CONFIGS if job.get("task") != "inference"}
    assert len(CONFIGS) >= 40 and len(archs) >= 8
    assert {"full", "lora", "qlora", "prompt_tuning", "prefix_tuning", "ia3"} <= methods
    assert {job.get("optimizer", "adamw") for _, job in CONFIGS} >= {"adamw", "adamw_8bit", "sgd", "adafactor"}


@pytest.mark.parametrize("name,job", CONFIGS, ids=[n for n, _ in CONFIGS])
def test_formula_agrees_with_trace(name, job):
    traced_bytes = compared_bytes(traced(name))
    formula = compared_bytes(estimate(job))
    diff_pct = 100 * (formula - traced_bytes) / traced_bytes
    bound = KNOWN_GAPS.get(name, TARGET_PCT)
    assert abs(diff_pct) <= bound, f"{name}: formula {diff_pct:+.1f}% from the trace (allowed {bound:g}%)"
    if name in KNOWN_GAPS:
        assert abs(diff_pct) > TARGET_PCT, f"{name} now agrees within {TARGET_PCT}%: delete it from KNOWN_GAPS"
