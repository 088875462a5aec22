"""Serving engines' settings -> a memplan serve job: vLLM's engine arguments (`vllm serve MODEL --flag ...` as text,
or the YAML that `vllm serve --config` reads) and SGLang's server arguments (`python -m sglang.launch_server ...`, or
a YAML / JSON of them). Flag names are taken with dashes or underscores; unknown flags are named (with the closest
known one), known ones without a memory effect are listed as such.

Sources: vllm/engine/arg_utils.py EngineArgs (v0.21), sglang python/sglang/srt/server_args.py ServerArgs (v0.5).
"""

from __future__ import annotations

import shlex
from typing import Any, Callable

from memplan.importers._common import NOT_MODELLED, Collector, is_auto, map_torch_dtype
from memplan.spec import SpecError

#: how a text file holding a serving command starts -> the kind of its arguments
COMMANDS = (("vllm serve", "vllm"), ("vllm.entrypoints", "vllm"), ("sglang.launch_server", "sglang"),
            ("sglang serve", "sglang"))
#: the key a command's parsed arguments carry, naming the engine (detect_format reads it)
COMMAND_KEY = "__command__"


def key(name: str) -> str:
    """A flag or config key as one spelling: `--max-model-len` / `max-model-len` -> max_model_len."""
    return str(name).lstrip("-").replace("-", "_")


