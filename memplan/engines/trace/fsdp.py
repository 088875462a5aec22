"""torch FSDP2 for real, on a fake process group in this one CPU process: the traced model is wrapped as accelerate
(1.14 and later, `fsdp2_prepare_model`) wraps it for the HF Trainer, so FSDP2's own code decides what is sharded,
gathered and freed:

- under mixed precision the trainable parameters are upcast to fp32 before sharding (frozen ones keep their dtype;
  none with bitsandbytes 4-bit weights); MixedPrecisionPolicy(param_dtype = the compute dtype, reduce_dtype = fsdp_reduce_dtype);
- `fully_shard` on every module of a class in the model's `_no_split_modules`, bottom up, with
  reshard_after_forward for FULL_SHARD; then the input embedding as its own group, the final norm and the output
  head as one "tail" group that is not resharded after forward, and the root (whatever is left; never resharded
  after forward);
- fsdp_version 1 stands in for FSDP1's wrapping (flat parameters are not traced): the blocks and the root, which
  holds the embeddings, the final norm and the head and is not resharded after forward, as FSDP1's root.

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


def final_norm(model: Any) -> Any:
    """accelerate's `_find_final_norm`: the last module whose class name has "Norm" among the direct children of
    the model's base model (`getattr(model, model.base_model_prefix)`; a PEFT model forwards both lookups to the
    wrapped model, whose base-model attribute is then the task model itself, so no norm is found)."""
    prefix = getattr(model, "base_model_prefix", "")
    base = getattr(model, prefix, None) if prefix else model
    if base is None or not hasattr(base, "named_children"):
        return None
    norm = None
    for _, module in base.named_children():
        if "Norm" in type(module).__name__:
            norm = module
    return norm


def _carve_embedding_and_tail(model: Any, fully_shard: Any, kwargs: dict[str, Any]) -> None:
    """accelerate's fsdp2_prepare_model (1.14+): the input embedding its own group; the final norm (accelerate's
    `_find_final_norm`) and the output head one group, not resharded after forward (a tied embedding joins it)."""
    from torch.distributed.fsdp import FSDPModule

    input_embed = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    output_embed = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    tied = input_embed is not None and getattr(input_embed, "weight", None) is getattr(output_embed, "weight", 0)
    if not tied and input_embed is not None and not isinstance(input_embed, FSDPModule):
        fully_shard(input_embed, **kwargs)
    norm = final_norm(model)
    tail_modules = (norm, input_embed, output_embed) if tied else (norm, output_embed)
    tail = [m for m in tail_modules if m is not None and not isinstance(m, FSDPModule)]
    if tail:
        fully_shard(tail, **{**kwargs, "reshard_after_forward": False})


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
        policy = MixedPrecisionPolicy(param_dtype=torch_dtype(spec.compute_dtype),
                                      reduce_dtype=torch_dtype(spec.reduce_dtype))
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
            if spec.mixed_precision != "no" and not four_bit:
                # accelerate's fsdp2_prepare_model: "FSDP upcast of low precision parameters to fp32 (since
                # mixed_precision != 'no')", trainable parameters only, before sharding
                for p in model.parameters():
                    if p.requires_grad and p.dtype != torch.float32:
                        p.data = p.data.to(torch.float32)
            for module in reversed(list(model.modules())):  # bottom up, as accelerate wraps
                if type(module).__name__ in blocks and module is not model:
                    fully_shard(module, **kwargs)
            if spec.fsdp_version == 2:
                _carve_embedding_and_tail(model, fully_shard, kwargs)
            fully_shard(model, **{k: v for k, v in kwargs.items() if k != "reshard_after_forward"})
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
