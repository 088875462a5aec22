"""Stand-ins for bitsandbytes, whose CUDA kernels do not run on fake tensors.

Each stand-in holds the tensors the real one holds (sizes from memplan.terms.weights / .optimizer, as
bitsandbytes lays them out) and allocates in its forward and backward what the real autograd function allocates:

- `Linear4bit` (NF4/FP4, bitsandbytes/nn/modules.py Linear4bit + autograd/_functions.py MatMul4Bit): the input is
  cast to the compute dtype, the weight is dequantized to a [out, in] compute-dtype temporary for the matmul and
  again in backward for the input's gradient; nothing of the input is saved (the weight is frozen); the output is
  cast back to the input's dtype. A one-token inference input takes the gemv kernel, with no dequantized copy.
- `Linear8bitLt` (LLM.int8(), MatMul8bitLt, threshold 6.0): the input is cast to fp16 and quantized row-wise
  (int8 [T, in] and fp32 [T] scales) for an int32 [T, out] product, dequantized to the output.
- 8-bit and paged optimizers (bitsandbytes/optim/optimizer.py Optimizer2State): states as `init_state` makes them,
  updated in place by one kernel per tensor; paged states live in CUDA managed memory, outside PyTorch's
  allocator, so they are reported apart.
"""

from __future__ import annotations

from typing import Any

from memplan.spec import JobSpec
from memplan.terms import optimizer as opt


def _linear_base() -> type:
    import torch

    return torch.nn.Linear


class _MatMul4Bit:
    """Built lazily as a torch.autograd.Function subclass (torch is imported on first use)."""

    fn: Any = None

    @classmethod
    def get(cls) -> Any:
        if cls.fn is None:
            import torch
            import torch.nn.functional as F

            class MatMul4Bit(torch.autograd.Function):
                @staticmethod
                def forward(ctx: Any, A: Any, packed: Any, bias: Any, shape: tuple[int, int], dtype: Any) -> Any:
                    ctx.shape, ctx.dtype = shape, dtype
                    weight = torch.empty(shape, dtype=dtype)  # F.dequantize_4bit's output
                    return F.linear(A, weight.to(A.dtype), bias)

                @staticmethod
                def backward(ctx: Any, grad: Any) -> Any:
                    weight = torch.empty(ctx.shape, dtype=ctx.dtype)
                    return torch.matmul(grad, weight.to(grad.dtype)), None, None, None, None

            cls.fn = MatMul4Bit
        return cls.fn


