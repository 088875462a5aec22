"""memplan.importers: the configs people keep (TrainingArguments / TRL, PEFT, DeepSpeed, accelerate, axolotl,
memplan) -> one job spec. Fixtures in tests/fixtures/configs are written like real projects' files."""

import json
from pathlib import Path

import pytest
import yaml

from memplan.importers import ImportResult, detect_format, import_configs
from memplan.spec import SpecError, parse_spec

FIX = Path(__file__).parent / "fixtures" / "configs"
MODEL = "meta-llama/Llama-3.1-8B"


def fx(name: str) -> str:
    return str(FIX / name)


def write(tmp_path: Path, name: str, data) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(data) if name.endswith(".json") else yaml.safe_dump(data))
    return str(path)


EXPECTED = {
    "training_args.json": ("trainer", {
        "micro_batch_size": 2, "gradient_accumulation_steps": 16, "gradient_checkpointing": True,
        "mixed_precision": "bf16", "optimizer": "adamw", "optimizer_impl": "fused",
    }),
    "trl_sft_qlora.yaml": ("trainer", {
        "model": "Qwen/Qwen2.5-7B-Instruct", "head": "causal_lm", "method": "qlora", "weight_dtype": "nf4",
        "mixed_precision": "bf16", "double_quant": True, "optimizer": "paged_adamw_8bit",
        "lora": {"r": 32, "alpha": 64, "dropout": 0.05, "target_modules": "all-linear"},
        "micro_batch_size": 4, "seq_len": 4096, "gradient_accumulation_steps": 8, "gradient_checkpointing": True,
        "attention": "flash_attention_2",
    }),
    "trainer_ddp.yaml": ("trainer", {
        "micro_batch_size": 4, "gradient_accumulation_steps": 2, "gradient_checkpointing": True,
        "mixed_precision": "bf16", "optimizer": "adamw", "optimizer_impl": "foreach",
    }),
    "ds_zero2_offload.json": ("deepspeed", {"optimizer": "adamw", "zero_stage": 2, "offload_optimizer": True}),
    "ds_zero3.json": ("deepspeed", {"optimizer": "adamw", "zero_stage": 3, "offload_optimizer": False,
                                    "offload_params": False, "zero3_max_live_parameters": 1_000_000_000}),
    "accelerate_fsdp.yaml": ("accelerate", {
        "num_gpus": 8, "mixed_precision": "bf16", "parallelism": "fsdp", "fsdp_version": 1, "zero_stage": 3,
        "offload_params": False, "gradient_checkpointing": True,
    }),
    "accelerate_fsdp2_offload.yaml": ("accelerate", {
        "num_gpus": 4, "mixed_precision": "bf16", "parallelism": "fsdp", "fsdp_version": 2, "zero_stage": 3,
        "offload_params": True, "gradient_checkpointing": False,
    }),
    "accelerate_deepspeed.yaml": ("accelerate", {
        "num_gpus": 16, "mixed_precision": "bf16", "zero_stage": 3, "offload_optimizer": True, "offload_params": True,
        "gradient_accumulation_steps": 4, "zero3_init": True,
    }),
    "axolotl_qlora.yaml": ("axolotl", {
        "model": "NousResearch/Meta-Llama-3-8B", "method": "qlora", "weight_dtype": "nf4", "double_quant": True,
        "optimizer": "paged_adamw_32bit",
        "lora": {"r": 32, "alpha": 16, "dropout": 0.05, "target_modules": "all-linear"},
        "micro_batch_size": 2, "seq_len": 4096, "gradient_accumulation_steps": 4, "gradient_checkpointing": True,
        "attention": "flash_attention_2",
    }),
    "peft_lora": ("peft", {
        "model": "meta-llama/Llama-3.1-8B-Instruct", "head": "causal_lm", "method": "lora",
        "lora": {"r": 64, "alpha": 16, "dropout": 0.1,
                 "target_modules": ["q_proj", "up_proj", "gate_proj", "o_proj", "v_proj", "down_proj", "k_proj"]},
    }),
    "peft_prompt_tuning": ("peft", {"model": "Qwen/Qwen2.5-0.5B", "head": "causal_lm", "method": "prompt_tuning",
                                    "num_virtual_tokens": 32}),
    "memplan_job.yaml": ("memplan", {"model": MODEL, "task": "train", "gpu": "A100-SXM-80GB", "num_gpus": 8,
                                     "lora": {"target_modules": ["q_proj", "v_proj"]}}),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_fixture_maps_to_the_exact_job(name):
    kind, job = EXPECTED[name]
    result = import_configs([fx(name)])
    assert isinstance(result, ImportResult)
    assert result.job == job
    assert result.sources == [f"{kind}:{fx(name)}"]
    assert {field.split(".")[0] for _, _, field in result.mapped} == set(job)
    assert all(file == fx(name) for file, _, _ in result.mapped)
    parse_spec({"model": MODEL, **result.job})  # every fixture gives a valid spec once a model is known


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_detect_format(name):
    kind, _ = EXPECTED[name]
    path = FIX / name
    data = json.loads((path / "adapter_config.json").read_text()) if path.is_dir() else yaml.safe_load(path.read_text())
    assert detect_format(str(path), data) == kind


def test_trainer_plus_deepspeed_auto_plus_base_model():
    result = import_configs([fx("trainer_ddp.yaml"), fx("ds_zero2_offload.json")], base={"model": MODEL})
    assert result.job == {
        "model": MODEL, "mixed_precision": "bf16", "optimizer": "adamw", "optimizer_impl": "foreach",
        "micro_batch_size": 4, "gradient_accumulation_steps": 2, "gradient_checkpointing": True, "zero_stage": 2,
        "offload_optimizer": True,
    }
    assert result.sources == [f"trainer:{fx('trainer_ddp.yaml')}", f"deepspeed:{fx('ds_zero2_offload.json')}"]
    ds = fx("ds_zero2_offload.json")
    # the "auto" values took the trainer's: listed as mapped, not as ignored
    assert (ds, "train_micro_batch_size_per_gpu (auto)", "micro_batch_size") in result.mapped
    assert (ds, "gradient_accumulation_steps (auto)", "gradient_accumulation_steps") in result.mapped
    assert (ds, "bf16.enabled (auto)", "mixed_precision") in result.mapped
    assert ("base", "model", "model") in result.mapped
    assert not [i for i in result.ignored if i[2].startswith("auto")]
    spec = parse_spec(result.job)
    assert (spec.zero_stage, spec.offload_optimizer, spec.micro_batch_size, spec.optimizer_impl) == (2, True, 4,
                                                                                                    "foreach")


def test_trainer_reads_the_deepspeed_file_it_references_once():
    result = import_configs([fx("trl_sft_full_zero3.yaml"), fx("ds_zero3.json")], base={"model": MODEL})
    assert result.sources == [f"trainer:{fx('trl_sft_full_zero3.yaml')}", f"deepspeed:{fx('ds_zero3.json')}"]
    assert result.job == {
        "model": MODEL, "weight_dtype": "bf16", "mixed_precision": "bf16", "optimizer": "adamw",
        "micro_batch_size": 2, "seq_len": 2048, "gradient_accumulation_steps": 4, "gradient_checkpointing": True,
        "attention": "sdpa", "zero_stage": 3, "offload_optimizer": False, "offload_params": False,
        "zero3_max_live_parameters": 1_000_000_000,
    }
    assert parse_spec(result.job).zero_stage == 3


def test_axolotl_full_fine_tune_with_its_deepspeed_file():
    result = import_configs([fx("axolotl_full_zero2.yaml")])
    assert result.sources == [f"axolotl:{fx('axolotl_full_zero2.yaml')}", f"deepspeed:{fx('ds_zero2_offload.json')}"]
    assert result.job == {
        "model": "mistralai/Mistral-7B-v0.1", "method": "full", "weight_dtype": "bf16", "mixed_precision": "bf16",
        "optimizer": "adamw", "optimizer_impl": "fused", "micro_batch_size": 1, "seq_len": 2048,
        "gradient_accumulation_steps": 8, "gradient_checkpointing": True, "attention": "flash_attention_2",
        "zero_stage": 2, "offload_optimizer": True,
    }
    # the DeepSpeed "auto" values take axolotl's micro batch, accumulation and bf16
    ds = fx("ds_zero2_offload.json")
    assert (ds, "train_micro_batch_size_per_gpu (auto)", "micro_batch_size") in result.mapped
    assert not [i for i in result.ignored if i[2].startswith("auto")]
    assert parse_spec(result.job).method == "full"


def test_auto_takes_the_training_arguments_default_when_the_trainer_leaves_it_out(tmp_path):
    trainer = write(tmp_path, "args.yaml", {"output_dir": "out", "optim": "adamw_torch_fused", "deepspeed":
                                            fx("ds_zero3.json")})
    result = import_configs([trainer], base={"model": MODEL})
    assert result.job["micro_batch_size"] == 8 and result.job["gradient_accumulation_steps"] == 1
    ds = fx("ds_zero3.json")
    assert (ds, "train_micro_batch_size_per_gpu (auto: TrainingArguments default per_device_train_batch_size=8)",
            "micro_batch_size") in result.mapped
    reasons = {src: reason for file, src, reason in result.ignored if file == ds}
    assert reasons["bf16.enabled"].startswith("auto: the trainer config sets neither bf16 nor fp16")
    assert "mixed_precision" not in result.job


def test_deepspeed_auto_without_a_trainer_is_reported():
    result = import_configs([fx("ds_zero2_offload.json")])
    ds = fx("ds_zero2_offload.json")
    autos = {src for file, src, reason in result.ignored if reason.startswith("auto:")}
    assert autos == {"train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "fp16.enabled", "bf16.enabled"}
    assert (ds, "zero_optimization.reduce_bucket_size", "not modelled yet (reduce_bucket_size=200000000; memplan "
            "assumes the HF Trainer's 'auto' value, hidden_size^2)") in result.ignored
    assert (ds, "zero_optimization.allgather_bucket_size", "not modelled yet (allgather_bucket_size=200000000)") \
        in result.ignored


def test_bucket_sizes_and_typos_are_listed_with_reasons():
    result = import_configs([fx("ds_zero3_typo.json")])
    path = fx("ds_zero3_typo.json")
    assert (path, "zero_optimization.stagee", "unknown field (did you mean 'stage'?)") in result.ignored
    # without a stage DeepSpeed runs stage 0, where optimizer offload does not apply
    assert result.job == {"mixed_precision": "bf16", "micro_batch_size": 1, "gradient_accumulation_steps": 8,
                          "num_gpus": 8, "zero_stage": 0}
    assert (path, "zero_optimization.offload_optimizer.device",
            "optimizer offload needs ZeRO stage 1, 2 or 3; not used at stage 0") in result.ignored
    z3 = import_configs([fx("ds_zero3.json")])
    bucket = {src.split(".")[1]: reason for _, src, reason in z3.ignored if src.startswith("zero_optimization.")}
    assert set(bucket) == {"reduce_bucket_size", "stage3_param_persistence_threshold", "stage3_max_reuse_distance",
                           "sub_group_size"}
    assert all(reason.startswith("not modelled yet") for reason in bucket.values())
    # the ZeRO-3 knobs memplan models are job fields ("auto" is the HF Trainer's value, memplan's default)
    assert z3.job["zero3_max_live_parameters"] == 1_000_000_000 and "zero3_prefetch_bucket_size" not in z3.job


def test_peft_lora_with_a_4bit_trainer_is_qlora_and_takes_the_adapters_model(tmp_path):
    trainer = write(tmp_path, "sft.yaml", {
        "output_dir": "out", "per_device_train_batch_size": 1, "max_length": 1024, "bf16": True,
        "optim": "paged_adamw_32bit",
        "model_init_kwargs": {"torch_dtype": "bfloat16", "quantization_config": {
            "load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": True,
            "bnb_4bit_compute_dtype": "bfloat16"}},
    })
    result = import_configs([trainer, fx("peft_lora")])
    assert result.job == {
        "model": "meta-llama/Llama-3.1-8B-Instruct", "head": "causal_lm", "method": "qlora", "weight_dtype": "nf4",
        "mixed_precision": "bf16", "double_quant": True, "optimizer": "paged_adamw_32bit",
        "lora": EXPECTED["peft_lora"][1]["lora"], "micro_batch_size": 1, "seq_len": 1024,
    }
    assert parse_spec(result.job).method == "qlora"
    assert (trainer, "model_init_kwargs.torch_dtype",
            "dtype of the modules left unquantized; weight_dtype comes from the quantization") in result.ignored


def test_bitsandbytes_defaults_follow_the_library(tmp_path):
    # BitsAndBytesConfig defaults: fp4, no double quant (TRL's ModelConfig and axolotl default to nf4)
    trainer = write(tmp_path, "a.yaml", {"output_dir": "o", "model_init_kwargs": {"quantization_config":
                                                                                   {"load_in_4bit": True}}})
    assert import_configs([trainer]).job == {"weight_dtype": "fp4", "double_quant": False}
    trl = write(tmp_path, "b.yaml", {"model_name_or_path": "m", "load_in_4bit": True, "use_peft": True})
    assert import_configs([trl]).job == {"model": "m", "method": "qlora", "weight_dtype": "nf4",
                                         "double_quant": False}


def test_fsdp_qlora_recipe_maps_its_quant_storage(tmp_path):
    """PEFT's FSDP-QLoRA recipe (examples/sft): TRL ModelConfig with bnb_4bit_quant_storage bfloat16 and an FSDP1
    Trainer config; a BitsAndBytesConfig dict's storage maps the same; an unknown dtype names its field."""
    trl = write(tmp_path, "a.yaml", {
        "model_name_or_path": "meta-llama/Llama-2-70b-hf", "use_peft": True, "load_in_4bit": True,
        "bnb_4bit_quant_storage": "bfloat16", "use_bnb_nested_quant": True, "bf16": True, "output_dir": "o",
        "fsdp": "full_shard auto_wrap offload", "fsdp_config": {"fsdp_version": 1}})
    job = import_configs([trl]).job
    assert job["quant_storage"] == "bf16" and job["parallelism"] == "fsdp" and job["offload_params"] is True
    spec = parse_spec({**job, "num_gpus": 2})
    assert spec.quant_storage_dtype == "bf16" and spec.method == "qlora"
    qc = write(tmp_path, "b.yaml", {"output_dir": "o", "model_init_kwargs": {"quantization_config": {
        "load_in_4bit": True, "bnb_4bit_quant_storage": "torch.float16"}}})
    assert import_configs([qc]).job["quant_storage"] == "fp16"
    bad = write(tmp_path, "c.yaml", {"model_name_or_path": "m", "load_in_4bit": True, "bnb_4bit_quant_storage": "int4"})
    with pytest.raises(SpecError) as exc:
        import_configs([bad])
    assert "bnb_4bit_quant_storage" in str(exc.value) and "bfloat16" in str(exc.value)


def test_fsdp_reduce_dtype_from_the_mixed_precision_policy(tmp_path):
    acc = write(tmp_path, "acc.yaml", {"distributed_type": "FSDP", "num_processes": 4, "mixed_precision": "bf16",
                                       "fsdp_config": {"fsdp_version": 2, "fsdp_mixed_precision_policy": {
                                           "reduce_dtype": "float32", "param_dtype": "bfloat16"}}})
    result = import_configs([acc])
    assert result.job["fsdp_reduce_dtype"] == "fp32" and result.job["parallelism"] == "fsdp"
    assert any(src.endswith("mixed_precision_policy.param_dtype") for _, src, _ in result.ignored)
    assert parse_spec({**result.job, "model": "x"}).reduce_dtype == "fp32"


def test_sequence_parallelism_from_accelerate_and_the_trainer(tmp_path):
    """accelerate's parallelism_config (an accelerate file's prefixed keys, or TrainingArguments' mapping): Ulysses
    (sp_backend deepspeed) or torch context parallelism (cp_size) -> sequence_parallel_size; tensor parallelism is
    reported; both schemes at once, or an unknown backend, name their field."""
    acc = write(tmp_path, "acc.yaml", {
        "distributed_type": "DEEPSPEED", "num_processes": 4, "mixed_precision": "bf16",
        "deepspeed_config": {"zero_stage": 3},
        "parallelism_config": {"parallelism_config_sp_size": 4, "parallelism_config_sp_backend": "deepspeed",
                               "parallelism_config_dp_shard_size": 1,
                               "parallelism_config_sp_attn_implementation": "flash_attention_2"}})
    job = import_configs([acc]).job
    assert (job["sequence_parallel_size"], job["num_gpus"], job["zero_stage"]) == (4, 4, 3)
    assert job["attention"] == "flash_attention_2"
    spec = parse_spec({**job, "model": "meta-llama/Llama-3.1-8B", "seq_len": 32768})
    assert spec.parallel_engine == "deepspeed" and spec.sequence_parallel_size == 4
    cp = write(tmp_path, "t.yaml", {"output_dir": "o", "parallelism_config": {"cp_size": 2, "tp_size": 2}})
    result = import_configs([cp])
    assert result.job["sequence_parallel_size"] == 2 and result.job["parallelism"] == "fsdp"
    assert any(src == "parallelism_config.tp_size" for _, src, _ in result.ignored)
    both = write(tmp_path, "b.yaml", {"output_dir": "o", "parallelism_config": {"cp_size": 2, "sp_size": 2}})
    with pytest.raises(SpecError) as exc:
        import_configs([both])
    assert "parallelism_config.sp_size" in str(exc.value)
    bad = write(tmp_path, "c.yaml", {"output_dir": "o", "parallelism_config": {"sp_size": 2, "sp_backend": "ring"}})
    with pytest.raises(SpecError) as exc:
        import_configs([bad])
    assert "sp_backend" in str(exc.value) and "deepspeed" in str(exc.value)


def test_peft_model_yields_to_a_model_named_elsewhere():
    result = import_configs([fx("peft_lora")], base={"model": MODEL})
    assert result.job["model"] == MODEL
    assert any(src == "base_model_name_or_path" and "not used" in reason for _, src, reason in result.ignored)


def test_conflicting_values_name_both_files_fields_and_values(tmp_path):
    ds = write(tmp_path, "ds_fp16.json", {"fp16": {"enabled": True}, "zero_optimization": {"stage": 2}})
    with pytest.raises(SpecError) as err:
        import_configs([fx("trainer_ddp.yaml"), ds])
    assert [loc for loc, _ in err.value.errors] == ["mixed_precision"]
    text = str(err.value)
    for words in (f"{fx('trainer_ddp.yaml')}: bf16=True", f"{ds}: fp16.enabled=True", "'bf16'", "'fp16'"):
        assert words in text


def test_conflict_with_the_base_and_between_lora_settings():
    with pytest.raises(SpecError) as err:
        import_configs([fx("axolotl_qlora.yaml")], base={"model": MODEL})
    text = str(err.value)
    assert f"base: model='{MODEL}'" in text and f"{fx('axolotl_qlora.yaml')}: base_model=" in text
    with pytest.raises(SpecError) as err:
        import_configs([fx("memplan_job.yaml"), fx("peft_lora")])
    assert "lora.target_modules" in str(err.value) and "target_modules" in str(err.value)


def test_model_and_inline_model_config_from_two_sources_conflict(tmp_path):
    job = write(tmp_path, "job.json", {"model_config": {"model_type": "llama", "hidden_size": 64}})
    with pytest.raises(SpecError) as err:
        import_configs([job, fx("trl_sft_qlora.yaml")])
    assert "model_name_or_path" in str(err.value) and job in str(err.value)


def test_memplan_spec_sources_are_checked(tmp_path):
    with pytest.raises(SpecError, match="did you mean 'seq_len'"):
        import_configs([write(tmp_path, "job.yaml", {"model": MODEL, "seq_length": 512})])
    with pytest.raises(SpecError, match="expected a mapping of lora fields"):
        import_configs([], base={"model": MODEL, "lora": 16})
    assert import_configs([], base=parse_spec({"model": MODEL, "seq_len": 512})).job == {"model": MODEL,
                                                                                         "seq_len": 512}


def test_same_value_from_two_files_is_no_conflict(tmp_path):
    ds = write(tmp_path, "ds.json", {"bf16": {"enabled": True}, "train_micro_batch_size_per_gpu": 4,
                                     "gradient_accumulation_steps": 2, "zero_optimization": {"stage": 1}})
    result = import_configs([fx("trainer_ddp.yaml"), ds])
    assert result.job["zero_stage"] == 1 and result.job["micro_batch_size"] == 4
    assert (ds, "train_micro_batch_size_per_gpu", "micro_batch_size") in result.mapped


def test_unknown_format_raises_naming_the_file_and_the_kinds():
    with pytest.raises(SpecError) as err:
        import_configs([fx("unknown_format.yaml")])
    text = str(err.value)
    assert fx("unknown_format.yaml") in text and "trainer|peft|deepspeed|accelerate|axolotl|memplan" in text


@pytest.mark.parametrize("name,content,words", [
    ("broken.yaml", None, "not valid YAML"),
    ("bad.json", '{"zero_optimization": {"stage": 3,}}', "not valid JSON"),
    ("list.yaml", "- a\n- b\n", "not a mapping"),
    ("empty.yaml", "", "is empty"),
    ("missing.json", False, "cannot read"),
])
def test_broken_files_raise_naming_the_file(tmp_path, name, content, words):
    if content is None:
        path = fx(name)
    else:
        path = str(tmp_path / name)
        if content is not False:
            Path(path).write_text(content)
    with pytest.raises(SpecError) as err:
        import_configs([path])
    assert words in str(err.value) and path in str(err.value)


def test_kind_prefix_overrides_detection(tmp_path):
    cfg = write(tmp_path, "hp.yaml", {"gradient_accumulation_steps": 4, "gradient_checkpointing": True})
    assert detect_format(cfg, yaml.safe_load(Path(cfg).read_text())) == "memplan"
    result = import_configs([f"trainer:{cfg}"])
    assert result.sources == [f"trainer:{cfg}"]
    assert result.job == {"gradient_accumulation_steps": 4, "gradient_checkpointing": True}
    result = import_configs([f"axolotl:{cfg}"])
    assert result.job == {"method": "full", "gradient_accumulation_steps": 4, "gradient_checkpointing": True}
    with pytest.raises(SpecError, match="unknown kind 'trainr'"):
        import_configs([f"trainr:{cfg}"])


def test_missing_referenced_deepspeed_file(tmp_path):
    cfg = write(tmp_path, "args.yaml", {"output_dir": "o", "deepspeed": "configs/nowhere_zero3.json"})
    with pytest.raises(SpecError) as err:
        import_configs([cfg])
    assert "nowhere_zero3.json" in str(err.value) and f"{cfg}: deepspeed" in str(err.value)
    # a TrainingArguments dump whose DeepSpeed path no longer resolves works when the file is given next to it
    result = import_configs([cfg, fx("ds_zero3.json")])
    assert result.job["zero_stage"] == 3
    assert (cfg, "deepspeed", f"'configs/nowhere_zero3.json' not found; the deepspeed config given as "
                              f"{fx('ds_zero3.json')} is used") in result.ignored


@pytest.mark.parametrize("optim,optimizer,impl", [
    ("adamw_torch", "adamw", "foreach"), ("adamw_torch_fused", "adamw", "fused"), ("adamw_hf", "adamw", "for_loop"),
    ("adamw_bnb_8bit", "adamw_8bit", None), ("adamw_8bit", "adamw_8bit", None),
    ("paged_adamw_8bit", "paged_adamw_8bit", None), ("paged_adamw_32bit", "paged_adamw_32bit", None),
    ("sgd", "sgd", "foreach"), ("adafactor", "adafactor", "for_loop"), ("lion_32bit", "lion", None),
])
def test_optim_values(tmp_path, optim, optimizer, impl):
    job = import_configs([write(tmp_path, "a.yaml", {"output_dir": "o", "optim": optim})]).job
    assert job == {"optimizer": optimizer, **({"optimizer_impl": impl} if impl else {})}


def test_sgd_with_momentum(tmp_path):
    cfg = write(tmp_path, "a.yaml", {"output_dir": "o", "optim": "sgd", "optim_args": "momentum=0.9,nesterov=True"})
    assert import_configs([cfg]).job == {"optimizer": "sgd_momentum", "optimizer_impl": "foreach"}


@pytest.mark.parametrize("optim,words", [("adamw_foo", "unknown optim 'adamw_foo'"),
                                         ("lion_8bit", "does not model yet")])
def test_unknown_optim_names_the_allowed_values(tmp_path, optim, words):
    cfg = write(tmp_path, "a.yaml", {"output_dir": "o", "per_device_train_batch_size": 1, "optim": optim})
    with pytest.raises(SpecError) as err:
        import_configs([cfg])
    text = str(err.value)
    assert words in text and f"{cfg}: optim" in text
    for allowed in ("adamw_torch_fused", "paged_adamw_8bit", "adafactor", "sgd"):
        assert allowed in text


FSDP1 = {"parallelism": "fsdp", "fsdp_version": 1}  # accelerate's default version
FSDP2 = {"parallelism": "fsdp", "fsdp_version": 2}


@pytest.mark.parametrize("fsdp,cfg,expected", [
    ("full_shard auto_wrap", None, {**FSDP1, "zero_stage": 3}),
    (["shard_grad_op", "auto_wrap"], None, {**FSDP1, "zero_stage": 2}),
    ("full_shard offload auto_wrap", None, {**FSDP1, "zero_stage": 3, "offload_params": True}),
    (True, {"version": 2, "reshard_after_forward": False}, {**FSDP2, "zero_stage": 2}),
    (True, {"fsdp_version": 1, "fsdp_sharding_strategy": "NO_SHARD", "fsdp_activation_checkpointing": True},
     {**FSDP1, "zero_stage": 0, "gradient_checkpointing": True}),
    (True, {"cpu_offload": True}, {**FSDP1, "zero_stage": 3, "offload_params": True}),
])
def test_trainer_fsdp(tmp_path, fsdp, cfg, expected):
    data = {"output_dir": "o", "fsdp": fsdp, **({"fsdp_config": cfg} if cfg else {})}
    assert import_configs([write(tmp_path, "a.yaml", data)]).job == expected


@pytest.mark.parametrize("strategy,stage,note", [
    ("FULL_SHARD", 3, False), (1, 3, False), ("SHARD_GRAD_OP", 2, False), (2, 2, False), ("NO_SHARD", 0, False),
    (3, 0, False), ("HYBRID_SHARD", 3, True), ("HYBRID_SHARD_ZERO2", 2, True),
])
def test_accelerate_sharding_strategies(tmp_path, strategy, stage, note):
    cfg = write(tmp_path, "acc.yaml", {"compute_environment": "LOCAL_MACHINE", "distributed_type": "FSDP",
                                       "num_processes": 2, "fsdp_config": {"fsdp_sharding_strategy": strategy}})
    result = import_configs([cfg])
    assert result.job == {"num_gpus": 2, "zero_stage": stage, **FSDP1}
    assert any("shards within each node" in reason for _, _, reason in result.ignored) == note


def test_unknown_fields_in_known_sections(tmp_path):
    acc = write(tmp_path, "acc.yaml", {"distributed_type": "FSDP", "fsdp_config": {"fsdp_ofload_params": True}})
    assert (acc, "fsdp_config.fsdp_ofload_params", "unknown field (did you mean 'fsdp_offload_params'?)") in \
        import_configs([acc]).ignored
    tr = write(tmp_path, "tr.yaml", {"output_dir": "o", "num_train_epochs": 3, "per_device_train_bach_size": 4})
    assert (tr, "per_device_train_bach_size", "unknown field (did you mean 'per_device_train_batch_size'?)") in \
        import_configs([tr]).ignored


def test_memory_relevant_fields_without_a_job_field_are_reported(tmp_path):
    cfg = write(tmp_path, "a.yaml", {"output_dir": "o", "torch_compile": True, "use_liger_kernel": True,
                                     "label_smoothing_factor": 0.1, "seed": 3, "learning_rate": 1e-4})
    ignored = {src: reason for _, src, reason in import_configs([cfg]).ignored}
    assert set(ignored) == {"torch_compile", "use_liger_kernel", "label_smoothing_factor"}
    assert all(reason.startswith("not modelled yet") for reason in ignored.values())


def test_bad_values_name_the_file_and_field(tmp_path):
    cfg = write(tmp_path, "a.yaml", {"output_dir": "o", "per_device_train_batch_size": "four"})
    with pytest.raises(SpecError) as err:
        import_configs([cfg])
    assert f"{cfg}: per_device_train_batch_size" in str(err.value) and "'four'" in str(err.value)
    ds = write(tmp_path, "ds.json", {"zero_optimization": {"stage": 4}})
    with pytest.raises(SpecError, match="ZeRO stage 4"):
        import_configs([ds])
    ds = write(tmp_path, "ds2.json", {"zero_optimization": ["stage", 3]})
    with pytest.raises(SpecError, match="expected a mapping"):
        import_configs([ds])


@pytest.mark.parametrize("config,expected", [
    ({"peft_type": "PREFIX_TUNING", "num_virtual_tokens": 30, "task_type": "SEQ_2_SEQ_LM"},
     {"method": "prefix_tuning", "num_virtual_tokens": 30, "head": "seq2seq_lm"}),
    ({"peft_type": "IA3", "task_type": "SEQ_CLS", "target_modules": None}, {"method": "ia3",
                                                                            "head": "sequence_classification"}),
    ({"r": 16, "target_modules": "all-linear"},  # a LoraConfig dict: PEFT's defaults for what it leaves out
     {"method": "lora", "lora": {"r": 16, "alpha": 8, "dropout": 0.0, "target_modules": "all-linear"}}),
])
def test_other_peft_configs(tmp_path, config, expected):
    assert import_configs([write(tmp_path, "adapter.json", config)]).job == expected


def test_unsupported_peft_type(tmp_path):
    with pytest.raises(SpecError, match="'LOHA' is not modelled.*LORA, PROMPT_TUNING, PREFIX_TUNING, IA3"):
        import_configs([f"peft:{write(tmp_path, 'x.json', {'peft_type': 'LOHA', 'r': 8})}"])


def test_detect_format_on_dicts():
    assert detect_format("x.json", {"peft_type": "LORA"}) == "peft"
    assert detect_format("x.yaml", {"distributed_type": "MULTI_GPU", "num_processes": 2}) == "accelerate"
    assert detect_format("x.json", {"zero_optimization": {"stage": 1}}) == "deepspeed"
    assert detect_format("x.json", {"bf16": {"enabled": True}}) == "deepspeed"
    assert detect_format("x.yaml", {"model": MODEL, "seq_len": 512}) == "memplan"
    assert detect_format("x.yaml", {"base_model": "m", "sequence_len": 512, "micro_batch_size": 1}) == "axolotl"
    assert detect_format("x.yaml", {"per_device_train_batch_size": 1, "output_dir": "o"}) == "trainer"
    with pytest.raises(SpecError):
        detect_format("x.yaml", {"foo": 1})
