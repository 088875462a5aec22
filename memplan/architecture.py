"""Model introspection: build a transformers model on the meta device (no weights, no network) and read off
exact shapes: every parameter, every Linear with its name and features, embeddings, norms, tied weights, layers,
heads, and the per-layer structure the activation terms need.

Remote code never runs: a config whose `model_type` is not built into transformers is refused by name.
Results are cached by a hash of the config, so a repeated estimate does not rebuild.
"""

from __future__ import annotations

import copy
import json
import re
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from memplan import catalog, introspected
from memplan.files import read_mapping
from memplan.memo import BytesLRU
from memplan.model_info import BOOKKEEPING_KEYS as _BOOKKEEPING
from memplan.model_info import ModelInfo, ParamInfo, config_hash, relative_name, stack_and_layer
from memplan.spec import SpecError
from memplan.terms.shapes import LayerShape, LinearShape


class ArchitectureError(ValueError):
    """A config that cannot be introspected (unknown model_type, needs remote code, malformed)."""

    def __init__(self, message: str, field: str = "model", suggestions: list[str] | None = None):
        self.field = field
        self.suggestions = suggestions  # set when the model id is not in the catalog: the closest ids
        super().__init__(message)


HEADS = ("causal_lm", "seq2seq_lm", "masked_lm", "sequence_classification", "token_classification")


# ---------------------------------------------------------------- config loading


def load_config(model: str | None, inline: dict[str, Any] | None, allow_path: bool = True) -> tuple[str, dict]:
    """Return (model id, config dict) from a catalog id, a config.json path (CLI only) or an inline dict."""
    if inline is not None:
        if not isinstance(inline, dict) or "model_type" not in inline:
            raise ArchitectureError("model_config must be a config.json object with a 'model_type'", "model_config")
        return str(inline.get("_name_or_path") or "inline config"), inline
    assert model is not None
    if allow_path and looks_like_path(model):
        path = Path(model)
        if not path.is_file():
            raise ArchitectureError(f"config file not found: {model}")
        try:
            raw = read_mapping(path)
        except SpecError as exc:
            raise ArchitectureError(f"cannot read config.json {exc}") from None
        if isinstance(raw, dict) and "config" in raw and "model_type" not in raw:
            raw = raw["config"]  # a memplan catalog file
        if not isinstance(raw, dict) or "model_type" not in raw:
            raise ArchitectureError(f"{model} is not a config.json (no 'model_type')")
        return str(path), raw
    try:
        entry = catalog.get_model(model)
    except catalog.CatalogError as exc:
        raise ArchitectureError(str(exc), suggestions=exc.suggestions) from None
    return entry.id, entry.config


def introspect(model: str | None = None, inline: dict | None = None, head: str = "auto", num_labels: int = 2,
               allow_path: bool = True) -> ModelInfo:
    if inline is None and model is not None and not (allow_path and looks_like_path(model)):
        return _introspect_catalog(model, head, num_labels)  # catalog entries never change: skip the hashing
    model_id, config = load_config(model, inline, allow_path)
    return _introspect_config(model_id, config, head, num_labels)


def looks_like_path(model: str) -> bool:
    """Whether `model` names a config.json on disk (CLI only) rather than a catalog id."""
    return model.endswith(".json") or Path(model).is_file()


#: introspected models, bounded by their size (memplan.memo); a ModelInfo costs about 1 KB per parameter tensor
MODEL_CACHE_BYTES = 256 * 2**20
model_cache = BytesLRU(MODEL_CACHE_BYTES)


def info_cost_bytes(info: "ModelInfo", key_bytes: int = 0) -> int:
    """What a cached ModelInfo holds, measured with tracemalloc: about 1 KB per parameter tensor, 2 KB per block,
    plus its key (a pasted config's JSON). Example: a 32-layer Llama (291 tensors): 291,000 + 64,000 + 16,384."""
    return 1000 * len(info.params) + 2000 * len(info.layers) + 16_384 + key_bytes


