"""Count the bytes a step really allocates, without allocating them: a TorchDispatchMode that sees every op's
outputs (on fake tensors), registers each new storage once, and subtracts it when the storage is freed.

Method (shared/reference/memory-mechanics.md part B1): one storage is one allocation of the CUDA caching allocator,
so its size is `nbytes` rounded up to 512 (c10/cuda/CUDACachingAllocator.cpp `round_size`, kMinBlockSize); views
and in-place results share their input's storage and cost nothing; a weakref finalizer on the storage fires when
the last tensor using it dies, which is when the real allocator gets the block back. On the tiny Llama the count
matched the CPU allocator's profiler events to 0.03 MiB.

Where a CUDA kernel allocates a temporary its CPU counterpart does not, the tracker adds it around the op, sized
by memplan.terms: softmax's backward (`cuda_softmax_backward_tmp_bytes`).

Speed: the tracker sits above FakeTensorMode and sees every op first; memplan.engines.trace.fastfake answers device
queries, views and repeated functional ops without FakeTensorMode's per-op cache-key hashing (the same tensors).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any

from memplan.terms.activations import cuda_softmax_backward_tmp_bytes
from memplan.terms.dtypes import allocation_bytes

CATEGORIES = ("weights", "gradients", "optimizer_states", "activations", "temporaries")
#: where a new storage is counted until it is relabelled (a gradient, an optimizer state)
PROGRESS_EVERY = 5000
PHASE_CATEGORY = {"forward": "activations", "prefill": "activations", "decode": "activations"}


@dataclass
class Event:
    """One allocation (`nbytes` > 0, the storage's size before rounding) or free (`nbytes` < 0) of storage `key`."""

    key: int
    nbytes: int
    phase: str


@dataclass
class PhasePeak:
    name: str
    peak_bytes: int
    breakdown: dict[str, int]


@dataclass
class TraceLog:
    peak_bytes: int = 0
    peak_phase: str = ""
    breakdown: dict[str, int] = field(default_factory=dict)
    phases: list[PhasePeak] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    ops: int = 0
    trainable: int = 0  # trainable parameters (elements) of the traced model
    outside: dict[str, int] = field(default_factory=dict)  # bytes outside PyTorch's allocator (paged memory)


def _mode_base() -> type:
    from torch.utils._python_dispatch import TorchDispatchMode

    return TorchDispatchMode


class StorageTracker(_mode_base()):  # type: ignore[misc]
    """Live bytes per category, the running peak, per-phase peaks and the alloc/free log."""

    def __init__(self, cuda_temporaries: bool = False, shortcuts: bool = True) -> None:
        """`cuda_temporaries`: add the temporaries CUDA kernels allocate where the CPU kernels that run do not.
        `shortcuts`: take memplan.engines.trace.fastfake's shortcuts past FakeTensorMode (the same tensors, sooner)."""
        import torch

        from memplan.engines.trace.fastfake import FakeShortcuts

        super().__init__()
        self._softmax_backward = torch.ops.aten._softmax_backward_data.default if cuda_temporaries else None
        self._shortcuts = FakeShortcuts() if shortcuts else None
        self.live: dict[int, tuple[int, str]] = {}
        self.by_category = dict.fromkeys(CATEGORIES, 0)
        self.current = 0
        self.log = TraceLog()
        self.phase = "load"
        self._phase_peak = 0
        self._phase_breakdown: dict[str, int] = {}
        self._finalizers: list[Any] = []
        self.active = True
        self.progress: Any = None  # called with a message every PROGRESS_EVERY ops

    # -- registration
    def register(self, tensor: Any, category: str) -> None:
        """Count `tensor`'s storage under `category` if it is new (a view or an in-place result is not); a DTensor
        by its local shard."""
        tensor = getattr(tensor, "_local_tensor", tensor)
        storage = tensor.untyped_storage()
        key = id(storage)
        if key in self.live:
            return
        nbytes = storage.nbytes()
        size = allocation_bytes(nbytes)
        self.live[key] = (size, category)
        self.by_category[category] += size
        self.current += size
        self.log.events.append(Event(key, nbytes, self.phase))
        self._finalizers.append(weakref.finalize(storage, self._free, key, nbytes))
        if self.current > self._phase_peak:
            self._phase_peak = self.current
            self._phase_breakdown = dict(self.by_category)
            if self.current > self.log.peak_bytes:
                self.log.peak_bytes, self.log.peak_phase = self.current, self.phase
                self.log.breakdown = self._phase_breakdown

    def relabel(self, tensor: Any, category: str) -> None:
        key = id(getattr(tensor, "_local_tensor", tensor).untyped_storage())
        if key in self.live:
            size, old = self.live[key]
            self.by_category[old] -= size
            self.by_category[category] += size
            self.live[key] = (size, category)

    def forget(self, tensor: Any) -> None:
        """The tensor's storage is being freed in place (FSDP2 resizes unsharded parameters to 0 bytes): uncount it
        now; a later re-allocation registers it again."""
        storage = getattr(tensor, "_local_tensor", tensor).untyped_storage()
        if storage.nbytes() > 0:
            self._free(id(storage), storage.nbytes())

    def _free(self, key: int, nbytes: int) -> None:
        if not self.active or key not in self.live:
            return
        size, category = self.live.pop(key)
        self.by_category[category] -= size
        self.current -= size
        self.log.events.append(Event(key, -nbytes, self.phase))

    # -- memplan.stack.PhaseMeter (the step reports its phases here)
    def begin(self, phase: str) -> None:
        self.phase = phase
        self._phase_peak = self.current
        self._phase_breakdown = dict(self.by_category)

    def end(self, phase: str | None = None) -> None:
        self.log.phases.append(PhasePeak(phase or self.phase, self._phase_peak, self._phase_breakdown))
        self.phase = "idle"

    def close(self) -> TraceLog:
        self.active = False
        for f in self._finalizers:
            f.detach()
        return self.log

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        import torch
        from torch.utils._pytree import tree_leaves

        shortcuts = self._shortcuts
        if shortcuts is not None and func is shortcuts.device_query and hasattr(args[0], "fake_device"):
            return args[0].fake_device  # allocates nothing: not counted as an op
        tmp = None
        if func is self._softmax_backward:
            # CUDA's kernel allocates `grad * output` first (a CPU kernel does not): held while the op runs
            grad = args[0]
            tmp = grad.new_empty((cuda_softmax_backward_tmp_bytes(grad.numel(), grad.element_size()),),
                                 dtype=torch.uint8)
            self.register(tmp, "temporaries")
        out = shortcuts.run(func, args, kwargs or {}) if shortcuts is not None else func(*args, **(kwargs or {}))
        self.log.ops += 1
        if self.progress is not None and self.log.ops % PROGRESS_EVERY == 0:
            self.progress(f"{self.phase}: {self.log.ops:,} ops, {self.current / 2**30:.2f} GiB live")
        category = PHASE_CATEGORY.get(self.phase, "temporaries")
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                self.register(t, category)
        del tmp
        return out
