"""What memplan knows about one model, as data: ModelInfo and its parts (exact shapes, no weights), the helpers that
name a parameter's block, a config's hash, and the ModelInfo <-> dict conversion the shipped introspection files use
(memplan.introspected). No torch or transformers here: memplan.architecture builds these from transformers."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field, fields
from functools import cached_property
from typing import Any

from memplan.terms.shapes import LayerShape, LinearShape

# config.json fields that are bookkeeping, not architecture: ignored when hashing and building
BOOKKEEPING_KEYS = {"_name_or_path", "transformers_version", "auto_map", "trust_remote_code", "task_specific_params",
                "use_cache"}


@dataclass(frozen=True)
class ParamInfo:
    name: str
    shape: tuple[int, ...]
    numel: int
    module: str  # owning module's name
    kind: str  # linear | embedding | norm | expert | other
    bias: bool  # a bias vector (stays in high precision under quantization)
    quantizable: bool  # bitsandbytes / GPTQ would store it quantized
    stack: str | None  # "decoder" / "encoder" for params inside a transformer block, None outside
    layer: int | None


@dataclass(frozen=True, eq=False)  # identity hash: one object per model (cached), cheap as a memo key
class ModelInfo:
    """What memplan knows about one model: exact shapes, no weights."""

    model_id: str
    model_type: str
    head: str  # the resolved head (causal_lm, seq2seq_lm, sequence_classification, ...)
    model_class: str
    config_hash: str
    checkpoint_dtype: str | None
    params: tuple[ParamInfo, ...]
    total_params: int
    tied_embeddings: bool
    hidden_size: int
    num_layers: int  # decoder layers (encoder layers for encoder-only models)
    num_encoder_layers: int  # 0 for decoder-only
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    max_positions: int | None
    num_experts: int  # 0 for dense models
    experts_per_token: int
    largest_module_params: int  # the largest single module's own parameters (DeepSpeed ZeRO-3's largest layer)
    output_modules: tuple[str, ...]  # lm_head / classifier module names
    head_params: tuple[str, ...]  # parameter names of the output modules (the embedding's, when tied)
    supports_sdpa: bool
    supports_flash_attention: bool
    layers: tuple[LayerShape, ...]  # one per transformer block, encoder blocks first
    sliding_window: int | None = None
    sliding_window_layers: int = 0  # how many layers use the sliding window
    final_logit_softcap: bool = False  # Gemma 2: tanh over the [T, V] logits before the loss
    # dropouts over [T, h] outside the blocks, per stack: after the embeddings (GPT-2, BERT, T5, Phi, GPT-NeoX)
    # and after T5's final norm; OPT has none
    outer_dropouts: int = 0
    #: multi-head latent attention (DeepSeek-V2/V3): (kv_lora_rank, qk_nope_head_dim, qk_rope_head_dim, v_head_dim);
    #: empty for every other attention
    mla: tuple[int, ...] = ()
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def is_encoder_decoder(self) -> bool:
        return self.num_encoder_layers > 0 and self.head == "seq2seq_lm"

    @cached_property
    def linear_weights(self) -> dict[str, ParamInfo]:
        """Module name -> its weight, for every Linear / Conv1D, in model order."""
        return {p.module: p for p in self.params if p.kind == "linear" and not p.bias}

    @cached_property
    def block_linears(self) -> dict[str, tuple[tuple[str, int], LinearShape]]:
        """Module name -> ((stack, block index), LinearShape) for the linears inside transformer blocks."""
        out = {}
        for module in self.linear_weights:
            stack, layer = stack_and_layer(module + ".", self.num_encoder_layers > 0)
            if layer is None:
                continue
            rel = relative_name(module)
            shape = next((lin for s in self.layers if (s.stack, s.index) == (stack, layer) for lin in s.linears
                          if lin.name == rel), None)
            if shape is not None:
                out[module] = ((stack, layer), shape)
        return out

    @property
    def kv_latent_size(self) -> int:
        """Values an MLA layer caches per token: the compressed latent and the shared rotary key (r_kv + d_rope);
        0 for other attention."""
        return self.mla[0] + self.mla[2] if self.mla else 0

    @property
    def active_params(self) -> int:
        """Parameters used per token: all but the unrouted experts' share."""
        if not self.num_experts:
            return self.total_params
        expert = sum(p.numel for p in self.params if p.kind == "expert")
        return self.total_params - expert * (self.num_experts - self.experts_per_token) // self.num_experts


def config_hash(config: dict[str, Any]) -> str:
    clean = {k: v for k, v in config.items() if k not in BOOKKEEPING_KEYS}
    return hashlib.sha256(json.dumps(clean, sort_keys=True, default=str).encode()).hexdigest()[:16]


_LAYER_RE = re.compile(r"(?:^|\.)(?:layers|layer|h|block|blocks)\.(\d+)(?:\.|$)")


def stack_and_layer(name: str, encoder_decoder: bool) -> tuple[str | None, int | None]:
    """(stack, block index) of a parameter or module name ("model.layers.3.mlp." -> ("decoder", 3)); (None, None)
    outside the blocks (embeddings, final norm, head)."""
    m = _LAYER_RE.search(name)
    if not m:
        return None, None
    stack = "encoder" if (encoder_decoder and name.startswith(("encoder.", "model.encoder."))) else "decoder"
    return stack, int(m.group(1))


def relative_name(mname: str) -> str:
    """A block-relative module name, e.g. 'model.layers.3.self_attn.q_proj' -> 'self_attn.q_proj'."""
    m = _LAYER_RE.search(mname + ".")
    return mname[m.end():] if m else mname


_TUPLE_FIELDS = ("output_modules", "head_params", "mla")


def info_to_dict(info: ModelInfo) -> dict[str, Any]:
    """Every field of the ModelInfo; parameters and linears as rows (the files stay small)."""
    data = {f.name: getattr(info, f.name) for f in fields(ModelInfo)}
    data["params"] = [[p.name, list(p.shape), p.numel, p.module, p.kind, p.bias, p.quantizable, p.stack, p.layer]
                      for p in info.params]
    data["layers"] = [{**{f.name: getattr(layer, f.name) for f in fields(LayerShape) if f.name != "linears"},
                       "linears": [[x.name, x.group, x.d_in, x.d_out, x.bias] for x in layer.linears]}
                      for layer in info.layers]
    for name in _TUPLE_FIELDS:
        data[name] = list(data[name])
    return data


def info_from_dict(data: dict[str, Any]) -> ModelInfo:
    """The ModelInfo `info_to_dict` wrote, equal to the original field by field."""
    values = dict(data)
    values["params"] = tuple(ParamInfo(name, tuple(shape), numel, module, kind, bias, quantizable, stack, layer)
                             for name, shape, numel, module, kind, bias, quantizable, stack, layer in data["params"])
    values["layers"] = tuple(LayerShape(**{**{k: v for k, v in layer.items() if k != "linears"},
                                           "linears": tuple(LinearShape(*x) for x in layer["linears"])})
                             for layer in data["layers"])
    for name in _TUPLE_FIELDS:
        if name in values:  # files written before a field existed take its default
            values[name] = tuple(values[name])
    return ModelInfo(**values)
