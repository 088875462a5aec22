"""Which tensors each fine-tuning method trains, in which dtype, as PEFT / the HF Trainer set them up.

This is selection logic (which modules, which dtype), not byte formulas: counts come from `memplan.terms.trainable`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from memplan.architecture import ModelInfo
from memplan.spec import JobSpec
from memplan.terms import trainable as tt
from memplan.terms.shapes import LinearShape

# PEFT's default (IA)3 targets per model_type (peft/utils/constants.py TRANSFORMERS_MODELS_TO_IA3_*), the
# feed-forward ones scale their input, the others their output.
IA3_TARGETS = {
    "llama": (["k_proj", "v_proj", "down_proj"], ["down_proj"]),
    "mistral": (["k_proj", "v_proj", "down_proj"], ["down_proj"]),
    "mixtral": (["k_proj", "v_proj", "w2"], ["w2"]),
    "qwen2": (["q_proj", "v_proj", "down_proj"], ["down_proj"]),
    "qwen3": (["q_proj", "v_proj", "down_proj"], ["down_proj"]),
    "gemma2": (["q_proj", "v_proj", "down_proj"], ["down_proj"]),
    "gemma3_text": (["q_proj", "v_proj", "down_proj"], ["down_proj"]),
    "phi": (["q_proj", "v_proj", "fc2"], ["fc2"]),
    "gpt2": (["c_attn", "mlp.c_proj"], ["mlp.c_proj"]),
    "opt": (["q_proj", "k_proj", "fc2"], ["fc2"]),
    "gpt_neox": (["query_key_value", "dense_4h_to_h"], ["dense_4h_to_h"]),
    "falcon": (["query_key_value", "dense_4h_to_h"], ["dense_4h_to_h"]),
    "bloom": (["query_key_value", "mlp.dense_4h_to_h"], ["mlp.dense_4h_to_h"]),
    "gptj": (["q_proj", "v_proj", "fc_out"], ["fc_out"]),
    "gpt_bigcode": (["c_attn", "mlp.c_proj"], ["mlp.c_proj"]),
    "t5": (["k", "v", "wo"], ["wo"]),
    "mt5": (["k", "v", "wi_1"], []),
    "bert": (["key", "value", "output.dense"], ["output.dense"]),
    "roberta": (["key", "value", "output.dense"], ["output.dense"]),
}


#: PEFT 0.21's conversion of LoRA targets for transformers 5's fused mixture-of-experts
#: (peft/utils/transformers_weight_conversion.py _convert_peft_config_moe, _MOE_TARGET_MODULE_MAPPING,
#: _MOE_FUSED_TARGETS): per conversion family, the v4 projection names that now name fused expert parameters (or the
#: router's weight), which LoRA then adapts as parameters (ParamWrapper), and the v4 names each fused stack joins
MOE_LORA_MAPPING = {
    "mixtral": {"gate": "gate.weight", "w1": "gate_up_proj", "w3": "gate_up_proj", "w2": "down_proj"},
    "qwen2_moe": {"gate": "gate.weight", "gate_proj": "gate_up_proj", "up_proj": "gate_up_proj",
                  "down_proj": "down_proj"},
}
MOE_LORA_FUSED = {"mixtral": {"gate_up_proj": ("w1", "w3")}, "qwen2_moe": {"gate_up_proj": ("gate_proj", "up_proj")}}
#: model types PEFT converts, by family (transformers' _MODEL_TO_CONVERSION_PATTERN, as PEFT extends it)
MOE_LORA_MODEL_TYPES = {
    "mixtral": "mixtral", "minimax": "mixtral", "minimax_m2": "mixtral",
    **dict.fromkeys(("qwen2_moe", "qwen3_moe", "qwen3_next", "deepseek_v2", "deepseek_v3", "deepseek_v32", "dots1",
                     "ernie4_5_moe", "glm4_moe", "glm4_moe_lite", "olmoe", "flex_olmo", "hunyuan_v1_moe",
                     "exaone_moe", "cohere2_moe", "afmoe", "longcat_flash", "solar_open", "mellum"), "qwen2_moe"),
}


class MethodFieldError(ValueError):
    """A method setting the real stack refuses, reported under `field`."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(message)


@dataclass(frozen=True)
class TrainableTensor:
    name: str
    shape: tuple[int, ...]
    numel: int
    dtype: str


