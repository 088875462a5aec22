"""Run the traced step: the real job's training loop (memplan.stack, the loop the CUDA harness runs) and
generation on the fake stack, under the storage tracker and CUDA's autocast rules."""

from __future__ import annotations

import contextlib
import warnings
from typing import Any

from memplan.spec import JobSpec
from memplan.engines.trace.tracker import StorageTracker, TraceLog

#: optimizer steps traced: states appear lazily in step 1, so the peak is in step 2 or later
TRACE_STEPS = 2


def trace_job(spec: JobSpec, attention: str, head_params: tuple[str, ...], steps: int = TRACE_STEPS,
              progress: Any = None, shortcuts: bool = True) -> TraceLog:
    """`shortcuts`: memplan.engines.trace.fastfake's shortcuts past FakeTensorMode (off only to show they change
    nothing)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from memplan import stack
    from memplan.engines.trace.build import build_meta_stack, to_fake

    # modules first imported inside the traced region would have their import-time tensors counted (and kept)
    stack.import_optimizer_modules(spec)
    model, head = build_meta_stack(spec, attention, head_params)
    fake_mode = FakeTensorMode(allow_non_fake_inputs=True)
    to_fake(model, fake_mode)
    tracker = StorageTracker(cuda_temporaries=True, shortcuts=shortcuts)
    sharding = contextlib.nullcontext()
    if spec.task == "train" and spec.parallel_engine == "fsdp":
        from memplan.engines.trace.fsdp import fake_fsdp

        sharding = fake_fsdp(model, spec, fake_mode, tracker)
    with sharding:
        return _traced(model, head, spec, steps, progress, tracker, fake_mode)


def _traced(model: Any, head: str, spec: JobSpec, steps: int, progress: Any, tracker: StorageTracker,
            fake_mode: Any) -> TraceLog:
    from memplan.engines.trace.autocast import cuda_autocast_rules
    from memplan.engines.trace.sdpa import cuda_sdpa_kernels

    for p in model.parameters():
        tracker.register(p, "weights")
    for b in model.buffers():
        tracker.register(b, "weights")
    tracker.end("load")  # the tracker starts in "load": FSDP2 may have registered a 4-bit model loaded whole
    tracker.log.trainable = sum(p.numel() for p in {id(p): p for p in model.parameters() if p.requires_grad}.values())
    if progress is not None:
        tracker.progress = progress
    hooks = [p.register_post_accumulate_grad_hook(lambda p: tracker.relabel(p.grad, "gradients"))
             for p in model.parameters() if p.requires_grad]
    try:
        with warnings.catch_warnings(), cuda_autocast_rules(), cuda_sdpa_kernels(), _no_packing(), fake_mode, tracker:
            warnings.simplefilter("ignore")
            if spec.task == "train":
                _train(model, spec, head, steps, tracker)
            else:
                _generate(model, spec, tracker)
    finally:
        for h in hooks:
            h.remove()
    return tracker.close()


@contextlib.contextmanager
def _no_packing() -> Any:
    """The traced batch has no attention_mask (see _train's `batch`), which makes transformers look for packed
    sequences in the position ids, a test of values fake tensors lack. The batch is not packed: say so."""
    from transformers import masking_utils

    original = masking_utils.find_packed_sequence_indices
    masking_utils.find_packed_sequence_indices = lambda position_ids: None
    try:
        yield
    finally:
        masking_utils.find_packed_sequence_indices = original


def _train(model: Any, spec: JobSpec, head: str, steps: int, tracker: StorageTracker) -> None:
    from memplan import stack
    from memplan.engines.trace import standins

    made: list[Any] = []

    def make_optimizer(spec: JobSpec, params: list) -> Any:
        opt = standins.make_optimizer(spec, params) or stack.make_optimizer(spec, params)
        made.append(opt)
        return opt

    # no attention_mask: transformers drops an all-ones mask after checking its values, which fake tensors do not
    # have; without one it takes the same no-padding path
    batch = stack.make_batch(spec, model.config, head, "cpu")
    batch.pop("attention_mask")

    class Meter:
        """memplan.stack's PhaseMeter over the tracker; relabels optimizer states after each step."""

        def begin(self, phase: str) -> None:
            tracker.begin(phase)

        def end(self, phase: str | None = None) -> None:
            if tracker.phase == "optimizer_step" and made and made[0] is not None:
                _relabel_states(made[0], tracker)
            tracker.end(phase)

    stack.train_steps(model, spec, head, "cpu", steps, Meter(), optimizer_factory=make_optimizer, batch=batch)
    paged = getattr(made[0], "outside_bytes", 0) if made else 0
    if paged:
        tracker.log.outside["paged_optimizer_states"] = paged


def _relabel_states(optimizer: Any, tracker: StorageTracker) -> None:
    for state in getattr(optimizer, "state", {}).values():
        for t in (state.values() if isinstance(state, dict) else [state]):
            if hasattr(t, "untyped_storage"):
                tracker.relabel(t, "optimizer_states")


def _generate(model: Any, spec: JobSpec, tracker: StorageTracker) -> None:
    """Prefill the prompt with the real cache, then the last decoding step, whose cache is the largest (each
    step's cache append is the same op, on a shorter cache). generate() keeps only the last position's logits."""
    import torch

    inf = spec.inference
    vocab = int(getattr(model.config, "vocab_size", None) or 1000)
    model.eval()
    with torch.no_grad():
        ids = torch.randint(0, vocab, (inf.batch_size, inf.prompt_len))
        tracker.begin("prefill")
        out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
        tracker.end("prefill")
        if inf.max_new_tokens == 0:
            return
        del out
        # the cache as it stands before the last token: built at once (not tracked as a phase), then one step
        total = inf.prompt_len + inf.max_new_tokens
        tracker.begin("setup")
        ids = torch.randint(0, vocab, (inf.batch_size, total - 1))
        cache = model(input_ids=ids, use_cache=True, logits_to_keep=1).past_key_values
        tracker.end("setup")
        tracker.begin("decode")
        step = torch.randint(0, vocab, (inf.batch_size, 1))
        out = model(input_ids=step, past_key_values=cache, use_cache=True)
        tracker.end("decode")