def _introspect_catalog(model: str, head: str, num_labels: int) -> ModelInfo:
    key = ("catalog", model, head, num_labels)
    hit = model_cache.get(key)
    if hit is None:  # catalog entries never change: keyed by id, without hashing the config
        model_id, config = load_config(model, None, allow_path=False)
        # the shipped introspection (default head) needs neither torch nor transformers
        hit = introspected.shipped(model_id, config, head, num_labels) or _build(model_id, _architecture(config),
                                                                                 head, num_labels)
        model_cache.put(key, hit, info_cost_bytes(hit))
    return hit


def build_catalog_info(model: str, head: str = "auto", num_labels: int = 2) -> ModelInfo:
    """A catalog model built on the meta device (what scripts/catalog_introspection.py ships as data)."""
    model_id, config = load_config(model, None, allow_path=False)
    return _build(model_id, _architecture(config), head, num_labels)


def _architecture(config: dict) -> dict:
    """The config's architecture fields: remote code refused first (auto_map is dropped as bookkeeping)."""
    _refuse_remote_code(config)
    return {k: v for k, v in config.items() if k not in _BOOKKEEPING}


def _introspect_config(model_id: str, config: dict, head: str, num_labels: int) -> ModelInfo:
    config_json = json.dumps(_architecture(config), sort_keys=True, default=str)
    key = ("config", model_id, config_json, head, num_labels)
    hit = model_cache.get(key)
    if hit is None:
        hit = _build(model_id, json.loads(config_json), head, num_labels)
        model_cache.put(key, hit, info_cost_bytes(hit, len(config_json)))
    return hit


def clear_caches() -> None:
    """Forget every introspected model (benchmarks time a model's first build with it)."""
    model_cache.clear()


# ---------------------------------------------------------------- building on meta


def _resolve_head(config: Any, raw: dict, head: str) -> str:
    if head != "auto":
        return head
    if getattr(config, "is_encoder_decoder", False):
        return "seq2seq_lm"
    archs = raw.get("architectures") or []
    arch = archs[0] if archs else ""
    if arch.endswith(("ForCausalLM", "LMHeadModel")) and not arch.startswith(("Bert", "Roberta")):
        return "causal_lm"
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES as causal
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES as masked

    if config.model_type in masked or arch.endswith(("ForMaskedLM", "ForPreTraining", "Model")):
        return "sequence_classification"
    if config.model_type in causal:
        return "causal_lm"
    raise ArchitectureError(f"cannot tell which head model_type '{config.model_type}' uses; set 'head'", "head")


def _native(model_type: Any) -> bool:
    from transformers import CONFIG_MAPPING

    return isinstance(model_type, str) and model_type in CONFIG_MAPPING


def remote_code_ignored(raw: dict) -> bool:
    """Whether the config asks for remote code (auto_map, trust_remote_code) for a model_type transformers ships
    itself (Phi-3's Hub config): memplan builds it from transformers' own code and ignores the request."""
    return bool(raw.get("auto_map") or raw.get("trust_remote_code")) and _native(raw.get("model_type"))


def _refuse_remote_code(raw: dict) -> None:
    if (raw.get("auto_map") or raw.get("trust_remote_code")) and not _native(raw.get("model_type")) \
            and approximation(raw) is None:
        names = sorted(raw["auto_map"]) if isinstance(raw.get("auto_map"), dict) else []
        raise ArchitectureError(f"this config needs remote code (auto_map: {names}) and does not state the numbers "
                                f"an approximation needs ({', '.join(_missing_numbers(raw))}); memplan never "
                                "executes code from a model repository", "model_config")


#: what a config must state to be approximated by a native architecture: (what, the spellings model repos use)
_NUMBERS = (("hidden size", ("hidden_size", "n_embd", "d_model", "hidden_dim")),
            ("layers", ("num_hidden_layers", "n_layer", "num_layers", "n_layers")),
            ("attention heads", ("num_attention_heads", "n_head", "num_heads", "n_heads")),
            ("MLP width", ("intermediate_size", "ffn_hidden_size", "n_inner", "ffn_dim")),
            ("vocabulary", ("vocab_size", "padded_vocab_size")))
_KV_HEADS = ("num_key_value_heads", "multi_query_group_num", "num_kv_heads", "n_head_kv", "n_kv_heads")
_POSITIONS = ("max_position_embeddings", "seq_length", "n_positions", "max_seq_len")