@dataclass(frozen=True)
class Trainables:
    """What a method trains and how it changes the forward pass."""

    tensors: tuple[TrainableTensor, ...]
    adapted: dict[tuple[str, int], tuple[LinearShape, ...]] = field(default_factory=dict)  # LoRA, per block
    ia3: dict[tuple[str, int], tuple[tuple[LinearShape, bool], ...]] = field(default_factory=dict)  # (lin, is_ff)
    base_linears_trainable: bool = False  # full fine-tuning: every base weight has a gradient
    norms_trainable: bool = False
    grads_flow: bool = True  # does the backward pass run through the transformer blocks?
    virtual_tokens: int = 0  # prompt tuning: extra positions in every layer
    prefix_tokens: int = 0  # prefix tuning: extra key/value positions
    adapter_size: int = 0  # bottleneck adapters per block
    adapter_dtype: str = "fp32"
    #: LoRA on fused expert stacks (PEFT ParamWrapper): per block, the numel of the parameters it merges with their
    #: adapters at every forward (the expert stacks and the router's weight)
    merged_params: dict[tuple[str, int], int] = field(default_factory=dict)
    #: and the numels of those parameters in the order backward reaches them (the last in the block first)
    merged_order: dict[tuple[str, int], tuple[int, ...]] = field(default_factory=dict)

    @cached_property  # read on every estimate (ZeRO partitions, the trainable count): summed once
    def count(self) -> int:
        return sum(t.numel for t in self.tensors)


def _matches(module_name: str, targets: list[str]) -> bool:
    """PEFT's check_target_module_exists for a list: the full name or a '.'-suffix matches."""
    return any(module_name == t or module_name.endswith("." + t) for t in targets)


def float_dtype(spec: JobSpec) -> str:
    """Dtype of the unquantized modules as loaded: the float weight dtype, else the compute dtype (bnb's
    bnb_4bit_compute_dtype and the Trainer's dtype= for the rest of the model)."""
    if spec.weight_dtype in ("fp32", "bf16", "fp16"):
        return spec.weight_dtype
    return spec.mixed_precision if spec.mixed_precision != "no" else "fp32"


def kbit_prepared(spec: JobSpec) -> bool:
    """QLoRA training runs peft.prepare_model_for_kbit_training, which casts every non-quantized fp16/bf16
    parameter (embeddings, lm_head, norms) to fp32 (peft/utils/other.py). Not under FSDP: the FSDP-QLoRA recipes
    skip it so that every parameter of a block keeps the storage dtype FSDP flattens or gathers (TRL's
    `is_sharded_qlora`; PEFT examples/sft with bnb_4bit_quant_storage)."""
    return spec.task == "train" and spec.weight_dtype in ("nf4", "fp4", "int8") and spec.parallel_engine != "fsdp"


def first_input_needs_grad(spec: JobSpec, tr: "Trainables") -> bool:
    """Whether the embedding's output requires a gradient, so that backward runs through the bottom block's input:
    trainable base linears, virtual tokens, bottleneck adapters, or gradient checkpointing, under which the stack
    calls enable_input_require_grads (memplan.stack.apply_method), except for k-bit-prepared models (peft's
    prepare_model_for_kbit_training skips it with use_reentrant=False)."""
    return (tr.base_linears_trainable or tr.virtual_tokens > 0 or spec.method == "adapter"
            or (spec.gradient_checkpointing and not kbit_prepared(spec)))


def unquantized_dtype(spec: JobSpec) -> str:
    return "fp32" if kbit_prepared(spec) else float_dtype(spec)


def lora_targets(info: ModelInfo, targets: str | list[str]) -> list[str]:
    """Module names LoRA adapts: 'all-linear' is every Linear/Conv1D but the output layer (PEFT's
    _maybe_include_all_linear_layers); a list matches names or '.'-suffixes."""
    linears = sorted(info.linear_weights)
    if targets == "all-linear":
        return [m for m in linears if m not in info.output_modules]
    return [m for m in linears if _matches(m, list(targets))]


def _shape(info: ModelInfo, module: str) -> tuple[tuple[str, int] | None, int, int, LinearShape | None]:
    """(block, d_in, d_out, LinearShape) of a linear; modules outside blocks use the nn.Linear weight layout."""
    hit = info.block_linears.get(module)
    if hit is not None:
        block, lin = hit
        return block, lin.d_in, lin.d_out, lin
    d_out, d_in = info.linear_weights[module].shape
    return None, d_in, d_out, None


