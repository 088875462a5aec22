"""The job spec: what the user plans to run. One pydantic model for the library, the CLI and the API.

The fields and their defaults are the public contract of `shared/DESIGN.md`; this module only adds fields
(`optimizer_impl`, `lora.dropout`...) and never renames one. Unknown fields are rejected with their name.
"""

from __future__ import annotations

import difflib
from typing import Annotated, Any, Literal, get_args

from pydantic import (BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator,
                      model_validator)

Task = Literal["train", "inference", "serve"]
Head = Literal["auto", "causal_lm", "seq2seq_lm", "masked_lm", "sequence_classification", "token_classification"]
Method = Literal["full", "lora", "qlora", "freeze", "prompt_tuning", "prefix_tuning", "ia3", "adapter"]
WeightDtype = Literal["auto", "fp32", "bf16", "fp16", "int8", "nf4", "fp4", "int4", "fp8", "mxfp4"]
MixedPrecision = Literal["no", "bf16", "fp16"]
Optimizer = Literal[
    "adamw", "adamw_8bit", "paged_adamw_8bit", "paged_adamw_32bit", "sgd", "sgd_momentum", "adafactor", "lion", "none"
]
OptimizerImpl = Literal["auto", "fused", "foreach", "for_loop"]
Attention = Literal["eager", "sdpa", "flash_attention_2"]
KvCacheDtype = Literal["fp32", "bf16", "fp16", "fp8", "int8"]
Allocator = Literal["default", "expandable_segments"]
Parallelism = Literal["auto", "none", "ddp", "fsdp", "deepspeed"]
QuantStorage = Literal["auto", "uint8", "bf16", "fp16", "fp32"]

QUANTIZED_DTYPES = ("int8", "nf4", "fp4", "int4", "fp8", "mxfp4")
#: what zero_stage names under parallelism fsdp (torch.distributed.fsdp.ShardingStrategy)
FSDP_STRATEGY = {3: "FULL_SHARD", 2: "SHARD_GRAD_OP", 0: "NO_SHARD"}


class SpecError(ValueError):
    """Bad input: carries a list of (field path, message) pairs, each naming the field and what is allowed."""

    def __init__(self, errors: list[tuple[str, str]]):
        self.errors = errors
        super().__init__("; ".join(f"{loc}: {msg}" if loc else msg for loc, msg in errors))


class UnknownIdError(SpecError):
    """A model or GPU id that is not in the catalog (HTTP 404); `suggestions` holds the closest catalog ids."""

    def __init__(self, field: str, message: str, suggestions: list[str]):
        self.field, self.suggestions = field, suggestions
        super().__init__([(field, message)])


