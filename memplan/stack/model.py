"""The model of the real job: transformers' own `from_config` with the spec's dtype and attention, or, for
bitsandbytes 4/8-bit weights, `from_pretrained` of a random checkpoint in the compute dtype with a quantization
config (the path users run; the checkpoint is written once per config to local disk and cached)."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from memplan.spec import JobSpec

CHECKPOINT_CACHE = Path(os.environ.get("MEMPLAN_CHECKPOINT_CACHE", Path(tempfile.gettempdir()) / "memplan-ckpt"))


def torch_dtype(name: str):
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


def raw_config(spec: JobSpec) -> tuple[str, dict]:
    from memplan.architecture import load_config

    return load_config(spec.model, spec.inline_config, allow_path=True)


def checkpoint_dir(spec: JobSpec) -> Path:
    from memplan.architecture import config_hash

    _, raw = raw_config(spec)
    key = hashlib.sha256(f"{config_hash(raw)}:{spec.head}:{spec.num_labels}:{spec.compute_dtype}".encode())
    return CHECKPOINT_CACHE / key.hexdigest()[:16]


def prepare_checkpoint(spec: JobSpec, device: str) -> Path:
    """A random checkpoint of the model in the compute dtype on local disk, for the quantized load path
    (bitsandbytes quantizes while from_pretrained loads). Cached by config."""
    path = checkpoint_dir(spec)
    if (path / "config.json").exists():
        return path
    from memplan.architecture import prepare_config

    _, raw = raw_config(spec)
    config, _, auto_cls = prepare_config(raw, spec.head, spec.num_labels)
    import torch

    with torch.device(device):
        model = auto_cls.from_config(config, dtype=torch_dtype(spec.compute_dtype))
    tmp = path.with_suffix(".tmp")
    model.save_pretrained(tmp)
    tmp.rename(path)
    return path


def load_model(spec: JobSpec, device: str, attention: str):
    import torch

    from memplan.architecture import prepare_config

    _, raw = raw_config(spec)
    config, head, auto_cls = prepare_config(raw, spec.head, spec.num_labels)
    if spec.weight_dtype in ("nf4", "fp4", "int8"):
        from transformers import BitsAndBytesConfig

        compute = torch_dtype(spec.compute_dtype)
        if spec.weight_dtype == "int8":
            quant = BitsAndBytesConfig(load_in_8bit=True)
        else:
            quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=spec.weight_dtype,
                                       bnb_4bit_use_double_quant=spec.double_quant, bnb_4bit_compute_dtype=compute)
        model = auto_cls.from_pretrained(checkpoint_dir(spec), quantization_config=quant, dtype=compute,
                                         device_map={"": 0} if device == "cuda" else {"": device},
                                         attn_implementation=attention)
    else:
        with torch.device(device):
            model = auto_cls.from_config(config, dtype=torch_dtype(spec.weight_dtype),
                                         attn_implementation=attention)
    return model, head