def _first(raw: dict, names: tuple[str, ...]) -> Any:
    return next((raw[n] for n in names if isinstance(raw.get(n), int) and not isinstance(raw.get(n), bool)), None)


def _missing_numbers(raw: dict) -> list[str]:
    return [what for what, names in _NUMBERS if _first(raw, names) is None]


def approximation(raw: dict) -> dict | None:
    """For a config whose model_type transformers does not ship (a model that needs remote code, which memplan never
    runs): a Llama config with the numbers it states (hidden size, layers, heads, key/value heads, MLP width,
    vocabulary, positions, tied embeddings), so the estimate is approximate but exact in weights of that shape;
    None when a number is missing or the type is native."""
    if _native(raw.get("model_type")) or _missing_numbers(raw):
        return None
    (h, layers, heads, inter, vocab) = (_first(raw, names) for _, names in _NUMBERS)
    out = {"model_type": "llama", "hidden_size": h, "num_hidden_layers": layers, "num_attention_heads": heads,
           "num_key_value_heads": _first(raw, _KV_HEADS) or heads, "intermediate_size": inter, "vocab_size": vocab,
           "tie_word_embeddings": bool(raw.get("tie_word_embeddings", False))}
    positions = _first(raw, _POSITIONS)
    if positions:
        out["max_position_embeddings"] = positions
    if isinstance(raw.get("head_dim"), int):
        out["head_dim"] = raw["head_dim"]
    return out


def _make_config(raw: dict) -> Any:
    from transformers import CONFIG_MAPPING

    _refuse_remote_code(raw)
    approximated = approximation(raw) if raw.get("model_type") not in CONFIG_MAPPING else None
    if approximated is not None:
        raw = approximated
    model_type = raw.get("model_type")
    if model_type not in CONFIG_MAPPING:
        import transformers

        raise ArchitectureError(
            f"unknown model_type '{model_type}': transformers {transformers.__version__} has no built-in "
            f"implementation, and the config does not state {', '.join(_missing_numbers(raw))} to approximate it "
            "by (memplan never executes a model repository's code)"
        )
    # a deep copy: transformers edits nested dicts in place (rope_scaling gains rope_theta), which would change
    # the shared catalog entry and every hash taken of it afterwards
    kwargs = copy.deepcopy({k: v for k, v in raw.items() if k not in _BOOKKEEPING and k != "model_type"})
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return CONFIG_MAPPING[model_type](**kwargs)
    except Exception as exc:  # noqa: BLE001 - transformers raises many types for malformed configs
        raise ArchitectureError(f"invalid config for model_type '{model_type}': {plain_error(exc)}") from None


def _auto_class(head: str) -> Any:
    import transformers as tf

    return {
        "causal_lm": tf.AutoModelForCausalLM,
        "seq2seq_lm": tf.AutoModelForSeq2SeqLM,
        "masked_lm": tf.AutoModelForMaskedLM,
        "sequence_classification": tf.AutoModelForSequenceClassification,
        "token_classification": tf.AutoModelForTokenClassification,
    }[head]


def _norm_kind(module: Any) -> str | None:
    cls = type(module).__name__
    if cls == "T5LayerNorm":  # T5 and its descendants: keeps its input for the product with rsqrt
        return "t5_rms"
    if cls.startswith("Gemma") and cls.endswith("RMSNorm"):  # scales in fp32: (x_norm * (1 + w.float()))
        return "gemma_rms"
    if "RMSNorm" in cls or cls == "MistralRMSNorm":
        return "rms"
    if "LayerNorm" in cls or "GroupNorm" in cls:
        return "layer"
    return None