class FieldConflict(ValueError):
    """A cross-field rule broken, raised inside a model validator; names the field to report it under."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(message)


#: bounds on what a request may hold: names and list lengths (a 60,000-name target list once took 18 s)
MAX_NAME_LENGTH = 300
MAX_TARGET_MODULES = 256
Name = Annotated[str, StringConstraints(max_length=MAX_NAME_LENGTH)]


#: mappings and lists nested deeper than this are refused (real configs nest a few levels)
MAX_DEPTH = 64
#: values one file or pasted config may hold once YAML aliases are expanded (a config.json holds a few hundred)
MAX_VALUES = 200_000


def shape_problem(value: Any, max_depth: int = MAX_DEPTH, max_values: int = MAX_VALUES) -> str | None:
    """What is too big about a loaded value, walked without recursion as the code reading it would walk it (a
    YAML alias counts each time it is used): nesting past `max_depth`, or more than `max_values` values."""
    seen, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        seen += 1
        if seen > max_values:
            return f"holds more than {max_values:,} values (aliases expanded)"
        if isinstance(item, (dict, list)):
            if level > max_depth:
                return f"is nested too deeply (more than {max_depth} levels)"
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, level + 1) for child in children)
    return None


def _takes_bool(annotation: Any) -> bool:
    return annotation is bool or bool in get_args(annotation)


class StrictModel(BaseModel):
    """Unknown fields are errors, and so is true/false where a number is asked for (JSON's false is not 0)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, data: Any) -> Any:
        # one pass over the input's keys (a per-field validator cost 10% of a warm estimate)
        if isinstance(data, dict):
            for key, value in data.items():
                if value is True or value is False:
                    field = cls.model_fields.get(key) or next(
                        (f for f in cls.model_fields.values() if f.alias == key), None)
                    if field is not None and not _takes_bool(field.annotation):
                        annotation, args = field.annotation, get_args(field.annotation)
                        numeric = annotation in (int, float) or any(a in (int, float) or type(a) in (int, float)
                                                                    for a in args)
                        raise FieldConflict(key, f"expected {'a number' if numeric else 'a name'}, "
                                                 f"got {str(value).lower()}")
        return data


class LoraSpec(StrictModel):
    r: int = Field(16, ge=1, le=4096, description="LoRA rank")
    alpha: float = Field(32, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: Literal["all-linear"] | Annotated[list[Name], Field(max_length=MAX_TARGET_MODULES)] = Field(
        "all-linear", description="'all-linear' (PEFT's shorthand) or module name suffixes, e.g. [q_proj, v_proj] "
                                  f"(at most {MAX_TARGET_MODULES})"
    )

    @model_validator(mode="after")
    def _non_empty(self) -> "LoraSpec":
        if isinstance(self.target_modules, list) and not self.target_modules:
            raise ValueError("target_modules must not be empty (use 'all-linear' or a list of module names)")
        return self


class InferenceSpec(StrictModel):
    batch_size: int = Field(1, ge=1, le=1_000_000)
    prompt_len: int = Field(1024, ge=1, le=10_000_000)
    max_new_tokens: int = Field(256, ge=0, le=10_000_000)
    kv_cache_dtype: KvCacheDtype = "bf16"
    num_beams: int = Field(1, ge=1, le=256, description="beam search: generate() runs batch_size x num_beams "
                                                         "sequences from the prefill on")
    cache_implementation: Literal["dynamic", "static"] = Field(
        "dynamic", description="generate()'s cache: dynamic (DynamicCache, grown by torch.cat each step) or static "
                               "(StaticCache, preallocated for prompt + new tokens)")


ServingEngine = Literal["vllm", "sglang"]
ServingKvDtype = Literal["auto", "bf16", "fp16", "fp8"]
#: the LoRA ranks vLLM accepts (vllm/config/lora.py: max_lora_rank must be one of these)
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


class ServingSpec(StrictModel):
    """A serving engine's settings (task serve), named as the engines name them; null = the engine's default."""

    engine: ServingEngine = Field("vllm", description="vllm (V1 engine) or sglang")
    tensor_parallel_size: int = Field(1, ge=1, le=1024, description="GPUs one model is split across")
    gpu_memory_utilization: float | None = Field(
        None, gt=0, le=1, description="vLLM: the share of the GPU's memory the instance may use (default 0.92, v0.21); "
                                      "SGLang: mem_fraction_static, (weights + KV pool) / GPU memory (default: "
                                      "SGLang's rule from the GPU's memory and TP)")
    max_model_len: int | None = Field(
        None, ge=-1, le=100_000_000, description="tokens per request (prompt + output); null = the model's "
                                                 "max_position_embeddings; -1 = the largest that fits (vLLM's "
                                                 "auto-fit)")
    max_num_seqs: int | None = Field(None, ge=1, le=1_000_000, description="requests per step; null = the "
                                                                             "engine's default for the GPU")
    max_num_batched_tokens: int | None = Field(
        None, ge=1, le=100_000_000, description="tokens per step (the chunked-prefill budget the profile run is "
                                                "sized by); null = the engine's default for the GPU")
    kv_cache_dtype: ServingKvDtype = Field("auto", description="auto = the model's dtype; fp8 halves the cache")
    block_size: int | None = Field(None, ge=1, le=4096, description="tokens per KV page; null = the engine's "
                                                                    "default (vLLM 16, SGLang 1)")
    enforce_eager: bool = Field(False, description="no CUDA graphs")
    estimate_cuda_graphs: bool = Field(
        True, description="vLLM subtracts its CUDA graph estimate from the KV budget "
                          "(VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS, the default since v0.21); false: graphs come "
                          "on top of the requested share (v0.20 and older)")
    max_loras: int = Field(0, ge=0, le=4096, description="multi-LoRA serving: adapter slots on the GPU (vLLM "
                                                         "max_loras, SGLang max_loras_per_batch); 0 = LoRA off")
    max_lora_rank: int = Field(16, ge=1, le=4096, description="the rank every slot is sized for")
    fully_sharded_loras: bool = Field(False, description="vLLM: shard both LoRA matrices under TP (default: the "
                                                         "A matrices of column-parallel layers are replicated)")

    @model_validator(mode="after")
    def _engine_rules(self) -> "ServingSpec":
        if self.engine == "vllm" and self.max_loras and self.max_lora_rank not in VLLM_LORA_RANKS:
            raise FieldConflict("max_lora_rank", f"vLLM accepts max_lora_rank {', '.join(map(str, VLLM_LORA_RANKS))}; "
                                                 f"got {self.max_lora_rank} (an adapter of lower rank takes a slot "
                                                 "of this rank)")
        if self.engine == "sglang" and self.fully_sharded_loras:
            raise FieldConflict("fully_sharded_loras", "fully_sharded_loras is a vLLM setting")
        return self


class GpuMemorySpec(StrictModel):
    memory_gib: float = Field(gt=0, le=100_000)


class JobSpec(StrictModel):
    """A planned training or inference job. Every field but `model` (or `model_config`) has a default."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, validate_assignment=True, allow_inf_nan=False)

    model: Name | None = Field(None, description="catalog id (Hugging Face repo id) or, in the CLI, a config.json path")
    inline_config: dict[str, Any] | None = Field(None, alias="model_config", description="an inline config.json")
    task: Task = "train"
    head: Head = "auto"
    num_labels: int = Field(2, ge=1, le=1_000_000)
    method: Method = "lora"
    weight_dtype: WeightDtype = Field(
        "auto", description="storage dtype of the base weights; auto = the checkpoint's own quantization_config "
                            "when its config.json has one, else bf16 (nf4 under method qlora)")
    mixed_precision: MixedPrecision = "bf16"
    double_quant: bool = True
    quant_storage: QuantStorage = Field(
        "auto", description="bitsandbytes bnb_4bit_quant_storage, the dtype the packed 4-bit weights are stored "
                            "in (nf4/fp4 only; always 0.5 B per weight): auto = the compute dtype under FSDP or "
                            "DeepSpeed ZeRO-3 (what the FSDP-QLoRA recipes set, so the weights can be sharded), "
                            "else uint8 (bitsandbytes' default)")
    optimizer: Optimizer = "adamw"
    optimizer_impl: OptimizerImpl = Field(
        "auto", description="torch optimizer implementation; auto = fused AdamW as the HF Trainer picks, else foreach"
    )
    lora: LoraSpec = Field(default_factory=LoraSpec)
    num_virtual_tokens: int = Field(20, ge=1, le=100_000)
    adapter_size: int = Field(64, ge=1, le=100_000)
    micro_batch_size: int = Field(1, ge=1, le=1_000_000)
    seq_len: int = Field(2048, ge=1, le=10_000_000)
    gradient_accumulation_steps: int = Field(1, ge=1, le=1_000_000)
    gradient_checkpointing: bool = False
    attention: Attention = "sdpa"
    num_gpus: int = Field(1, ge=1, le=100_000)
    zero_stage: Literal[0, 1, 2, 3] = 0
    offload_optimizer: bool = False
    offload_params: bool = False
    inference: InferenceSpec = Field(default_factory=InferenceSpec)
    serving: ServingSpec = Field(default_factory=ServingSpec, description="the serving engine (task serve)")
    gpu: Name | GpuMemorySpec = "H100-SXM-80GB"
    parallelism: Parallelism = Field(
        "auto", description="auto: deepspeed when zero_stage > 0, ddp when num_gpus > 1, else none. Under fsdp, "
                            "zero_stage 3 = FULL_SHARD (reshard_after_forward=True), 2 = SHARD_GRAD_OP (False), "
                            "0 = NO_SHARD; offload_params = FSDP CPU offload (params, grads, optimizer states)")
    fsdp_version: Literal[1, 2] = Field(2, description="torch FSDP1 (flat parameters) or FSDP2 (fully_shard)")
    fsdp_reduce_dtype: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="FSDP MixedPrecisionPolicy.reduce_dtype, the dtype gradients are reduce-scattered in; "
                            "auto = param_dtype (the compute dtype), accelerate's default")
    zero3_prefetch_bucket_size: int | None = Field(
        None, ge=0, le=10**13, description="DeepSpeed stage3_prefetch_bucket_size, in parameters (ZeRO-3); null = "
                                           "the HF Trainer's 'auto', 0.9 * hidden_size^2")
    zero3_max_live_parameters: int | None = Field(
        None, ge=0, le=10**13, description="DeepSpeed stage3_max_live_parameters (ZeRO-3): the most gathered "
                                           "parameters it keeps; null = DeepSpeed's default, 1e9")
    zero3_init: bool = Field(True, description="ZeRO-3 builds the model under deepspeed.zero.Init, each process "
                                               "materialising one layer at a time (the HF Trainer's way; accelerate "
                                               "zero3_init_flag); false: every process loads the whole model")
    sequence_parallel_size: int = Field(
        1, ge=1, le=1024, description="sequence / context parallel degree (divides num_gpus): each GPU of a group "
                                      "holds seq_len / size tokens. DeepSpeed Ulysses under parallelism deepspeed "
                                      "(accelerate sp_backend deepspeed), torch context parallelism under fsdp "
                                      "(FSDP2, accelerate cp_size)")
    allocator: Allocator = Field(
        "default", description="PyTorch's CUDA caching allocator: default, or expandable_segments "
                               "(PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True)"
    )

    @field_validator("inline_config")
    @classmethod
    def _bounded_config(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        problem = shape_problem(value) if value is not None else None
        if problem:
            raise ValueError(f"the config {problem}")
        return value

    @model_validator(mode="before")
    @classmethod
    def _qlora_defaults_to_nf4(cls, data: Any) -> Any:
        # QLoRA means 4-bit base weights: a spec that says `method: qlora` and leaves weight_dtype out gets nf4
        # (the QLoRA paper's choice) instead of the bf16 default; an explicit non-4-bit dtype is an error below.
        if isinstance(data, dict) and data.get("method") == "qlora" and data.get("weight_dtype", "auto") == "auto":
            data = {**data, "weight_dtype": "nf4"}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> "JobSpec":
        if (self.model is None) == (self.inline_config is None):
            raise FieldConflict("model", "give exactly one of 'model' (a catalog id or config path) or "
                                         "'model_config' (inline)")
        if self.method == "qlora" and self.weight_dtype not in ("nf4", "fp4"):
            raise FieldConflict("weight_dtype", f"method 'qlora' needs weight_dtype 'nf4' or 'fp4', "
                                                f"not '{self.weight_dtype}'")
        if self.task == "train" and self.weight_dtype in QUANTIZED_DTYPES and self.method in ("full", "freeze"):
            raise FieldConflict("method",
                f"method '{self.method}' cannot train {self.weight_dtype} weights: quantized weights are frozen; "
                "use method 'qlora' (nf4/fp4) or 'lora', or a float weight_dtype"
            )
        if self.task == "train" and self.weight_dtype == "int4":
            raise FieldConflict("weight_dtype", "weight_dtype 'int4' (GPTQ/AWQ) is modelled for serving only: "
                                                "use task 'inference'")
        if self.quant_storage != "auto" and self.weight_dtype not in ("nf4", "fp4", "auto"):
            raise FieldConflict("quant_storage", "quant_storage is bitsandbytes' storage dtype of 4-bit weights: "
                                                 f"it applies to weight_dtype nf4 or fp4, not '{self.weight_dtype}'")
        engine = self.parallel_engine
        if engine == "fsdp":
            self._check_fsdp()
        elif self.parallelism in ("none", "ddp") and self.zero_stage:
            raise FieldConflict("parallelism", f"zero_stage {self.zero_stage} is DeepSpeed's (parallelism "
                                               "deepspeed) or FSDP's sharding (parallelism fsdp), not "
                                               f"'{self.parallelism}'")
        elif self.parallelism == "none" and self.num_gpus > 1:
            raise FieldConflict("parallelism", "parallelism 'none' runs on one GPU: set num_gpus 1, or ddp, fsdp "
                                               "or deepspeed")
        if (engine == "deepspeed" and self.zero_stage == 3 and self.weight_dtype in ("nf4", "fp4")
                and self.quant_storage_dtype == "uint8"):
            raise FieldConflict("quant_storage", "4-bit weights in uint8 storage under DeepSpeed ZeRO-3 are not "
                                                 "modelled (PEFT's ZeRO-3 QLoRA recipe sets bnb_4bit_quant_storage "
                                                 f"to the compute dtype): use 'auto' or '{self.compute_dtype}'")
        if engine != "fsdp" and self.offload_params and self.zero_stage != 3:
            raise FieldConflict("offload_params", "offload_params needs zero_stage 3 (DeepSpeed offloads "
                                                  "parameters only under ZeRO-3)")
        if engine != "fsdp" and self.offload_optimizer and self.zero_stage == 0:
            raise FieldConflict("offload_optimizer", "offload_optimizer needs zero_stage 1, 2 or 3 (a DeepSpeed "
                                                     "ZeRO feature)")
        if self.offload_optimizer and self.task == "train" and self.optimizer in ("adamw_8bit", "paged_adamw_8bit",
                                                                                 "paged_adamw_32bit"):
            raise FieldConflict("optimizer", f"'{self.optimizer}' is a bitsandbytes optimizer, which steps CUDA "
                                             "tensors; with offload_optimizer DeepSpeed steps the optimizer on the "
                                             "CPU (DeepSpeedCPUAdam): use 'adamw', or turn offload_optimizer off")
        if self.sequence_parallel_size > 1:
            self._check_sequence_parallel(engine)
        if engine != "fsdp" and self.fsdp_reduce_dtype != "auto":
            raise FieldConflict("fsdp_reduce_dtype", "fsdp_reduce_dtype applies to parallelism 'fsdp'; leave it "
                                                     "at 'auto'")
        if not (engine == "deepspeed" and self.zero_stage == 3):
            for name, default in (("zero3_prefetch_bucket_size", None), ("zero3_max_live_parameters", None),
                                  ("zero3_init", True)):
                if getattr(self, name) != default:
                    raise FieldConflict(name, f"{name} is a DeepSpeed ZeRO-3 setting: set zero_stage 3 (parallelism "
                                              f"deepspeed), or leave it at {'null' if default is None else default}")
        if self.method == "prefix_tuning" and self.gradient_checkpointing and self.task == "train":
            raise FieldConflict("gradient_checkpointing", "PEFT's prefix tuning does not work with gradient "
                                                          "checkpointing (peft refuses it when the adapter is set up)")
        if self.zero_stage and self.task != "train":
            raise FieldConflict("zero_stage", "zero_stage applies to training; use task 'train' or zero_stage 0")
        if self.weight_dtype == "mxfp4" and self.task == "train":
            raise FieldConflict("weight_dtype", "MXFP4 experts are not trained as such: fine-tuning dequantizes them on "
                                                "load (transformers Mxfp4Config(dequantize=True)); set weight_dtype "
                                                "bf16")
        if self.weight_dtype == "fp8" and self.task != "serve":
            raise FieldConflict("weight_dtype", "weight_dtype 'fp8' (fp8 checkpoints) is modelled for serving "
                                                "only: use task 'serve'")
        if self.task == "serve":
            self._check_serve()
        return self

    def _check_serve(self) -> None:
        sv = self.serving
        if self.parallelism not in ("auto", "none"):
            raise FieldConflict("parallelism", "a serving engine splits the model by serving.tensor_parallel_size; "
                                               "leave parallelism at 'auto'")
        if "num_gpus" in self.model_fields_set and self.num_gpus % sv.tensor_parallel_size:
            raise FieldConflict("num_gpus", f"num_gpus {self.num_gpus} must be a multiple of "
                                            f"serving.tensor_parallel_size ({sv.tensor_parallel_size}): each "
                                            "replica takes tensor_parallel_size GPUs")
        if sv.engine == "sglang" and self.weight_dtype in ("nf4", "fp4", "int8"):
            raise FieldConflict("weight_dtype", f"bitsandbytes weights ({self.weight_dtype}) under SGLang are not "
                                                "modelled: use engine vllm, or bf16 / fp8 / int4 weights")

    @property
    def parallel_engine(self) -> str:
        """The resolved `parallelism`: auto is deepspeed when zero_stage > 0, ddp when num_gpus > 1, else none."""
        if self.parallelism != "auto":
            return self.parallelism
        return "deepspeed" if self.zero_stage else "ddp" if self.num_gpus > 1 else "none"

    def _check_sequence_parallel(self, engine: str) -> None:
        sp = self.sequence_parallel_size
        if self.task != "train":
            raise FieldConflict("sequence_parallel_size", "sequence parallelism applies to training; use task "
                                                          "'train' or sequence_parallel_size 1")
        if engine not in ("deepspeed", "fsdp"):
            raise FieldConflict("sequence_parallel_size", "sequence parallelism runs under parallelism 'deepspeed' "
                                                          "(Ulysses) or 'fsdp' (FSDP2 context parallelism), not "
                                                          f"'{engine}'")
        if self.num_gpus % sp:
            raise FieldConflict("sequence_parallel_size", f"sequence_parallel_size {sp} must divide num_gpus "
                                                          f"({self.num_gpus})")
        if self.seq_len % sp:
            raise FieldConflict("sequence_parallel_size", f"seq_len {self.seq_len} must be a multiple of "
                                                          f"sequence_parallel_size {sp} (each GPU takes an equal "
                                                          "slice; pad to a multiple)")
        if engine == "fsdp" and self.seq_len % (2 * sp):
            raise FieldConflict("sequence_parallel_size", f"seq_len {self.seq_len} must be a multiple of 2 x "
                                                          f"sequence_parallel_size ({2 * sp}): torch's context "
                                                          "parallelism splits each sequence into 2 x size chunks "
                                                          "(load balancing)")
        if engine == "fsdp" and self.fsdp_version != 2:
            raise FieldConflict("sequence_parallel_size", "context parallelism runs on FSDP2 (accelerate cp_size): "
                                                          "set fsdp_version 2")
        if engine == "fsdp" and self.attention != "sdpa":
            raise FieldConflict("attention", "context parallelism needs attention 'sdpa' (the HF Trainer refuses "
                                             "other kernels; torch's ring attention wraps SDPA)")
        if engine == "deepspeed" and self.attention == "eager":
            raise FieldConflict("attention", "DeepSpeed Ulysses needs attention 'sdpa' or 'flash_attention_2' "
                                             "(eager is refused)")

    def _check_fsdp(self) -> None:
        if self.task != "train":
            raise FieldConflict("parallelism", "parallelism 'fsdp' applies to training; use task 'train'")
        if self.zero_stage == 1:
            raise FieldConflict("zero_stage", "under parallelism 'fsdp' zero_stage names FSDP's sharding: 3 "
                                              "(FULL_SHARD), 2 (SHARD_GRAD_OP) or 0 (NO_SHARD); ZeRO-1 has no FSDP "
                                              "equivalent")
        if self.offload_optimizer:
            raise FieldConflict("offload_optimizer", "FSDP's CPU offload moves parameters, gradients and optimizer "
                                                     "states together: set offload_params instead")
        if self.offload_params and self.zero_stage == 0:
            raise FieldConflict("offload_params", "FSDP CPU offload applies to sharded parameters: zero_stage 2 "
                                                  "or 3")
        if self.weight_dtype in ("int8", "int4"):
            raise FieldConflict("weight_dtype", f"{self.weight_dtype} weights under FSDP are not modelled: FSDP "
                                                "shards floating-point tensors only; use nf4/fp4 (QLoRA with "
                                                "bnb_4bit_quant_storage), parallelism 'deepspeed', or a float "
                                                "weight_dtype")
        storage = self.quant_storage_dtype
        if self.weight_dtype in ("nf4", "fp4") and storage == "uint8" and self.fsdp_version == 1:
            raise FieldConflict("quant_storage", "FSDP1 cannot flatten the uint8 packed 4-bit weights with the "
                                                 "block's float parameters (torch: 'Must flatten tensors with "
                                                 "uniform dtype'): set quant_storage to the compute dtype "
                                                 f"('{self.compute_dtype}') or 'auto'")
        if self.weight_dtype in ("nf4", "fp4") and storage not in ("uint8", self.compute_dtype):
            raise FieldConflict("quant_storage", f"quant_storage '{storage}' differs from FSDP's param_dtype "
                                                 f"('{self.compute_dtype}', the compute dtype): the all-gather "
                                                 "would cast the packed 4-bit bytes into garbage; set it to "
                                                 f"'{self.compute_dtype}' or 'auto'")

    @property
    def quant_storage_dtype(self) -> str:
        """The resolved `quant_storage`: auto is the compute dtype under FSDP or DeepSpeed ZeRO-3 (bitsandbytes'
        fsdp_qlora guide, PEFT's FSDP/DeepSpeed QLoRA recipes), else uint8."""
        if self.quant_storage != "auto":
            return self.quant_storage
        sharded = self.parallel_engine == "fsdp" or (self.parallel_engine == "deepspeed" and self.zero_stage == 3)
        return self.compute_dtype if sharded else "uint8"

    @property
    def reduce_dtype(self) -> str:
        """FSDP's gradient reduce dtype: `fsdp_reduce_dtype`, auto = the compute dtype (param_dtype)."""
        return self.compute_dtype if self.fsdp_reduce_dtype == "auto" else self.fsdp_reduce_dtype

    @property
    def compute_dtype(self) -> str:
        """The dtype matmuls run in: the autocast dtype, else the weights' own float dtype."""
        if self.mixed_precision != "no":
            return self.mixed_precision
        if self.weight_dtype == "auto":  # resolved by memplan.job: the checkpoint's quantization, else bf16
            return "bf16"
        return self.weight_dtype if self.weight_dtype in ("fp32", "bf16", "fp16") else "fp32"


def _field_names(model_cls: type[BaseModel]) -> list[str]:
    return [f.alias or name for name, f in model_cls.model_fields.items()]


_SUBMODELS = {"lora": LoraSpec, "inference": InferenceSpec, "gpu": GpuMemorySpec, "serving": ServingSpec}


def format_error(err: dict) -> tuple[str, str]:
    """(field path, message) of one pydantic error on a JobSpec: names the field and what it allows."""
    loc_parts = [str(p) for p in err.get("loc", ()) if not str(p).startswith(("function-", "literal["))]
    # pydantic adds the union member name ("str", "GpuMemorySpec", "list[str]") to the path: drop those
    loc_parts = [p for p in loc_parts if p not in ("str", "GpuMemorySpec", "list[str]", "literal['all-linear']",
                                                   "constrained-str", "list[constrained-str]")]
    conflict = (err.get("ctx") or {}).get("error")
    if isinstance(conflict, FieldConflict):  # a cross-field rule: report it under the field it names
        loc_parts = [*loc_parts, conflict.field]
    loc = ".".join(loc_parts)
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        parent = loc_parts[0] if len(loc_parts) > 1 else None
        model_cls = _SUBMODELS.get(parent, JobSpec) if parent else JobSpec
        allowed = _field_names(model_cls)
        name = loc_parts[-1] if loc_parts else "?"
        close = difflib.get_close_matches(name, allowed, n=1) or [a for a in allowed if name.startswith(a)][:1]
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return loc, f"unknown field '{name}'{hint}{ALLOWED_FIELDS}{', '.join(allowed)}"
    msg = err.get("msg", "invalid value")
    if kind == "literal_error":
        msg = f"{msg}, got {shown(err.get('input'))}"
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    return loc, msg


def parse_spec(data: dict[str, Any] | JobSpec) -> JobSpec:
    """Validate a job spec dict; raise SpecError naming each bad field and what it allows."""
    if isinstance(data, JobSpec):
        return data
    if not isinstance(data, dict):
        raise SpecError([("", f"a job spec must be a mapping of fields, got {type(data).__name__}")])
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(describe_errors(exc.errors())) from None


def printable(text: str) -> str:
    """Text that any UTF-8 writer can encode: a lone surrogate (valid in a JSON string, not in UTF-8) becomes its
    \\udXXX escape instead of failing the response or the terminal."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def shown(value: Any, limit: int = 80) -> str:
    """A user's value as an error message may quote it: repr (which escapes lone surrogates and control
    characters), cut to `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def drop_union_noise(errors: list[dict]) -> list[dict]:
    """A union (gpu: str | {memory_gib}; target_modules: 'all-linear' | [names]) reports a problem per member:
    keep the member that matches the input's kind (an object's, a string's, a list's)."""
    if len(errors) < 2:
        return errors

    def noise(e: dict) -> bool:
        kind, value = e.get("type"), e.get("input")
        return (kind == "string_type" and isinstance(value, dict)) \
            or (kind in ("model_type", "dict_type", "model_attributes_type") and isinstance(value, str)
                and any(x.get("type", "").startswith("string") for x in errors)) \
            or (kind == "literal_error" and isinstance(value, list)
                and any(str(part).startswith("literal[") for part in e.get("loc", ())))
    return [e for e in errors if not noise(e)]


#: the most errors one answer lists; the rest are counted in a last item (a body of 16,000 unknown fields must not
#: cost seconds to describe, nor megabytes to send)
MAX_REPORTED_ERRORS = 20


def describe_errors(errors: list[dict], limit: int = MAX_REPORTED_ERRORS) -> list[tuple[str, str]]:
    """format_error over pydantic's error list, without repeats (a union reports one problem per member), at most
    `limit` of them and then one item counting the rest."""
    errors = drop_union_noise(errors)
    seen: dict[tuple[str, str], None] = {}
    for n, err in enumerate(errors):
        if len(seen) == limit:
            seen[("", f"... and {len(errors) - n} more errors")] = None
            break
        seen.setdefault(format_error(err), None)
    return allowed_fields_once(list(seen))


ALLOWED_FIELDS = "; allowed fields: "


def allowed_fields_once(errors: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """(field, message) pairs with an unknown field's list of allowed fields said once per object: later unknown
    fields of the same object refer to it (twenty unknown fields once made a 21 kB answer)."""
    listed: set[str] = set()
    out = []
    for loc, msg in errors:
        if ALLOWED_FIELDS in msg:
            parent = loc.rsplit(".", 1)[0] if "." in loc else ""
            if parent in listed:
                msg = msg.split(ALLOWED_FIELDS)[0] + "; allowed fields as listed above"
            listed.add(parent)
        out.append((loc, msg))
    return out