def _moe_lora(info: ModelInfo, spec: JobSpec, tensors: list[TrainableTensor]
              ) -> tuple[list[str], dict[tuple[str, int], int], dict[tuple[str, int], tuple[int, ...]]]:
    """LoRA targets as PEFT 0.21 resolves them on a transformers-5 MoE model: the linear modules it adapts, and, for
    the names that now denote fused expert parameters or the router's weight, their adapters (appended to `tensors`)
    and the per-block numel of the parameters merged with them at every forward. Other models: every target module,
    nothing merged."""
    targets = lora_targets(info, spec.lora.target_modules)
    family = MOE_LORA_MODEL_TYPES.get(info.model_type)
    experts = [p for p in info.params if p.kind == "expert"]
    if experts and kbit_prepared(spec):
        raise MethodFieldError("method", f"{info.model_type}'s fused expert stacks are not quantized by bitsandbytes "
                                         "(it replaces nn.Linear only); prepare_model_for_kbit_training upcasts them "
                                         "to fp32, which transformers' grouped_mm experts refuse (they need bf16): "
                                         "use method 'lora' on a bf16 base")
    if family is None or not experts:
        return targets, {}, {}
    mapping, fused = MOE_LORA_MAPPING[family], MOE_LORA_FUSED[family]
    given = spec.lora.target_modules
    # "all-linear": the linears' leaf names and every mapped v4 name (PEFT _resolve_string_target_modules)
    names = ({m.rsplit(".", 1)[-1] for m in targets} | set(mapping)) if given == "all-linear" else set(given)
    mapped = {mapping[n] for n in names if n in mapping}
    if not mapped:
        return targets, {}, {}
    for stack, parts in fused.items():
        present = [x for x in parts if x in names]
        if 0 < len(present) < len(parts):
            raise MethodFieldError("lora.target_modules", f"PEFT cannot adapt {', '.join(present)} without "
                                   f"{', '.join(sorted(set(parts) - set(present)))}: {info.model_type} fuses them "
                                   f"into {stack}")
    if spec.lora.dropout:
        raise MethodFieldError("lora.dropout", f"PEFT adapts {info.model_type}'s fused experts as parameters "
                                               f"({', '.join(sorted(mapped))}: lora.ParamWrapper), which refuses "
                                               "lora_dropout != 0: set lora.dropout 0, or target the attention "
                                               "projections only")
    r, merged, order = spec.lora.r, {}, {}
    for p in info.params:
        leaf = p.name.rsplit(".", 1)[-1] if p.kind == "expert" else ".".join(p.name.rsplit(".", 2)[-2:])
        if leaf not in mapped or p.layer is None:
            continue
        rank = r * len(fused.get(leaf, ("one",)))  # a fused stack takes the rank of each part it joins
        experts_n = p.shape[0] if p.kind == "expert" else 1
        n = tt.expert_lora_params(experts_n, p.shape[-2], p.shape[-1], rank)
        tensors.append(TrainableTensor(p.name + ".lora", (n,), n, "fp32"))
        key = (p.stack or "decoder", p.layer)
        merged[key] = merged.get(key, 0) + p.numel
        order.setdefault(key, []).append(p.numel)
    # the v4 names mapped onto parameters no longer target modules (a DeepSeek dense MLP's gate/up/down included)
    kept = [m for m in targets if m.rsplit(".", 1)[-1] not in mapping] if given == "all-linear" else \
        [m for m in targets if not any(_matches(m, [n]) for n in names if n in mapping)]
    # parameters are listed in forward order (router, gate_up, down): backward reaches them reversed
    return kept, merged, {k: tuple(reversed(v)) for k, v in order.items()}


def _head_tensors(info: ModelInfo, dtype: str) -> list[TrainableTensor]:
    return [TrainableTensor(p.name, p.shape, p.numel, dtype) for p in info.params if p.name in info.head_params]


