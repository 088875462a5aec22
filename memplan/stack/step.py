"""The step of the real job: a batch, the HF Trainer-style training loop (forward with labels, backward, clip,
optimizer step, zero_grad(set_to_none=True)) and generate(), each phase bracketed by a meter's begin/end.

The CUDA profiling harness (memplan.profiling) runs these on real tensors with its memory meter; the trace engine
(memplan.engines.trace) runs the training loop on fake tensors with its storage tracker as the meter."""

from __future__ import annotations

from typing import Any, Callable, Protocol

from memplan.spec import JobSpec
from memplan.stack.model import torch_dtype
from memplan.stack.optimizer import make_optimizer


class PhaseMeter(Protocol):
    """What the step reports to: a phase begins, a phase ends (the current one when no name is given)."""

    def begin(self, phase: str) -> None: ...

    def end(self, phase: str | None = None) -> None: ...


def make_batch(spec: JobSpec, config: Any, head: str, device: str) -> dict:
    import torch

    b, s = spec.micro_batch_size, spec.seq_len
    vocab = int(getattr(config, "vocab_size", None) or 1000)
    ids = torch.randint(0, vocab, (b, s), device=device)
    if head == "sequence_classification":
        labels = torch.randint(0, spec.num_labels, (b,), device=device)
    elif head == "token_classification":
        labels = torch.randint(0, spec.num_labels, (b, s), device=device)
    else:
        labels = ids.clone()
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


def train_steps(model: Any, spec: JobSpec, head: str, device: str, steps: int, meter: PhaseMeter,
                optimizer_factory: Callable[[JobSpec, list], Any] | None = None, batch: dict | None = None) -> None:
    """`steps` optimizer steps of `gradient_accumulation_steps` micro-steps each. The trace engine runs this same
    loop with its own optimizer factory (bitsandbytes stand-ins) and batch (no attention_mask)."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = (optimizer_factory or make_optimizer)(spec, params)
    if batch is None:
        batch = make_batch(spec, model.config, head, device)
    autocast = spec.mixed_precision != "no"
    dtype = torch_dtype(spec.mixed_precision) if autocast else None
    scaler = torch.amp.GradScaler(device) if spec.mixed_precision == "fp16" and device == "cuda" else None
    model.train()
    for step in range(steps):
        for _ in range(spec.gradient_accumulation_steps):
            meter.begin("forward")
            with torch.autocast(device, dtype=dtype, enabled=autocast):
                out = model(**batch)
            loss = out.loss / spec.gradient_accumulation_steps
            del out  # the Trainer keeps the loss only
            meter.end()
            meter.begin("backward")
            (scaler.scale(loss) if scaler else loss).backward()
            del loss
            meter.end()
        if optimizer is not None:
            meter.begin("optimizer_step")
            if scaler:
                scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            if scaler:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            meter.end()


def generate(model: Any, spec: JobSpec, device: str, meter: PhaseMeter) -> None:
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    inf = spec.inference
    vocab = int(getattr(model.config, "vocab_size", None) or 1000)
    ids = torch.randint(0, vocab, (inf.batch_size, inf.prompt_len), device=device)

    class _SplitPrefill(StoppingCriteria):
        """Called after each generated token: the first call closes the prefill phase."""

        def __init__(self):
            self.calls = 0

        def __call__(self, input_ids, scores, **kwargs):
            self.calls += 1
            if self.calls == 1:
                meter.end("prefill")
                meter.begin("decode")
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    model.eval()
    meter.begin("prefill")
    with torch.no_grad():
        if inf.max_new_tokens == 0:
            model(input_ids=ids, use_cache=True)
            meter.end("prefill")
            return
        model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=inf.max_new_tokens,
                       min_new_tokens=inf.max_new_tokens, do_sample=False, use_cache=True, pad_token_id=0,
                       stopping_criteria=StoppingCriteriaList([_SplitPrefill()]))
    meter.end("decode")
