"""Optimizer states and the optimizer step's temporaries, in the dtype each implementation keeps them."""

from __future__ import annotations

from memplan.terms.dtypes import allocation_bytes, dtype_bytes

BNB_8BIT_BLOCKSIZE = 256  # bitsandbytes Optimizer8bit blockwise quantization (optim/optimizer.py, block_wise=True)
BNB_MIN_8BIT_SIZE = 4096  # tensors with fewer elements keep 32-bit states (Optimizer8bit min_8bit_size)
BNB_PAGED_MIN_SIZE = 100_000  # paged optimizers page tensors of >= 1e5 elements (functional.get_paged)


def adamw_state_bytes(numel: int, dtype: str) -> int:
    """torch.optim.AdamW: exp_avg and exp_avg_sq, each zeros_like(param), so 2 * numel * bytes(param dtype).

    Source: torch/optim/adam.py _init_group (torch.zeros_like(p, memory_format=torch.preserve_format)).
    Example: 8,030,261,248 bf16 params: 2 * 16,060,522,496 = 32,121,044,992 B (29.9 GiB);
    one fp32 LoRA A matrix of 16 x 4096: 2 * 262,144 = 524,288 B.
    """
    return 2 * allocation_bytes(numel * dtype_bytes(dtype))


def adam_8bit_state_bytes(numel: int, blocksize: int = BNB_8BIT_BLOCKSIZE,
                          min_8bit_size: int = BNB_MIN_8BIT_SIZE) -> int:
    """bitsandbytes 8-bit Adam(W): state1/state2 uint8 plus an fp32 absmax per 256-element block each;
    tensors under 4096 elements keep two fp32 states.

    Formula: n >= 4096: 2 * (n + 4 * ceil(n / 256)) = 2.031 B/param; else 2 * 4 * n.
    Source: bitsandbytes/optim/optimizer.py Optimizer2State.init_state.
    Example: a 4096 x 16 LoRA B (65,536 elements): 2 * (65,536 + 1,024) = 133,120 B;
    a 1,024-element vector: 8,192 B.
    """
    if numel < min_8bit_size:
        return 2 * allocation_bytes(4 * numel)
    blocks = -(-numel // blocksize)
    return 2 * (allocation_bytes(numel) + allocation_bytes(4 * blocks))


def adam_32bit_bnb_state_bytes(numel: int) -> int:
    """bitsandbytes 32-bit (paged) AdamW: two fp32 states whatever the parameter dtype: 8 * n.

    Source: bitsandbytes/optim/optimizer.py Optimizer2State.init_state (dtype=torch.float32 when optim_bits=32).
    Example: 1,048,576 bf16 params: 8,388,608 B.
    """
    return 2 * allocation_bytes(4 * numel)


def momentum_state_bytes(numel: int, dtype: str) -> int:
    """One buffer like the parameter: SGD's momentum_buffer (torch/optim/sgd.py, clone of the first grad) and
    Lion's exp_avg (Chen et al. 2023, arXiv:2302.06675, Algorithm 2).

    Example: 1,048,576 bf16 params: 2,097,152 B.
    """
    return allocation_bytes(numel * dtype_bytes(dtype))


def adafactor_state_bytes(shape: tuple[int, ...]) -> int:
    """HF Adafactor (transformers/optimization.py, beta1=None): factored fp32 second moment for >= 2-D tensors,
    a row vector (shape[:-1]) and a column vector (shape[:-2] + shape[-1:]); a full fp32 exp_avg_sq for 1-D.

    Source: Shazeer & Stern 2018 (arXiv:1804.04235) Algorithm 4; transformers Adafactor._get_options/step.
    Example: a 4096 x 14336 weight: 4 * (4096 + 14336) = 73,728 B; a 4096 vector: 16,384 B.
    """
    if len(shape) >= 2:
        rows = 1
        for d in shape[:-1]:
            rows *= d
        cols = 1
        for d in shape[:-2] + shape[-1:]:
            cols *= d
        return allocation_bytes(4 * rows) + allocation_bytes(4 * cols)
    n = 1
    for d in shape:
        n *= d
    return allocation_bytes(4 * n)


def adamw_step_temp_bytes(impl: str, group_bytes: int, largest_param_bytes: int) -> int:
    """Temporaries inside torch AdamW.step, on top of params, grads and states.

    - foreach (_multi_tensor_adam): exp_avg_sq_sqrt = torch._foreach_sqrt(exp_avg_sqs) is one full copy of every
      parameter of the (device, dtype) group: `group_bytes`.
    - for-loop (_single_tensor_adam): denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps) plus the
      step's other elementwise temporary: about 2x the largest single parameter.
    - fused (_fused_adamw, the HF Trainer default adamw_torch_fused): one kernel, no temporaries.
    Source: torch/optim/adam.py; measured in shared/reference/memory-mechanics.md B3 (8B: foreach +2P bytes).
    Example: Llama-3.1-8B bf16, foreach: 16,060,522,496 B; for-loop: 2 * 1,050,673,152 = 2,101,346,304 B; fused: 0.
    """
    if impl == "foreach":
        return group_bytes
    if impl == "for_loop":
        return 2 * largest_param_bytes
    return 0


def adafactor_step_temp_bytes(numels: list[int], low_precision: bool = True) -> int:
    """HF Adafactor's step, one parameter at a time in the optimizer's order: for parameter i, fp32 copies of its
    grad and itself (grad.float(), p.float(): 16-bit parameters only), then `update = grad**2 + eps` makes two
    fp32 tensors at once, while the previous parameter's `update` is still bound to the loop's variable (Python
    frees it only at this reassignment). Peak: max over i of 4*4*n_i + 4*n_(i-1) bytes (fp32 parameters:
    2*4*n_i + 4*n_(i-1)); the factored moment's `_approx_sq_grad` outer product comes after the pow is freed.
    Source: transformers/optimization.py Adafactor.step; traced (llama-full-gc-adafactor: gate_proj right after
    another 16.8M-element matrix, 5 fp32 tensors of 64 MiB).
    Example: Llama-3.1-8B's MLP projections, 58,720,256 elements each, one after another:
      4*4*58,720,256 + 4*58,720,256 = 1,174,405,120 B; its 525,336,576-element embedding comes first:
      16 * 525,336,576 = 8,405,385,216 B, the step's peak.
    """
    copies = 4 if low_precision else 2
    peak, previous = 0, 0
    for n in numels:
        peak = max(peak, copies * allocation_bytes(4 * n) + previous)
        previous = allocation_bytes(4 * n)
    return peak


def single_tensor_update_temp_bytes(largest_param_bytes: int) -> int:
    """Optimizers that update one tensor at a time with one temporary (Lion's sign(update), SGD's
    grad + momentum step in for-loop mode): about the largest parameter once.

    Example: largest parameter 1,050,673,152 B -> 1,050,673,152 B.
    """
    return largest_param_bytes
