"""Trainable counts of memplan.methods checked against PEFT itself, applied to the same model built on meta."""

import warnings

import pytest

peft = pytest.importorskip("peft")

from memplan import catalog  # noqa: E402
from memplan.architecture import build_meta_model, introspect  # noqa: E402
from memplan.methods import trainables  # noqa: E402
from memplan.spec import parse_spec  # noqa: E402

TASK = {"causal_lm": "CAUSAL_LM", "seq2seq_lm": "SEQ_2_SEQ_LM", "sequence_classification": "SEQ_CLS"}


def peft_trainable(model_id: str, config) -> int:
    model, _, head = build_meta_model(catalog.get_model(model_id).config)
    config.task_type = TASK[head]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm = peft.get_peft_model(model, config)
    return sum(p.numel() for p in pm.parameters() if p.requires_grad)


def memplan_trainable(model_id: str, **spec) -> int:
    s = parse_spec({"model": model_id, **spec})
    return trainables(introspect(model_id), s).count


LORA_CASES = [
    ("meta-llama/Llama-3.2-1B", 16, "all-linear"),
    ("meta-llama/Llama-3.2-1B", 8, ["q_proj", "v_proj"]),
    ("Qwen/Qwen2.5-0.5B", 64, "all-linear"),
    ("openai-community/gpt2", 8, "all-linear"),
    ("openai-community/gpt2", 16, ["c_attn"]),
    ("EleutherAI/pythia-160m", 32, "all-linear"),
    ("facebook/opt-125m", 16, ["q_proj", "k_proj", "v_proj", "out_proj"]),
    ("microsoft/phi-2", 16, "all-linear"),
    ("google/flan-t5-base", 16, "all-linear"),
    ("google/flan-t5-base", 8, ["q", "v"]),
    ("google-bert/bert-base-uncased", 8, ["query", "value"]),
    ("google-bert/bert-base-uncased", 16, "all-linear"),
    ("mistralai/Mixtral-8x7B-v0.1", 16, ["q_proj", "k_proj", "v_proj", "o_proj"]),
]


@pytest.mark.parametrize("model_id,r,targets", LORA_CASES)
def test_lora_matches_peft(model_id, r, targets):
    expected = peft_trainable(model_id, peft.LoraConfig(r=r, target_modules=targets, lora_dropout=0.0))
    assert memplan_trainable(model_id, method="lora", lora={"r": r, "target_modules": targets}) == expected


@pytest.mark.parametrize("model_id", ["meta-llama/Llama-3.2-1B", "openai-community/gpt2", "google/flan-t5-base"])
def test_prompt_tuning_matches_peft(model_id):
    expected = peft_trainable(model_id, peft.PromptTuningConfig(num_virtual_tokens=20))
    assert memplan_trainable(model_id, method="prompt_tuning", num_virtual_tokens=20) == expected


@pytest.mark.parametrize("model_id", ["meta-llama/Llama-3.2-1B", "openai-community/gpt2", "Qwen/Qwen2.5-0.5B"])
def test_prefix_tuning_matches_peft(model_id):
    expected = peft_trainable(model_id, peft.PrefixTuningConfig(num_virtual_tokens=30))
    assert memplan_trainable(model_id, method="prefix_tuning", num_virtual_tokens=30) == expected


@pytest.mark.parametrize("model_id", ["meta-llama/Llama-3.2-1B", "openai-community/gpt2", "google/flan-t5-base",
                                      "facebook/opt-125m", "google-bert/bert-base-uncased"])
def test_ia3_matches_peft(model_id):
    expected = peft_trainable(model_id, peft.IA3Config())
    assert memplan_trainable(model_id, method="ia3") == expected


def test_full_and_freeze():
    info = introspect("meta-llama/Llama-3.2-1B")
    assert memplan_trainable("meta-llama/Llama-3.2-1B", method="full") == info.total_params == 1_235_814_400
    # freeze: only the head trains; Llama-3.2-1B ties it to the embedding
    assert memplan_trainable("meta-llama/Llama-3.2-1B", method="freeze") == 128_256 * 2048
