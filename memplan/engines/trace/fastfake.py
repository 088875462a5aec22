"""Shortcuts past FakeTensorMode for the ops that make up most of a traced step: the same fake tensors, sooner.

A traced op costs a few hundred microseconds, most of it FakeTensorMode hashing a generic dispatch-cache key from
every argument's full metadata (torch/_subclasses/fake_tensor.py `_prep_args_for_hash`); a view's output is never
cached when it is an `_unsafe_view`. `FakeShortcuts.run` gives the answer FakeTensorMode gives, more cheaply:

- device queries (prim.device, most of a step's dispatches, from the autograd engine): the fake tensor's device;
- views (VIEWS): the meta kernel on the tensor as meta, wrapped on its device, as FakeTensorMode runs an op it has
  no cached result for. A view allocates nothing;
- functional ops (FUNCTIONAL), whose single output is a new tensor whose layout depends only on the inputs'
  metadata and the other arguments: the first call with given inputs runs through FakeTensorMode and its output's
  shape, strides and dtype are kept under a key of those few fields; later calls get a new fake tensor of that
  layout (`empty_strided` on meta, the allocation the op makes, checked byte for byte on the first call).

Anything else, or an input that is not a plain fake tensor (a real tensor, a constant FakeTensorMode propagates),
runs through FakeTensorMode as it is. With and without the shortcuts a trace makes the same allocations with the
same frees between each two (tensors dying together may be collected in another order), so the same peaks and
the same replayed peak reserved (tests/trace/test_fastfake.py); the 8B LoRA step traces about twice as fast
(bench/results/trace_crosscheck.txt).
"""

from __future__ import annotations

from typing import Any

VIEWS = ("t.default", "view.default", "_unsafe_view.default", "transpose.int", "detach.default", "slice.Tensor",
         "unsqueeze.default", "expand.default", "permute.default", "select.int", "alias.default", "squeeze.dim")
FUNCTIONAL = ("mm.default", "bmm.default", "addmm.default", "_to_copy.default", "clone.default", "mul.Tensor",
              "mul.Scalar", "add.Tensor", "sub.Tensor", "div.Tensor", "div.Scalar", "neg.default",
              "pow.Tensor_Scalar", "rsqrt.default", "mean.dim", "sum.dim_IntList", "silu.default",
              "silu_backward.default", "cat.default", "zeros_like.default", "linalg_vector_norm.default",
              "slice_backward.default", "native_dropout_backward.default", "gelu.default", "gelu_backward.default",
              "tanh.default", "tanh_backward.default", "sigmoid.default", "exp.default")


def _ops(names: tuple[str, ...]) -> set[Any]:
    import torch

    ops = set()
    for name in names:
        packet, overload = name.split(".")
        ops.add(getattr(getattr(torch.ops.aten, packet), overload))
    return ops


class FakeShortcuts:
    """The shortcuts of one trace (the layouts it has learned)."""

    def __init__(self) -> None:
        import torch

        self.device_query = torch.ops.prim.device.default
        self.views = _ops(VIEWS)
        self.functional = _ops(FUNCTIONAL)
        self.layouts: dict[Any, Any] = {}  # key -> (shape, stride, dtype, mode, device), or None: not cacheable

    def run(self, func: Any, args: Any, kwargs: dict[str, Any]) -> Any:
        if func in self.views and _plain_fake(args[0]):
            return _view(func, args, kwargs)
        if func not in self.functional:
            return func(*args, **kwargs)
        key = _metadata_key(func, args, kwargs)
        if key is None:
            return func(*args, **kwargs)
        layout = self.layouts.get(key, False)
        if layout:
            return _new_fake(*layout)
        out = func(*args, **kwargs)
        if layout is False:
            self.layouts[key] = _layout_of(out, args)
        return out


def _plain_fake(tensor: Any) -> bool:
    """A fake tensor with no real value FakeTensorMode would propagate (a lifted constant)."""
    return hasattr(tensor, "fake_mode") and tensor.constant is None


def _view(func: Any, args: Any, kwargs: dict[str, Any]) -> Any:
    from torch._subclasses.fake_tensor import FakeTensor, in_kernel_invocation_manager

    source = args[0]
    with in_kernel_invocation_manager(source.fake_mode):
        out = func(*args, **kwargs)
    return FakeTensor(source.fake_mode, out, source.fake_device)


def _new_fake(shape: tuple[int, ...], stride: tuple[int, ...], dtype: Any, mode: Any, device: Any) -> Any:
    import torch
    from torch._subclasses.fake_tensor import FakeTensor

    with torch._C._DisableTorchDispatch():  # a plain meta tensor, not one made through FakeTensorMode
        made = torch.empty_strided(shape, stride, dtype=dtype, device="meta")
    return FakeTensor(mode, made, device)


def _metadata_key(func: Any, args: Any, kwargs: dict[str, Any]) -> Any:
    """(func, each argument's metadata), or None when an argument is not a plain fake tensor or a hashable value."""
    parts: list[Any] = [func]
    for value in args:
        if not _add_key(parts, value):
            return None
    for name in sorted(kwargs):
        parts.append(name)
        if not _add_key(parts, kwargs[name]):
            return None
    key = tuple(parts)
    try:
        hash(key)
    except TypeError:
        return None
    return key


def _add_key(parts: list[Any], value: Any) -> bool:
    import torch

    if isinstance(value, torch.Tensor):
        if not _plain_fake(value):
            return False
        parts.append((tuple(value.shape), value.stride(), value.dtype, id(value.fake_mode), value.fake_device))
        return True
    if isinstance(value, (list, tuple)):
        parts.append(len(value))
        return all(_add_key(parts, item) for item in value)
    parts.append((type(value), value))  # the type too: mul(x, 2) and mul(x, 2.0) differ for an integer x
    return True


def _layout_of(out: Any, args: Any) -> Any:
    """What a later call rebuilds, or None where a new empty_strided tensor would not be the same allocation (an
    output sharing an input's storage, or at an offset, or over a storage of another size)."""
    import torch
    from torch.utils._pytree import tree_leaves

    if not _plain_fake(out) or out.storage_offset() != 0:
        return None
    if any(isinstance(t, torch.Tensor) and t.untyped_storage() is out.untyped_storage() for t in tree_leaves(args)):
        return None
    layout = (tuple(out.shape), out.stride(), out.dtype, out.fake_mode, out.fake_device)
    if _new_fake(*layout).untyped_storage().nbytes() != out.untyped_storage().nbytes():
        return None
    return layout