def parse_command(text: str, name: str) -> dict[str, Any] | None:
    """The arguments of a serving command line (line continuations and comments allowed) as {flag: value}, with
    the engine under COMMAND_KEY; None when the text is not a serving command. A flag without a value is true;
    vLLM's positional model is `model`."""
    lines = [line.split(" #")[0] for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = " ".join(line.rstrip().rstrip("\\") for line in lines).strip()
    engine = next((kind for marker, kind in COMMANDS if marker in joined), None)
    if engine is None:
        return None
    try:
        words = shlex.split(joined)
    except ValueError as exc:
        raise SpecError([(name, f"cannot split the command line: {exc}")]) from None
    out: dict[str, Any] = {COMMAND_KEY: engine}
    i = next((n + 1 for n, w in enumerate(words) if w in ("serve", "vllm.entrypoints.openai.api_server",
                                                            "sglang.launch_server")), len(words))
    while i < len(words):
        word = words[i]
        if word.startswith("--"):
            flag, eq, value = word.partition("=")
            if eq:
                out[key(flag)] = value
            elif i + 1 < len(words) and not words[i + 1].startswith("--"):
                out[key(flag)] = words[i + 1]
                i += 1
            else:
                out[key(flag)] = True
        elif engine == "vllm" and "model" not in out:
            out["model"] = word
        else:
            raise SpecError([(name, f"unexpected argument {word!r} in the {engine} command")])
        i += 1
    return out


def _tokens(out: Collector, source: str, value: Any) -> int:
    """A token count as vLLM reads it: an integer, or with a suffix (k = 1000, K = 1024, m / M likewise); -1 or
    auto for max_model_len's auto-fit."""
    if is_auto(value) or value == -1 or value == "-1":
        return -1
    text = str(value).strip()
    scale = {"k": 1000, "K": 1024, "m": 10**6, "M": 2**20}.get(text[-1:], 1)
    number = text[:-1] if scale != 1 else text
    try:
        return int(float(number) * scale)
    except ValueError:
        raise out.error(source, f"expected a token count (e.g. 8192, 32k, auto), got {value!r}") from None


KV_DTYPES = {"auto": "auto", "fp8": "fp8", "fp8_e4m3": "fp8", "fp8_e5m2": "fp8", "fp8_inc": "fp8",
             "bfloat16": "bf16", "bf16": "bf16", "float16": "fp16", "fp16": "fp16"}
#: quantization methods -> weight_dtype (vllm --quantization, sglang --quantization)
QUANTIZATION = {"fp8": "fp8", "fbgemm_fp8": "fp8", "modelopt": "fp8", "awq": "int4", "awq_marlin": "int4",
                "gptq": "int4", "gptq_marlin": "int4", "marlin": "int4", "bitsandbytes": "nf4"}


def _quantization(out: Collector, source: str, value: Any) -> None:
    dtype = QUANTIZATION.get(str(value).strip().lower())
    if dtype is None:
        out.ignore(source, f"{NOT_MODELLED}: quantization {value!r} (memplan serves fp8, AWQ / GPTQ 4-bit and "
                           "bitsandbytes weights); left to the checkpoint's dtype")
    else:
        out.set("weight_dtype", dtype, source, value)


def _kv(out: Collector, source: str, value: Any) -> None:
    dtype = KV_DTYPES.get(str(value).strip().lower())
    if dtype is None:
        raise out.error(source, f"unknown kv cache dtype {value!r}; allowed: {', '.join(KV_DTYPES)}")
    out.set("serving.kv_cache_dtype", dtype, source, value)


Rule = Callable[[Collector, str, Any], None]


def _to(field: str, kind: str) -> Rule:
    def rule(out: Collector, source: str, value: Any) -> None:
        if kind == "int":
            out.set(field, out.int_(source, value), source, value)
        elif kind == "tokens":
            out.set(field, _tokens(out, source, value), source, value)
        elif kind == "float":
            out.set(field, out.float_(source, value), source, value)
        elif kind == "bool":
            out.set(field, out.bool_(source, value), source, value)
        else:
            out.set(field, str(value), source, value)
    return rule


def _not_modelled(what: str) -> Rule:
    def rule(out: Collector, source: str, value: Any) -> None:
        out.ignore(source, f"{NOT_MODELLED}: {what}")
    return rule


VLLM_RULES: dict[str, Rule] = {
    "model": _to("model", "str"), "model_tag": _to("model", "str"),
    "tensor_parallel_size": _to("serving.tensor_parallel_size", "int"), "tp": _to("serving.tensor_parallel_size", "int"),
    "gpu_memory_utilization": _to("serving.gpu_memory_utilization", "float"),
    "max_model_len": _to("serving.max_model_len", "tokens"),
    "max_num_seqs": _to("serving.max_num_seqs", "int"),
    "max_num_batched_tokens": _to("serving.max_num_batched_tokens", "tokens"),
    "block_size": _to("serving.block_size", "int"),
    "enforce_eager": _to("serving.enforce_eager", "bool"),
    "max_loras": _to("serving.max_loras", "int"), "max_lora_rank": _to("serving.max_lora_rank", "int"),
    "fully_sharded_loras": _to("serving.fully_sharded_loras", "bool"),
    "kv_cache_dtype": _kv, "dtype": map_torch_dtype, "quantization": _quantization, "q": _quantization,
    "pipeline_parallel_size": _not_modelled("pipeline parallelism"), "pp": _not_modelled("pipeline parallelism"),
    "data_parallel_size": _not_modelled("data parallelism (each replica is estimated as one)"),
    "speculative_config": _not_modelled("speculative decoding"),
    "cpu_offload_gb": _not_modelled("weights offloaded to the CPU"),
    "kv_cache_memory_bytes": _not_modelled("a fixed KV cache size (--kv-cache-memory)"),
    "swap_space": _not_modelled("CPU swap space"), "max_cpu_loras": _not_modelled("adapters cached on the CPU"),
}
VLLM_NO_EFFECT = frozenset({
    "host", "port", "served_model_name", "api_key", "trust_remote_code", "tokenizer", "tokenizer_mode", "revision",
    "download_dir", "load_format", "seed", "disable_log_requests", "disable_log_stats", "uvicorn_log_level",
    "enable_prefix_caching", "no_enable_prefix_caching", "enable_chunked_prefill", "chat_template",
    "enable_auto_tool_choice", "tool_call_parser", "reasoning_parser", "lora_modules", "enable_lora", "config",
    "generation_config", "override_generation_config", "max_logprobs", "disable_custom_all_reduce",
    "distributed_executor_backend", "hf_token", "allowed_local_media_path", "response_role", "ssl_keyfile",
    "ssl_certfile", "root_path", "middleware", "headless", "api_server_count", "log_level",
})

SGLANG_RULES: dict[str, Rule] = {
    "model_path": _to("model", "str"), "model": _to("model", "str"),
    "tp_size": _to("serving.tensor_parallel_size", "int"), "tp": _to("serving.tensor_parallel_size", "int"),
    "tensor_parallel_size": _to("serving.tensor_parallel_size", "int"),
    "mem_fraction_static": _to("serving.gpu_memory_utilization", "float"),
    "context_length": _to("serving.max_model_len", "int"),
    "chunked_prefill_size": _to("serving.max_num_batched_tokens", "int"),
    "max_running_requests": _to("serving.max_num_seqs", "int"),
    "page_size": _to("serving.block_size", "int"),
    "disable_cuda_graph": _to("serving.enforce_eager", "bool"),
    "max_loras_per_batch": _to("serving.max_loras", "int"), "max_lora_rank": _to("serving.max_lora_rank", "int"),
    "kv_cache_dtype": _kv, "dtype": map_torch_dtype, "quantization": _quantization,
    "pp_size": _not_modelled("pipeline parallelism"), "dp_size": _not_modelled("data parallelism"),
    "dp": _not_modelled("data parallelism"), "speculative_algorithm": _not_modelled("speculative decoding"),
    "max_total_tokens": _not_modelled("a fixed KV pool size"), "enable_dp_attention": _not_modelled("DP attention"),
    "cpu_offload_gb": _not_modelled("weights offloaded to the CPU"),
}
SGLANG_NO_EFFECT = frozenset({
    "host", "port", "served_model_name", "api_key", "trust_remote_code", "tokenizer_path", "tokenizer_mode",
    "revision", "download_dir", "load_format", "random_seed", "log_level", "log_requests", "enable_metrics",
    "enable_p2p_check", "attention_backend", "sampling_backend", "chat_template", "lora_paths", "enable_lora",
    "max_prefill_tokens", "schedule_policy", "disable_radix_cache", "tool_call_parser", "reasoning_parser",
    "cuda_graph_max_bs", "skip_server_warmup", "lora_backend", "max_loaded_loras", "lora_target_modules",
})


def _read(data: dict[str, Any], out: Collector, engine: str, rules: dict[str, Rule],
          no_effect: frozenset[str]) -> None:
    out.set("task", "serve", "(a serving engine's settings)")
    out.set("serving.engine", engine, "(the engine)")
    values = {key(k): v for k, v in data.items() if k != COMMAND_KEY}
    for name, value in values.items():
        if value is None or name in no_effect:
            continue
        if name in rules:
            rules[name](out, name, value)
    out.check_keys(values, set(rules) | no_effect)
    if engine == "vllm" and values.get("enable_lora") in (True, "true", "True") and "max_loras" not in values:
        out.set("serving.max_loras", 1, "enable_lora (vLLM's default max_loras 1)")
    if engine == "sglang" and (values.get("lora_paths") or values.get("enable_lora")) \
            and "max_loras_per_batch" not in values:
        out.set("serving.max_loras", 8, "lora_paths (SGLang's default max_loras_per_batch 8)")


def read_vllm(data: dict[str, Any], out: Collector) -> None:
    """vLLM engine arguments (a `vllm serve` command or its --config YAML) -> a serve job on vLLM."""
    _read(data, out, "vllm", VLLM_RULES, VLLM_NO_EFFECT)


def read_sglang(data: dict[str, Any], out: Collector) -> None:
    """SGLang server arguments (a `sglang.launch_server` command, or a YAML / JSON of them) -> a serve job on
    SGLang."""
    _read(data, out, "sglang", SGLANG_RULES, SGLANG_NO_EFFECT)


#: keys that only a serving engine's config has (dashes as underscores)
VLLM_MARKERS = frozenset({"gpu_memory_utilization", "max_num_seqs", "max_num_batched_tokens", "enforce_eager",
                          "max_model_len", "enable_lora", "max_loras", "enable_prefix_caching", "served_model_name",
                          "swap_space", "tensor_parallel_size"})
SGLANG_MARKERS = frozenset({"model_path", "tp_size", "mem_fraction_static", "context_length", "chunked_prefill_size",
                            "max_running_requests", "max_loras_per_batch", "disable_cuda_graph", "disable_radix_cache"})


def detect(data: dict[str, Any]) -> str | None:
    """vllm or sglang for a command's arguments or a config of either's keys (the one with more of its markers);
    None for neither."""
    if COMMAND_KEY in data:
        return str(data[COMMAND_KEY])
    keys = {key(k) for k in data}
    vllm, sglang = len(keys & VLLM_MARKERS), len(keys & SGLANG_MARKERS)
    if max(vllm, sglang) < 2 or vllm == sglang:
        return None
    return "vllm" if vllm > sglang else "sglang"
