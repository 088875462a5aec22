"""The job's stack in the estimate: the allocator setting, the CUDA context per step kind, the host memory a node
can hold (memplan.terms.overhead, memplan.result.host_memory_plausible)."""

import pytest

import memplan
from memplan import catalog
from memplan.plan import plan
from memplan.result import host_memory_plausible
from memplan.terms import overhead as ov

README_T4 = {"model": "meta-llama/Llama-3.1-8B", "method": "qlora", "optimizer": "paged_adamw_8bit",
             "seq_len": 2048, "gradient_checkpointing": True, "gpu": "T4-16GB"}
OFFLOADED_70B = {"model": "meta-llama/Llama-3.1-70B", "method": "full", "num_gpus": 8, "zero_stage": 3,
                 "offload_optimizer": True, "offload_params": True}


def test_expandable_segments_term_on_the_readme_job():
    """The README's T4 QLoRA job: its loss block is one fp32 [2048, 128,256] tensor, 1,050,673,152 B; expandable
    segments remove exactly that from the default allocator's fragmentation."""
    default = memplan.estimate(README_T4)
    expandable = memplan.estimate({**README_T4, "allocator": "expandable_segments"})
    loss_block = 4 * 2048 * 128_256
    assert default.components["allocator_fragmentation"] - expandable.components["allocator_fragmentation"] \
        == loss_block == 1_050_673_152
    assert int(default.peak_allocated_bytes * ov.FRAGMENTATION_PRIOR) \
        == expandable.components["allocator_fragmentation"]
    assert any("expandable segments" in a and "not yet measured" in a for a in expandable.assumptions)


def test_planner_offers_expandable_segments_where_it_makes_the_job_fit():
    """A job over the line by less than its loss block: turning on expandable segments is a change that fits, at
    no speed cost, and it is listed with the exact bytes it saves."""
    base = memplan.estimate(README_T4)
    # a GPU 0.5 GiB short of the estimate's peak
    job = {**README_T4, "gpu": {"memory_gib": (base.peak_bytes - 2**29 + ov.DRIVER_RESERVED_PRIOR_BYTES) / 2**30}}
    assert not memplan.estimate(job).fits
    result = plan(job)
    change = next(c for c in result.changes if c.fields == {"allocator": "expandable_segments"})
    assert change.fits and change.slowdown == 1.0
    assert change.saves_bytes == 1_050_673_152
    # a change that fits at no speed cost ranks before every change that fits with a slowdown
    fitting = [c for c in result.changes if c.fits]
    slower = [i for i, c in enumerate(fitting) if c.slowdown is not None and c.slowdown > 1.0]
    assert slower and fitting.index(change) < min(slower)


def test_no_expandable_segments_advice_when_it_is_on():
    job = {**README_T4, "allocator": "expandable_segments"}
    assert not [c for c in plan(job).changes if "allocator" in c.fields]


def test_bad_allocator_names_the_field_and_values():
    with pytest.raises(memplan.SpecError) as exc:
        memplan.estimate({**README_T4, "allocator": "expandable"})
    (field, message), = exc.value.errors
    assert field == "allocator" and "'default'" in message and "'expandable_segments'" in message


@pytest.mark.parametrize("job, modules_mib", [
    (README_T4, 148),
    ({"model": "meta-llama/Llama-3.1-8B", "task": "inference"}, 100),
    ({"model": "meta-llama/Llama-3.1-8B", "task": "inference", "weight_dtype": "int8"}, 164),
])
def test_cuda_context_follows_the_step(job, modules_mib):
    """profiles/: 618.8 MiB after init in every run; at the peak 148 MiB more in training, 100 MiB in generate(),
    164 MiB with LLM.int8 weights (docstring of memplan.terms.overhead.STEP_MODULES_BYTES)."""
    e = memplan.estimate(job)
    assert e.components["cuda_context"] == 648_871_936 + modules_mib * 2**20
    assert f"CUDA context {round((648_871_936 + modules_mib * 2**20) / 2**20)} MiB" in " ".join(e.assumptions)


def test_host_memory_beyond_any_common_node_is_flagged():
    """Llama-3.1-70B, ZeRO-3 with parameters and optimizer offloaded on 8 GPUs of one node: DeepSpeed's count is
    70,553,706,496 * 18 * 1.5 = 1,904,950,075,392 B (1,774 GiB); a T4 node holds at most 384 GiB (g4dn.metal), an
    H100 node 2,048 GiB (p5.48xlarge)."""
    t4 = memplan.estimate({**OFFLOADED_70B, "gpu": "T4-16GB"})
    h100 = memplan.estimate({**OFFLOADED_70B, "gpu": "H100-SXM-80GB"})
    assert t4.host_bytes == h100.host_bytes == 1_904_950_075_392
    assert t4.host_memory_plausible is False and h100.host_memory_plausible is True
    assert any("more than the 384 GiB the largest common T4-16GB node has" in a for a in t4.assumptions)
    assert memplan.estimate(README_T4).host_memory_plausible is None  # no offload: nothing to flag
    assert memplan.estimate({**OFFLOADED_70B, "gpu": "RTX-4090-24GB"}).host_memory_plausible is None  # no figure


def test_host_memory_plausible_rule():
    assert host_memory_plausible(0, 2**40) is None
    assert host_memory_plausible(10, None) is None
    assert host_memory_plausible(2**40, 2**40) is True
    assert host_memory_plausible(2**40 + 1, 2**40) is False


def test_every_node_host_figure_has_a_source():
    with_figure = [g for g in catalog.list_gpus() if g.node_host_memory_bytes]
    assert len(with_figure) >= 10
    for g in with_figure:
        assert g.node_host_memory_bytes % 2**30 == 0 and g.node_host_memory_bytes >= 256 * 2**30
        assert "GiB" in g.node_host_memory_source or "TB" in g.node_host_memory_source
