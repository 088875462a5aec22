"""The optimizer the spec names, as the real job makes it: torch's AdamW / SGD with the implementation memplan
resolves (memplan.job.resolve_optimizer_impl), transformers' Adafactor, Lion, bitsandbytes' 8-bit and paged
AdamW."""

from __future__ import annotations

from typing import Any

from memplan.job import resolve_optimizer_impl
from memplan.spec import JobSpec


class Lion:
    """Lion (Chen et al. 2023, arXiv:2302.06675, Algorithm 2) as lion-pytorch writes it: one momentum buffer like
    each parameter, updated tensor by tensor."""

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99)):
        import torch

        self.params, self.lr, self.betas = list(params), lr, betas
        self.state: dict[int, Any] = {}
        self._torch = torch

    def step(self):
        b1, b2 = self.betas
        with self._torch.no_grad():
            for p in self.params:
                if p.grad is None:
                    continue
                m = self.state.setdefault(id(p), self._torch.zeros_like(p))
                update = (m * b1 + p.grad * (1 - b1)).sign_()
                p.add_(update, alpha=-self.lr)
                m.mul_(b2).add_(p.grad, alpha=1 - b2)

    def zero_grad(self, set_to_none=True):
        for p in self.params:
            p.grad = None


def import_optimizer_modules(spec: JobSpec) -> None:
    """Import the modules make_optimizer imports on first use. transformers.optimization (Adafactor) pulls in PEFT,
    whose tuners build small tensors when their modules load (peft/tuners/loha/layer.py): a real job has them on
    the CPU long before its first step, so a caller that counts allocations (the trace engine) imports first."""
    if spec.optimizer == "adafactor":
        import transformers.optimization  # noqa: F401


def make_optimizer(spec: JobSpec, params: list):
    """The optimizer the spec names, with the implementation memplan assumes (resolve_optimizer_impl)."""
    impl = resolve_optimizer_impl(spec)
    flags = {"fused": impl == "fused", "foreach": impl == "foreach"}
    name = spec.optimizer
    if name == "none":
        return None
    import torch

    if name == "adamw":
        return torch.optim.AdamW(params, lr=1e-5, **flags)
    if name in ("sgd", "sgd_momentum"):
        return torch.optim.SGD(params, lr=1e-3, momentum=0.9 if name == "sgd_momentum" else 0.0, **flags)
    if name == "adafactor":
        from transformers.optimization import Adafactor

        return Adafactor(params, lr=1e-3, relative_step=False, scale_parameter=False, warmup_init=False)
    if name == "lion":
        return Lion(params)
    import bitsandbytes as bnb

    return {"adamw_8bit": bnb.optim.AdamW8bit, "paged_adamw_8bit": bnb.optim.PagedAdamW8bit,
            "paged_adamw_32bit": bnb.optim.PagedAdamW32bit}[name](params, lr=1e-5)
