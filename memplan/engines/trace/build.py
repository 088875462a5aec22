"""Build the user's exact stack on the meta device, then give it fake CPU tensors.

The model comes from transformers' own `from_config` (the spec's attention implementation and dtype), the method
from PEFT's own configs and `prepare_model_for_kbit_training` (memplan.stack.apply_method, the code the CUDA
harness runs), with bitsandbytes' layers replaced by stand-ins (memplan.engines.trace.standins). Everything is built on
`meta` first and converted afterwards: modules built inside FakeTensorMode break `.to()` and PEFT
(memory-mechanics.md B4), and the meta device alone picks the wrong SDPA kernel.
"""

from __future__ import annotations

import warnings
from typing import Any

from memplan.spec import JobSpec


def build_meta_stack(spec: JobSpec, attention: str, head_params: tuple[str, ...]) -> tuple[Any, str]:
    """(the model with the spec's method applied, on meta; its head)."""
    import torch

    from memplan.architecture import build_meta_model, load_config
    from memplan.engines.trace import standins
    from memplan.stack import apply_method, torch_dtype

    _, raw = load_config(spec.model, spec.inline_config, allow_path=True)
    quantized = spec.weight_dtype in ("nf4", "fp4", "int8")
    # bitsandbytes loads the unquantized tensors in the compute dtype (from_pretrained dtype=compute)
    dtype = torch_dtype(spec.compute_dtype if quantized else spec.weight_dtype)
    # flash_attention_2 needs the flash-attn package and a GPU; its saved tensors (output and fp32 logsumexp)
    # are those of SDPA's flash kernel, which the CPU SDPA kernel also saves
    impl = "sdpa" if attention == "flash_attention_2" else attention
    model, _, head = build_meta_model(raw, spec.head, spec.num_labels, dtype=dtype, attention=impl)
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        if quantized:
            standins.quantize_linears(model, spec)
        if spec.task == "train":
            model = apply_method(model, spec, head, head_params)
    return model, head


def to_fake(model: Any, fake_mode: Any) -> None:
    """Replace every parameter and buffer by a fake CPU tensor of the same shape and dtype, tied ones tied."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensor

    cpu = torch.device("cpu")
    made: dict[int, Any] = {}

    def fake(t: Any) -> Any:
        if id(t) not in made:
            made[id(t)] = FakeTensor(fake_mode, t.detach().to("meta"), cpu)
        return made[id(t)]

    for module in model.modules():
        for name, p in list(module._parameters.items()):
            if p is None:
                continue
            if id(p) not in made:
                param = torch.nn.Parameter(fake(p), requires_grad=p.requires_grad)
                for attr, value in vars(p).items():  # bitsandbytes-style attributes (quant_state...)
                    setattr(param, attr, value)
                made[id(p)] = param
            module._parameters[name] = made[id(p)]
        for name, b in list(module._buffers.items()):
            if b is not None:
                module._buffers[name] = fake(b)
