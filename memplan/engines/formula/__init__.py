"""The formula engine: the closed-form phases of a step, each adding terms from memplan.terms (milliseconds).

    static.py      what a job holds independent of batch and sequence, summed once per model and method
    activations.py which activation, logits and loss terms a training step holds
    placement.py   weights, gradients, optimizer states and buffers per GPU under data parallelism / ZeRO
    training.py    the phases of a training step
    inference.py   the phases of generate()
"""

from __future__ import annotations

from memplan.engines.formula.inference import inference_phases
from memplan.engines.formula.static import static_terms
from memplan.engines.formula.training import training_phases
from memplan.job import ResolvedJob
from memplan.result import Estimate, assemble
from memplan.terms import overhead as ov

NAME = "formula"
TASKS = ("train", "inference")
AUTO = True


def estimate(job: ResolvedJob, progress: object = None) -> Estimate:
    """The Estimate of the job from the closed-form terms; `progress` is not called (the engine takes
    milliseconds)."""
    spec, info = job.spec, job.info
    if spec.task == "inference":
        phases, trainable = inference_phases(info, spec, job.attention, job.notes), 0
        outside, loss_block, host = {}, 0, 0
    else:
        st = static_terms(info, spec)
        trainable = st.tr.count
        phases, outside, loss_block, host = training_phases(info, spec, st, job.attention, job.notes)
    return assemble(job, phases, trainable, outside,
                    lambda allocated: ov.fragmentation_bytes(allocated, loss_block, allocator=spec.allocator),
                    engine=NAME, host_bytes=host)
