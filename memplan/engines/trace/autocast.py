"""CUDA autocast rules on CPU tensors.

The tracer runs on fake *CPU* tensors (backward through fake CUDA tensors aborts a CPU-only torch), so autocast runs
under the "cpu" device type, whose op lists differ from CUDA's: on CPU, layer_norm, softmax, pow, exp, rsqrt and
sum keep bf16 inputs in bf16, while CUDA runs them in fp32 (and so saves fp32 tensors for backward). While tracing,
`cuda_autocast_rules()` registers AutocastCPU kernels that apply CUDA's lists instead.

Source: aten/src/ATen/autocast_mode.cpp (torch 2.x), the CUDA registrations: `lower_precision_fp` ops cast their
floating inputs to the autocast dtype, `fp32` ops cast them to float32, `fp32_set_opt_dtype` ops get
`dtype=float32` when no dtype is given and an input is in a lower precision. Ops already in CPU's lists with the
same policy are left to torch.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any, Iterator

#: CUDA `lower_precision_fp` ops that CPU autocast does not cast
LOWER_PRECISION = ("addmv", "addr", "einsum", "mv", "chain_matmul", "linalg_multi_dot")
#: CUDA `fp32` ops (the ones a transformer can reach) that CPU autocast leaves in the input's dtype
FP32 = ("acos", "asin", "cosh", "erfinv", "exp", "expm1", "log", "log10", "log2", "log1p", "reciprocal", "rsqrt",
        "sinh", "tan", "pow.Tensor_Scalar", "pow.Tensor_Tensor", "pow.Scalar", "softplus", "layer_norm",
        "native_layer_norm", "group_norm", "frobenius_norm.dim", "cosine_similarity", "logsumexp", "dist", "renorm")
#: CUDA `fp32_set_opt_dtype` ops: float32 unless the caller gives a dtype
FP32_SET_OPT_DTYPE = ("prod", "prod.dim_int", "softmax.int", "log_softmax.int", "cumprod", "cumsum", "sum",
                      "sum.dim_IntList", "linalg_vector_norm")


def _overload(name: str) -> Any:
    import torch

    packet, _, overload = name.partition(".")
    return getattr(getattr(torch.ops.aten, packet), overload or "default")


def _kernel(op: Any, policy: str) -> Any:
    import torch
    from torch.utils._pytree import tree_map

    lower = (torch.float16, torch.bfloat16)
    exclude = torch._C.DispatchKeySet(torch._C.DispatchKey.AutocastCPU)
    dtype_index = next((i for i, a in enumerate(op._schema.arguments) if a.name == "dtype"), None)

    def kernel(*args: Any, **kwargs: Any) -> Any:
        with torch._C._ExcludeDispatchKeyGuard(exclude):
            if policy == "lower":
                target = torch.get_autocast_dtype("cpu")
                cast = lambda t: t.to(target) if isinstance(t, torch.Tensor) and t.is_floating_point() else t  # noqa: E731
                return op(*tree_map(cast, args), **tree_map(cast, kwargs))
            if policy == "fp32":
                cast = lambda t: t.float() if isinstance(t, torch.Tensor) and t.dtype in lower else t  # noqa: E731
                return op(*tree_map(cast, args), **tree_map(cast, kwargs))
            given = kwargs.get("dtype") if dtype_index is None or len(args) <= dtype_index else args[dtype_index]
            if given is None and any(isinstance(a, torch.Tensor) and a.dtype in lower for a in args):
                if dtype_index is not None and len(args) > dtype_index:
                    args = (*args[:dtype_index], torch.float32, *args[dtype_index + 1:])
                else:
                    kwargs = {**kwargs, "dtype": torch.float32}
            return op(*args, **kwargs)

    return kernel


@contextlib.contextmanager
def cuda_autocast_rules() -> Iterator[None]:
    """Within the block, `torch.autocast("cpu", ...)` casts as CUDA autocast does (see the module docstring)."""
    import torch

    lib = torch.library.Library("aten", "IMPL")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "overriding a previously registered kernel"
            for names, policy in ((LOWER_PRECISION, "lower"), (FP32, "fp32"), (FP32_SET_OPT_DTYPE, "opt")):
                for name in names:
                    lib.impl(name, _kernel(_overload(name), policy), "AutocastCPU")
        yield
    finally:
        lib._destroy()
