"""The trainable setup as users write it: PEFT's own configs and `prepare_model_for_kbit_training`, the Trainer's
gradient checkpointing (non-reentrant) and `enable_input_require_grads`."""

from __future__ import annotations

from memplan.spec import JobSpec


class StackError(ValueError):
    """A job the real stack cannot build (a method with no PEFT implementation)."""


TASK_TYPES = {"causal_lm": "CAUSAL_LM", "seq2seq_lm": "SEQ_2_SEQ_LM", "sequence_classification": "SEQ_CLS",
               "token_classification": "TOKEN_CLS", "masked_lm": "FEATURE_EXTRACTION"}


def apply_method(model, spec: JobSpec, head: str, head_params: tuple[str, ...]):
    """The trainable setup as users write it: PEFT's own configs, the Trainer's gradient checkpointing."""
    # the FSDP-QLoRA recipes skip prepare_model_for_kbit_training (memplan.methods.kbit_prepared): set up as for
    # a float model
    quantized = spec.weight_dtype in ("nf4", "fp4", "int8") and spec.parallel_engine != "fsdp"
    gc_kwargs = {"use_reentrant": False}
    if quantized:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=spec.gradient_checkpointing,
                                                gradient_checkpointing_kwargs=gc_kwargs)
    elif spec.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=gc_kwargs)
    method = spec.method
    if method in ("full", "freeze"):
        for name, p in model.named_parameters():
            p.requires_grad_(method == "full" or name in head_params)
        if spec.gradient_checkpointing and method == "freeze":
            model.enable_input_require_grads()
        return model
    import peft

    task = TASK_TYPES[head]
    if method in ("lora", "qlora"):
        targets = spec.lora.target_modules
        cfg = peft.LoraConfig(r=spec.lora.r, lora_alpha=spec.lora.alpha, lora_dropout=spec.lora.dropout,
                              target_modules=targets if isinstance(targets, str) else list(targets), task_type=task)
    elif method == "prompt_tuning":
        cfg = peft.PromptTuningConfig(task_type=task, num_virtual_tokens=spec.num_virtual_tokens)
    elif method == "prefix_tuning":
        cfg = peft.PrefixTuningConfig(task_type=task, num_virtual_tokens=spec.num_virtual_tokens)
    elif method == "ia3":
        cfg = peft.IA3Config(task_type=task)
    else:
        raise StackError(f"method {method!r} has no PEFT implementation")
    if spec.gradient_checkpointing and not quantized:
        model.enable_input_require_grads()  # what the Trainer does for PEFT models under checkpointing
    return peft.get_peft_model(model, cfg)