def trainables(info: ModelInfo, spec: JobSpec) -> Trainables:
    """The trainable tensors for spec.method on this model, with the dtype PEFT / the Trainer give them."""
    if spec.task == "inference":
        return Trainables(tensors=(), grads_flow=False)
    base = float_dtype(spec)
    head_dtype = unquantized_dtype(spec)
    classifier = info.head in ("sequence_classification", "token_classification")
    # PEFT keeps the classification head trainable (modules_to_save) for SEQ_CLS / TOKEN_CLS tasks
    cls_head = _head_tensors(info, head_dtype) if classifier else []
    method = spec.method
    if method == "full":
        return Trainables(
            tensors=tuple(TrainableTensor(p.name, p.shape, p.numel, base) for p in info.params),
            base_linears_trainable=True, norms_trainable=True)
    if method == "freeze":
        return Trainables(tensors=tuple(_head_tensors(info, base)), grads_flow=False)
    if method in ("lora", "qlora"):
        tensors, adapted = list(cls_head), {}
        r = spec.lora.r
        module_targets, merged, merged_order = _moe_lora(info, spec, tensors)
        for module in module_targets:
            block, d_in, d_out, lin = _shape(info, module)
            if lin is not None:
                adapted.setdefault(block, []).append(lin)
            tensors.append(TrainableTensor(module + ".lora_A", (r, d_in), r * d_in, "fp32"))
            tensors.append(TrainableTensor(module + ".lora_B", (d_out, r), r * d_out, "fp32"))
            assert tensors[-1].numel + tensors[-2].numel == tt.lora_params(d_in, d_out, r)
        names = sorted({lin.name.split('.')[-1] for s in info.layers for lin in s.linears})
        if len(tensors) == len(cls_head):
            raise ValueError(f"lora.target_modules {spec.lora.target_modules!r} match no linear layer of "
                             f"{info.model_id}; its linear layers include {names}")
        if spec.lora.target_modules != "all-linear":
            # PEFT adapts what matches and says nothing of a name that matches nothing: a typo among several
            # targets would silently shrink the adapter
            unmatched = [t for t in spec.lora.target_modules if not any(_matches(m, [t]) for m in info.linear_weights)]
            if unmatched:
                raise ValueError(f"{unmatched} match no linear layer of {info.model_id} (the others do); its linear "
                                 f"layers include {names}")
        return Trainables(tensors=tuple(tensors), adapted={k: tuple(v) for k, v in adapted.items()},
                          merged_params=merged, merged_order=merged_order)
    submodules = 2 if info.is_encoder_decoder else 1
    if method == "prompt_tuning":
        n = tt.prompt_tuning_params(spec.num_virtual_tokens, info.hidden_size, submodules)
        return Trainables(tensors=(TrainableTensor("prompt_encoder", (n // info.hidden_size, info.hidden_size), n,
                                                   "fp32"), *cls_head), virtual_tokens=spec.num_virtual_tokens)
    if method == "prefix_tuning":
        kv_width = info.num_kv_heads * info.head_dim
        layers = info.num_layers if not info.is_encoder_decoder else info.num_encoder_layers
        n = tt.prefix_tuning_params(spec.num_virtual_tokens, layers, kv_width, submodules)
        return Trainables(tensors=(TrainableTensor("prefix_encoder", (n,), n, "fp32"), *cls_head),
                          prefix_tokens=spec.num_virtual_tokens)
    if method == "ia3":
        targets, ff = IA3_TARGETS.get(info.model_type, (None, None))
        if targets is None:
            raise ValueError(f"(IA)3 has no default target modules for model_type '{info.model_type}' in PEFT; "
                             f"supported: {', '.join(sorted(IA3_TARGETS))}")
        tensors, scaled = list(cls_head), {}
        for module in sorted(info.linear_weights):
            if module in info.output_modules or not _matches(module, targets):
                continue
            is_ff = _matches(module, ff)
            block, d_in, d_out, lin = _shape(info, module)
            n = tt.ia3_params(0, d_in) if is_ff else tt.ia3_params(d_out, 0)
            tensors.append(TrainableTensor(module + ".ia3_l", (n,), n, "fp32"))
            if lin is not None:
                scaled.setdefault(block, []).append((lin, is_ff))
        return Trainables(tensors=tuple(tensors), ia3={k: tuple(v) for k, v in scaled.items()})
    if method == "adapter":
        layers = len(info.layers)
        n = tt.bottleneck_adapter_params(info.hidden_size, spec.adapter_size, layers)
        per = n // layers // 2
        tensors = [TrainableTensor(f"adapter.{i}.{j}", (per,), per, "fp32") for i in range(layers) for j in range(2)]
        return Trainables(tensors=tuple(tensors + cls_head), adapter_size=spec.adapter_size)
    raise ValueError(f"unknown method {method!r}")