def _linear_group(name: str) -> str:
    """Which input a linear reads inside its block: attn_in (q/k/v), attn_out, cross_q, cross_kv, mlp_in, mlp_out.

    Linears reading the same tensor share one saved copy of it when their weights are trained."""
    parts = name.split(".")
    leaf = parts[-1]
    parent = ".".join(parts[:-1]).lower()
    is_cross = "encdecattention" in parent or "crossattention" in parent or "encoder_attn" in parent
    is_attn = is_cross or any(t in parent for t in ("attn", "attention"))
    if is_attn:
        if leaf in ("o", "o_proj", "out_proj", "c_proj", "dense", "wo", "out") or parent.endswith("output"):
            return "attn_out"
        if is_cross:
            return "cross_q" if leaf in ("q", "q_proj", "query") else "cross_kv"
        return "attn_in"
    if leaf in ("down_proj", "fc2", "dense_4h_to_h", "fc_out", "wo", "w2") or (
        leaf == "c_proj" and "mlp" in parent) or (leaf == "dense" and parent.endswith("output")):
        return "mlp_out"
    return "mlp_in"


def _cfg(config: Any, *names: str, default: Any = None) -> Any:
    for n in names:
        v = getattr(config, n, None)
        if v is not None:
            return v
    return default


def prepare_config(raw: dict, head: str = "auto", num_labels: int = 2) -> tuple[Any, str, Any]:
    """(transformers config, resolved head, Auto class for that head) from a config.json dict; refuses remote
    code. Shared by the meta build here and the real builds of the profiling harness."""
    import transformers  # noqa: F401 - imported before building so its torch patches apply

    config = _make_config(raw)
    head = _resolve_head(config, raw, head)
    if head in ("sequence_classification", "token_classification"):
        config.num_labels = num_labels
    if getattr(config, "pad_token_id", None) is None and head == "sequence_classification":
        config.pad_token_id = 0  # only used for pooling at run time, not for shapes
    return config, head, _auto_class(head)


def build_meta_model(raw: dict, head: str = "auto", num_labels: int = 2, dtype: Any = None,
                     attention: str = "eager") -> tuple[Any, Any, str]:
    """(model on the meta device, its config, the resolved head) from a config.json dict: no weights, no network,
    tied weights tied as the checkpoint ties them; `dtype` and `attention` as `from_config` takes them (the trace
    engine builds the job's own; shapes and counts do not depend on them)."""
    import torch

    config, head, auto_cls = prepare_config(raw, head, num_labels)
    try:
        with warnings.catch_warnings(), torch.device("meta"):
            warnings.simplefilter("ignore")
            model = auto_cls.from_config(config, dtype=dtype, attn_implementation=attention)
    except ArchitectureError:
        raise
    except ValueError as exc:
        raise ArchitectureError(f"model_type '{config.model_type}' has no {head} head in transformers: "
                                f"{plain_error(exc)}",
                                "head") from None
    model.tie_weights()
    _follow_config_tying(model, raw)
    return model, config, head


#: config fields that multiply the modules built, and the sizes of every tensor; bounded in the config and in
#: every nested sub-config (text_config, vision_config, encoder, decoder) so that a pasted config cannot stall the
#: server or overflow a count
_COUNT_FIELDS = ("num_hidden_layers", "n_layer", "num_layers", "num_decoder_layers", "encoder_layers",
                 "decoder_layers", "n_layers", "num_local_experts", "num_experts", "n_routed_experts")
_SIZE_FIELDS = ("hidden_size", "n_embd", "d_model", "intermediate_size", "ffn_dim", "n_inner", "d_ff",
                "vocab_size", "num_attention_heads", "n_head", "num_heads", "num_key_value_heads", "head_dim",
                "moe_intermediate_size")
_POSITION_FIELDS = ("max_position_embeddings", "n_positions")
MAX_COUNT = 1024
MAX_SIZE = 1 << 22  # 4,194,304: above every real width and vocabulary (largest catalog: 262,144)
MAX_POSITIONS = 1 << 28  # 268,435,456: above the longest context published (Llama 4 Scout: 10,485,760)
#: modules one build may create: 2.5x the largest catalog model (Llama-3.1-405B: 1,645); a build costs about
#: 0.1 ms per module, so the budget bounds its time as well
MAX_MODULES = 4096
#: sub-configs nested deeper than this are refused (real ones nest two levels: a VLM's text_config)
MAX_CONFIG_DEPTH = 8


