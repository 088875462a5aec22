"""torch FSDP2 for real, on a fake process group in this one CPU process: the traced model is wrapped as accelerate
wraps it for the HF Trainer (`fully_shard` on every module of a class in the model's `_no_split_modules`, bottom up,
then on the root; MixedPrecisionPolicy(param_dtype = reduce_dtype = the compute dtype); reshard_after_forward for
FULL_SHARD; then, under mixed precision, the sharded parameters upcast to fp32 as accelerate's fsdp2_prepare_model
does), so FSDP2's own code decides what is sharded, gathered and freed.

FSDP2 frees and re-allocates unsharded parameters by resizing their storage (`alloc_storage` / `free_storage` in
torch/distributed/fsdp/_fully_shard/_fsdp_param.py), which no dispatched op shows: both are wrapped so that the
storage tracker sees them. DTensor parameters and states are counted by their local shards (StorageTracker)."""

from __future__ import annotations

import contextlib
import importlib
from typing import Any, Iterator

from memplan.spec import JobSpec, SpecError

_FSDP_MODULES = ("_fsdp_param", "_fsdp_param_group", "_fsdp_collectives", "_fsdp_state", "_fully_shard")


def _block_classes(model: Any) -> set[str]:
    names: set[str] = set()
    for module in model.modules():
        names.update(getattr(module, "_no_split_modules", None) or ())
    return names


@contextlib.contextmanager
def fake_fsdp(model: Any, spec: JobSpec, fake_mode: Any, tracker: Any) -> Iterator[None]:
    """Shard `model` (fake CPU tensors) with FSDP2 at world size spec.num_gpus for the duration, its storage
    resizes reported to `tracker`."""
    import torch
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    from torch.testing._internal.distributed.fake_pg import FakeStore

    from memplan.stack import torch_dtype

    if dist.is_initialized():
        raise SpecError([("engine", "this process already has a torch.distributed process group: the FSDP trace "
                                    "needs its own fake one (run it in a fresh process)")])
    dist.init_process_group("fake", rank=0, world_size=spec.num_gpus, store=FakeStore())
    patched: list[tuple[Any, str, Any]] = []
    try:
        mesh = init_device_mesh("cpu", (spec.num_gpus,))
        dtype = torch_dtype(spec.compute_dtype)
        policy = MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=dtype)
        blocks = _block_classes(model)
        reshard = spec.zero_stage == 3
        kwargs: dict[str, Any] = {"mesh": mesh, "mp_policy": policy, "reshard_after_forward": reshard}
        four_bit = spec.weight_dtype in ("nf4", "fp4")
        if four_bit and spec.fsdp_version == 2:
            # accelerate's fsdp2_prepare_model: a Params4bit model stays where it loaded (whole, on every GPU)
            # until fully_shard shards it (FSDP1 loads it on rank 0's CPU and syncs module states)
            for t in [*model.parameters(), *model.buffers()]:
                tracker.register(t, "weights")
        if four_bit and spec.quant_storage_dtype == "uint8":  # non-float 4-bit weights: accelerate's ignored_params
            kwargs["ignored_params"] = {p for p in model.parameters()
                                        if not p.is_floating_point() and not p.requires_grad}
        with fake_mode:
            for module in reversed(list(model.modules())):  # bottom up, as accelerate wraps
                if type(module).__name__ in blocks and module is not model:
                    fully_shard(module, **kwargs)
            fully_shard(model, **kwargs)
            if spec.mixed_precision != "no" and not four_bit:
                # accelerate's fsdp2_prepare_model: "FSDP upcast of low precision parameters to fp32 (since
                # mixed_precision != 'no')", after sharding
                model.to(torch.float32)
        param_module = importlib.import_module("torch.distributed.fsdp._fully_shard._fsdp_param")
        alloc, free = param_module.alloc_storage, param_module.free_storage

        def tracked_alloc(tensor: torch.Tensor) -> None:
            alloc(tensor)
            tracker.register(tensor, "temporaries")

        def tracked_free(tensor: torch.Tensor) -> None:
            tracker.forget(tensor)
            free(tensor)

        for name in _FSDP_MODULES:
            module = importlib.import_module(f"torch.distributed.fsdp._fully_shard.{name}")
            for attr, new in (("alloc_storage", tracked_alloc), ("free_storage", tracked_free)):
                if hasattr(module, attr):
                    patched.append((module, attr, getattr(module, attr)))
                    setattr(module, attr, new)
        yield
    finally:
        for module, attr, old in reversed(patched):
            setattr(module, attr, old)
        dist.destroy_process_group()