class Linear4bit(_linear_base()):  # type: ignore[misc]
    """bitsandbytes Linear4bit's memory: the packed values as a frozen parameter in the quant storage dtype
    (memplan.terms.weights.packed_4bit_shape; FSDP shards it when it is a float dtype), the quantization state as
    buffers (bitsandbytes keeps it as a plain attribute, which no sharding touches)."""

    def __init__(self, linear: Any, compute_dtype: Any, double_quant: bool, blocksize: int = 64,
                 storage_dtype: Any = None):
        import torch

        from memplan.terms.weights import packed_4bit_shape

        torch.nn.Module.__init__(self)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        n = self.in_features * self.out_features
        blocks = -(-n // blocksize)
        storage_dtype = storage_dtype or torch.uint8
        self.weight = torch.nn.Parameter(
            torch.empty(packed_4bit_shape(n, storage_dtype.itemsize), dtype=storage_dtype, device="meta"),
            requires_grad=False)
        self.bias = linear.bias
        self.compute_dtype = compute_dtype
        self.register_buffer("code", torch.empty(16, dtype=torch.float32, device="meta"))
        if double_quant:
            self.register_buffer("absmax", torch.empty(blocks, dtype=torch.uint8, device="meta"))
            self.register_buffer("nested_absmax", torch.empty(-(-blocks // 256), dtype=torch.float32, device="meta"))
            self.register_buffer("offset", torch.empty((), dtype=torch.float32, device="meta"))
        else:
            self.register_buffer("absmax", torch.empty(blocks, dtype=torch.float32, device="meta"))

    def forward(self, x: Any) -> Any:
        import torch

        inp_dtype = x.dtype
        x = x.to(self.compute_dtype)
        bias = None if self.bias is None else self.bias.to(self.compute_dtype)
        shape = (self.out_features, self.in_features)
        if x.numel() == x.shape[-1] and not x.requires_grad:  # gemv_4bit: no dequantized copy
            out = torch.empty((*x.shape[:-1], self.out_features), dtype=x.dtype)
        else:
            out = _MatMul4Bit.get().apply(x, self.weight, bias, shape, self.compute_dtype)
        return out.to(inp_dtype)


class Linear8bitLt(_linear_base()):  # type: ignore[misc]
    """bitsandbytes Linear8bitLt's memory (inference / frozen): int8 CB [out, in] and fp32 SCB [out]."""

    def __init__(self, linear: Any):
        import torch

        torch.nn.Module.__init__(self)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = torch.nn.Parameter(torch.empty((self.out_features, self.in_features), dtype=torch.int8,
                                                     device="meta"), requires_grad=False)
        self.bias = linear.bias
        self.register_buffer("SCB", torch.empty(self.out_features, dtype=torch.float32, device="meta"))

    def forward(self, x: Any) -> Any:
        import torch

        rows = x.numel() // x.shape[-1]
        a16 = x.to(torch.float16)
        ca = torch.empty((rows, self.in_features), dtype=torch.int8)  # int8_vectorwise_quant
        sca = torch.empty(rows, dtype=torch.float32)
        acc = torch.empty((rows, self.out_features), dtype=torch.int32)  # int8 matmul accumulator
        out = torch.empty((*x.shape[:-1], self.out_features), dtype=torch.float16)  # dequantized product
        del a16, ca, sca, acc
        if self.bias is not None:
            out = out + self.bias.to(out.dtype)
        if x.requires_grad:
            raise NotImplementedError("training through LLM.int8() layers is not traced")
        return out.to(x.dtype)


def quantize_linears(model: Any, spec: JobSpec) -> None:
    """Replace the Linear layers bitsandbytes would quantize (all but the output head and the modules transformers
    keeps unquantized: `get_keys_to_not_convert`) with stand-ins; mark the model as loaded in k-bit as
    transformers does, so PEFT's `prepare_model_for_kbit_training` treats it as such."""
    import torch
    from transformers.quantizers.base import get_keys_to_not_convert

    from memplan.stack import torch_dtype

    skip = set(get_keys_to_not_convert(model) or [])
    compute = torch_dtype(spec.compute_dtype)
    storage = torch.uint8 if spec.quant_storage_dtype == "uint8" else torch_dtype(spec.quant_storage_dtype)
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if type(child) is not torch.nn.Linear or any(full == k or full.endswith("." + k) or k in full.split(".")
                                                         for k in skip):
                continue
            if spec.weight_dtype == "int8":
                setattr(module, child_name, Linear8bitLt(child))
            else:
                setattr(module, child_name, Linear4bit(child, compute, spec.double_quant, storage_dtype=storage))
    if spec.weight_dtype == "int8":
        model.is_loaded_in_8bit = True
    else:
        model.is_loaded_in_4bit = True


class _Optimizer2State:
    """bitsandbytes' two-state optimizers: 8-bit AdamW (blockwise uint8 states + fp32 absmax, fp32 states for
    tensors under 4096 elements) or 32-bit AdamW; paged variants keep tensors of >= 1e5 elements in managed memory
    (counted in `outside_bytes`, not allocated here)."""

    def __init__(self, params: list, bits: int, paged: bool):
        self.params, self.bits, self.paged = list(params), bits, paged
        self.state: dict[int, dict[str, Any]] = {}
        self.outside_bytes = 0

    def step(self) -> None:
        import torch

        for p in self.params:
            if p.grad is None or id(p) in self.state:
                continue
            n = p.numel()
            if self.paged and n >= opt.BNB_PAGED_MIN_SIZE:
                self.outside_bytes += (opt.adam_8bit_state_bytes(n) if self.bits == 8
                                       else opt.adam_32bit_bnb_state_bytes(n))
                self.state[id(p)] = {}
                continue
            if self.bits == 8 and n >= opt.BNB_MIN_8BIT_SIZE:
                blocks = -(-n // opt.BNB_8BIT_BLOCKSIZE)
                self.state[id(p)] = {
                    "state1": torch.zeros_like(p, dtype=torch.uint8), "state2": torch.zeros_like(p, dtype=torch.uint8),
                    "absmax1": torch.zeros(blocks, dtype=torch.float32),
                    "absmax2": torch.zeros(blocks, dtype=torch.float32)}
            else:
                self.state[id(p)] = {"state1": torch.zeros_like(p, dtype=torch.float32),
                                     "state2": torch.zeros_like(p, dtype=torch.float32)}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None


def make_optimizer(spec: JobSpec, params: list) -> Any:
    """A stand-in for bitsandbytes' optimizers, None for the others (built by memplan.stack.make_optimizer)."""
    kinds = {"adamw_8bit": (8, False), "paged_adamw_8bit": (8, True), "paged_adamw_32bit": (32, True)}
    if spec.optimizer not in kinds:
        return None
    bits, paged = kinds[spec.optimizer]
    return _Optimizer2State(params, bits, paged)