def _check_bounds(raw: dict, where: str = "", depth: int = 0) -> None:
    """Refuse out-of-range counts and sizes in the config and in every nested sub-config, naming the path."""
    if depth > MAX_CONFIG_DEPTH:
        raise ArchitectureError(f"config nested deeper than {MAX_CONFIG_DEPTH} levels at '{where}'", "model_config")
    for name, value in raw.items():
        path = f"{where}.{name}" if where else str(name)
        if isinstance(value, dict):
            _check_bounds(value, path, depth + 1)
        elif isinstance(value, int) and not isinstance(value, bool):
            if name in _COUNT_FIELDS and not 0 <= value <= MAX_COUNT:
                raise ArchitectureError(f"config field '{path}' = {value} is outside 0..{MAX_COUNT}", "model_config")
            cap = MAX_SIZE if name in _SIZE_FIELDS else MAX_POSITIONS if name in _POSITION_FIELDS else None
            if cap is not None and not 0 <= value <= cap:
                raise ArchitectureError(f"config field '{path}' = {value} is outside 0..{cap:,}", "model_config")


_module_budget = threading.local()
_budget_hook_installed = False


def _count_module(module: Any, name: str, submodule: Any) -> None:
    """torch's global module-registration hook: spends this thread's module budget while a build runs."""
    left = getattr(_module_budget, "left", None)
    if left is None:
        return
    if left <= 0:
        raise ArchitectureError(f"this config builds more than {MAX_MODULES:,} modules (layers x experts); the "
                                "largest catalog model builds 1,645", "model_config")
    _module_budget.left = left - 1


@contextmanager
def module_budget(limit: int = MAX_MODULES) -> Iterator[None]:
    """Bound the modules built in this thread (torch.nn.modules.module.register_module_module_registration_hook,
    called on every submodule assignment)."""
    global _budget_hook_installed
    import torch

    if not _budget_hook_installed:
        torch.nn.modules.module.register_module_module_registration_hook(_count_module)
        _budget_hook_installed = True
    _module_budget.left = limit
    try:
        yield
    finally:
        _module_budget.left = None


_TRACE_LINE = re.compile(r"^\s*(Exception raised from|frame #|File \"|Traceback|\(most recent call)")


def plain_error(exc: BaseException, limit: int = 240) -> str:
    """An exception as one short line without library internals: its lines up to the first stack-trace line,
    joined, file paths replaced, capped in length (torch's errors carry a C++ stack trace with the server's
    paths; pydantic-style config errors put the reason on their second line)."""
    lines = []
    for line in str(exc).strip().splitlines():
        if _TRACE_LINE.match(line):
            break
        lines.append(line.strip())
    text = re.sub(r"(/[\w.+-]+)+\.(py|cpp|h|hpp|so)\b(:\d+)?", "<path>", " ".join(x for x in lines if x))
    text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _build(model_id: str, raw: dict, head: str, num_labels: int) -> ModelInfo:
    _check_bounds(raw)
    try:
        with module_budget():
            return _build_info(model_id, raw, head, num_labels)
    except ArchitectureError:
        raise
    except RecursionError:
        raise ArchitectureError("config nested too deeply to build", "model_config") from None
    except Exception as exc:  # noqa: BLE001 - transformers/torch raise many types for inconsistent configs
        raise ArchitectureError(f"transformers cannot build this config: {plain_error(exc)}",
                                "model_config") from None


def _build_info(model_id: str, raw: dict, head: str, num_labels: int) -> ModelInfo:
    import torch
    from transformers.pytorch_utils import Conv1D
    from transformers.quantizers.base import get_keys_to_not_convert

    model, config, head = build_meta_model(raw, head, num_labels)

    enc_dec = bool(getattr(config, "is_encoder_decoder", False))
    not_convert = set(get_keys_to_not_convert(model))
    out_emb = model.get_output_embeddings()
    in_emb = model.get_input_embeddings()
    tied = out_emb is not None and in_emb is not None and out_emb.weight is in_emb.weight

    module_of: dict[int, tuple[str, Any]] = {}
    for mname, module in model.named_modules():
        for p in module.parameters(recurse=False):
            module_of.setdefault(id(p), (mname, module))

    output_modules = []
    if out_emb is not None:
        output_modules += [n for n, m in model.named_modules() if m is out_emb]
    for n in ("score", "classifier", "qa_outputs"):
        if getattr(model, n, None) is not None:
            output_modules.append(n)

    def skip_quant(mname: str) -> bool:
        return any(mname == k or mname.startswith(k + ".") for k in not_convert) or mname in output_modules

    head_ids = {id(p) for n, m in model.named_modules() if n in output_modules for p in m.parameters()}
    head_params = tuple(n for n, p in model.named_parameters() if id(p) in head_ids)
    params: list[ParamInfo] = []
    largest = 0
    for mname, module in model.named_modules():
        own = sum(p.numel() for p in module.parameters(recurse=False))
        largest = max(largest, own)
    for pname, p in model.named_parameters():  # de-duplicated by identity: tied weights appear once
        mname, module = module_of[id(p)]
        is_bias = pname.endswith("bias") and p.dim() == 1
        if isinstance(module, (torch.nn.Linear, Conv1D)):
            kind = "linear"
        elif isinstance(module, torch.nn.Embedding):
            kind = "embedding"
        elif _norm_kind(module):
            kind = "norm"
        elif p.dim() == 3 and "expert" in pname:
            kind = "expert"
        else:
            kind = "other"
        stack, layer = stack_and_layer(pname, enc_dec)
        quantizable = (kind == "linear" and not is_bias and not skip_quant(mname)) or kind == "expert"
        params.append(ParamInfo(pname, tuple(p.shape), p.numel(), mname, kind, is_bias, quantizable, stack, layer))

    h = int(_cfg(config, "hidden_size", "d_model", "n_embd"))
    n_q = int(_cfg(config, "num_attention_heads", "n_head", "num_heads"))
    d_head = int(_cfg(config, "head_dim", default=h // n_q) or h // n_q)
    n_kv = _cfg(config, "num_key_value_heads", "num_kv_heads")
    if config.model_type == "falcon" and not getattr(config, "new_decoder_architecture", False):
        n_kv = 1 if getattr(config, "multi_query", True) else n_q
    if config.model_type == "gpt_bigcode":
        n_kv = 1 if getattr(config, "multi_query", True) else n_q
    n_kv = int(n_kv or n_q)

    layers = _layer_shapes(model, config, enc_dec, h, n_q, n_kv, d_head)
    if not layers:
        raise ArchitectureError(f"this {config.model_type} config builds no transformer blocks "
                                "(num_hidden_layers 0?)", "model_config")
    dec_layers = [s for s in layers if s.stack == "decoder"]
    enc_layers = [s for s in layers if s.stack == "encoder"]
    intermediate = max((s.intermediate_size for s in layers), default=4 * h)

    sliding = _cfg(config, "sliding_window")
    layer_types = getattr(config, "layer_types", None)
    if sliding and layer_types:
        n_sliding = sum(1 for t in layer_types if t == "sliding_attention")
    elif sliding and getattr(config, "use_sliding_window", True):
        n_sliding = len(dec_layers)
    else:
        n_sliding = 0
    if not n_sliding:
        sliding = None

    dtype = raw.get("torch_dtype") or raw.get("dtype")
    latent = _cfg(config, "kv_lora_rank", default=None)
    mla = (int(latent), int(_cfg(config, "qk_nope_head_dim", default=0) or 0),
           int(_cfg(config, "qk_rope_head_dim", default=0) or 0), int(_cfg(config, "v_head_dim", default=0) or 0)
           ) if latent else ()
    return ModelInfo(
        model_id=model_id,
        model_type=config.model_type,
        head=head,
        model_class=type(model).__name__,
        config_hash=config_hash(raw),
        checkpoint_dtype=str(dtype) if dtype else None,
        params=tuple(params),
        total_params=sum(p.numel for p in params),
        tied_embeddings=tied,
        hidden_size=h,
        num_layers=len(dec_layers) if dec_layers else len(enc_layers),
        num_encoder_layers=len(enc_layers),
        num_heads=n_q,
        num_kv_heads=n_kv,
        head_dim=d_head,
        intermediate_size=intermediate,
        vocab_size=int(_cfg(config, "vocab_size", default=0)),
        max_positions=_cfg(config, "max_position_embeddings", "n_positions"),
        num_experts=int(_cfg(config, "num_local_experts", "num_experts", default=0) or 0),
        experts_per_token=int(_cfg(config, "num_experts_per_tok", default=0) or 0),
        largest_module_params=largest,
        output_modules=tuple(output_modules),
        head_params=head_params,
        supports_sdpa=bool(getattr(model, "_supports_sdpa", False)),
        supports_flash_attention=bool(getattr(model, "_supports_flash_attn", False)),
        layers=tuple(enc_layers + dec_layers),
        sliding_window=int(sliding) if sliding else None,
        sliding_window_layers=n_sliding,
        final_logit_softcap=bool(_cfg(config, "final_logit_softcapping", default=None)),
        outer_dropouts=_outer_dropouts(model, enc_dec, output_modules),
        mla=mla,
    )


def _outer_dropouts(model: Any, enc_dec: bool, output_modules: list[str]) -> int:
    """How many [T, h] dropouts a stack applies outside its blocks: the active (p > 0) nn.Dropout modules that
    sit in no block, no head and not on the task model itself (a classifier's dropout,
    `BertForSequenceClassification.dropout`, reads the pooled [b, h]); T5's stack applies its one module twice,
    after the embedding and after the final norm (modeling_t5.py T5Stack.forward)."""
    import torch

    heads = tuple(output_modules) + ("classifier", "score", "qa_outputs", "pooler", "cls")
    count = 0
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Dropout) or module.p <= 0 or "." not in name:
            continue
        if stack_and_layer(name + ".x", enc_dec)[1] is None and not any(name.startswith(h + ".") for h in heads):
            count += 2 if type(model).__module__.endswith(("modeling_t5", "modeling_mt5", "modeling_umt5")) else 1
    stacks = 2 if enc_dec else 1
    return count // stacks


def _follow_config_tying(model: Any, raw: dict) -> None:
    """Untie the output layer when the config.json says `tie_word_embeddings: false`.

    transformers 5 ties T5's lm_head to the shared embedding whatever the config says
    (models/t5/configuration_t5.py forces tie_word_embeddings=True), but FLAN-T5, T0 and mT0 checkpoints ship a
    separate lm_head that memory must hold: follow the checkpoint's own config (shared/reference D)."""
    import torch

    out_emb, in_emb = model.get_output_embeddings(), model.get_input_embeddings()
    if raw.get("tie_word_embeddings") is False and out_emb is not None and in_emb is not None \
            and out_emb.weight is in_emb.weight:
        out_emb.weight = torch.nn.Parameter(torch.empty(out_emb.weight.shape, device="meta"))


def _dropout_probs(config: Any) -> tuple[float, float]:
    hidden = _cfg(config, "hidden_dropout_prob", "resid_pdrop", "hidden_dropout", "dropout_rate", "dropout",
                  default=0.0)
    attn = _cfg(config, "attention_probs_dropout_prob", "attn_pdrop", "attention_dropout", "dropout_rate",
                default=0.0)
    return float(hidden or 0.0), float(attn or 0.0)


def _layer_shapes(model: Any, config: Any, enc_dec: bool, h: int, n_q: int, n_kv: int, d_head: int
                  ) -> list[LayerShape]:
    """One LayerShape per transformer block, from the block's own modules."""
    import torch
    from transformers.pytorch_utils import Conv1D

    blocks: dict[tuple[str, int], dict[str, Any]] = {}
    for mname, module in model.named_modules():
        stack, layer = stack_and_layer(mname + ".", enc_dec)
        if layer is None:
            continue
        b = blocks.setdefault((stack, layer), {"linears": [], "norms": 0, "head_norms": 0, "norm_kind": "layer",
                                               "experts": None})
        if isinstance(module, (torch.nn.Linear, Conv1D)):
            if isinstance(module, Conv1D):
                d_in, d_out = module.weight.shape
            else:
                d_out, d_in = module.weight.shape
            b["linears"].append(LinearShape(relative_name(mname), _linear_group(mname), int(d_in), int(d_out),
                                            module.bias is not None))
        kind = _norm_kind(module)
        if kind and getattr(module, "weight", None) is not None:
            dim = module.weight.shape[-1]
            if dim == h:
                b["norms"] += 1
                b["norm_kind"] = kind
            else:
                b["head_norms"] += 1  # per-head q/k norms (Qwen3, Gemma 3)
        for pname, p in module.named_parameters(recurse=False):
            if p.dim() == 3 and "expert" in f"{mname}.{pname}":
                b["experts"] = p.shape[0]
                # each expert's MLP width, from its fused tensors: down [E, h, I] or gate_up [E, 2I, h]
                if p.shape[1] == h and p.shape[2] != h:
                    b["expert_width"] = int(p.shape[2])
                elif p.shape[2] == h and "expert_width" not in b:
                    b["expert_width"] = int(p.shape[1]) // 2

    hidden_drop, attn_drop = _dropout_probs(config)
    act = str(_cfg(config, "hidden_act", "activation_function", "dense_act_fn", "feed_forward_proj", default="gelu"))
    shapes = []
    for (stack, layer), b in sorted(blocks.items(), key=lambda kv: (kv[0][0] != "encoder", kv[0][1])):
        lins = tuple(b["linears"])
        mlp_out = [lin for lin in lins if lin.group == "mlp_out"]
        mlp_in = [lin for lin in lins if lin.group == "mlp_in" and "router" not in lin.name and "gate" != lin.name]
        intermediate = mlp_out[0].d_in if mlp_out else 4 * h
        gated = len([lin for lin in mlp_in if lin.d_in == h]) >= 2 or any(
            lin.d_out == 2 * intermediate for lin in mlp_in)
        if b["experts"]:  # an expert's width (moe_intermediate_size where the config has one), not the dense MLP's
            gated = True
            intermediate = b.get("expert_width") or int(getattr(config, "intermediate_size", intermediate))
        shapes.append(LayerShape(
            stack=stack, index=layer, hidden=h, heads=n_q, kv_heads=n_kv, head_dim=d_head,
            intermediate_size=intermediate, gated_mlp=gated, activation=act, norm_kind=b["norm_kind"],
            norms=b["norms"], head_norms=b["head_norms"],
            cross_attention=any(lin.group.startswith("cross") for lin in lins),
            hidden_dropout=hidden_drop, attention_dropout=attn_drop, linears=lins,
            experts=int(b["experts"] or 0), experts_per_token=int(_cfg(config, "num_experts_per_tok", default=0) or 0),
            attn_softcap=bool(_cfg(config, "attn_logit_softcapping", default=None)),
            parallel_residual=_parallel_residual(config),
            # T5's relative position bias, an additive [n, s, s] mask each attention call receives
            attn_bias=_cfg(config, "relative_attention_num_buckets", default=None) is not None,
            mlp_dropout=any(".DenseReluDense." in f".{lin.name}." for lin in lins),
            # OPT-350m alone of the OPTs normalizes after the residual add (do_layer_norm_before=False)
            post_norm=config.model_type in _POST_NORM_TYPES or getattr(config, "do_layer_norm_before", True) is False,
            fused_qkv_view=config.model_type in _QKV_VIEW_TYPES,
        ))
    return shapes


#: models whose attention keeps q as a view of the fused qkv projection's output (GPT2Attention, GPTBigCodeAttention
#: split and view it; rotary models make new q, k; BLOOM reshapes its q into a copy)
_QKV_VIEW_TYPES = ("gpt2", "gpt_bigcode")
#: encoder models whose LayerNorms follow each sublayer's residual add (modeling_bert.py BertSelfOutput)
_POST_NORM_TYPES = ("bert", "roberta", "xlm-roberta", "electra", "camembert", "deberta", "deberta-v2")


def _parallel_residual(config: Any) -> bool:
    """Attention and MLP side by side on the block input: GPT-NeoX's use_parallel_residual, Falcon's
    parallel_attn, and Phi / GPT-J, whose blocks always add both to the residual."""
    if config.model_type in ("phi", "gptj", "codegen"):
        return True
    return bool(_cfg(config, "use_parallel_residual", "parallel_attn", default=False))
