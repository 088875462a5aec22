"""Schema of the bundled catalog, and exact parameter counts against published figures."""

import json
import re

import pytest

import memplan
from memplan import catalog
from memplan.spec import SpecError
from memplan.architecture import introspect

MODEL_FILES = sorted(catalog.MODELS_DIR.glob("*/*.json"))
GPU_FILES = sorted(catalog.GPUS_DIR.glob("*.json"))
REQUIRED_MODELS = [
    "meta-llama/Llama-2-7b-hf", "meta-llama/Llama-2-70b-chat-hf", "huggyllama/llama-65b", "meta-llama/Llama-3.1-8B",
    "meta-llama/Llama-3.1-405B", "meta-llama/Llama-3.2-1B-Instruct", "meta-llama/Llama-3.3-70B-Instruct",
    "mistralai/Mistral-7B-v0.3", "mistralai/Mixtral-8x7B-v0.1", "Qwen/Qwen2.5-72B-Instruct", "Qwen/Qwen3-32B",
    "google/gemma-2-27b", "google/gemma-3-1b-pt", "microsoft/phi-2", "microsoft/Phi-3.5-mini-instruct",
    "openai-community/gpt2-xl", "facebook/opt-6.7b", "EleutherAI/pythia-6.9b", "TinyLlama/TinyLlama-1.1B-Chat-v1.0",
    "HuggingFaceTB/SmolLM2-1.7B", "tiiuae/falcon-7b", "bigscience/bloomz-7b1", "EleutherAI/gpt-j-6b",
    "bigcode/starcoder", "01-ai/Yi-34B", "google/flan-t5-xxl", "bigscience/T0_3B", "bigscience/mt0-xxl",
    "google-bert/bert-large-uncased", "FacebookAI/roberta-large",
]
BOOKKEEPING = {"_name_or_path", "transformers_version", "auto_map", "task_specific_params"}


def test_catalog_size():
    assert len(MODEL_FILES) >= 45
    assert len(GPU_FILES) >= 24
    for model_id in REQUIRED_MODELS:
        assert catalog.get_model(model_id).id == model_id


@pytest.mark.parametrize("path", MODEL_FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_model_file_schema(path):
    raw = json.loads(path.read_text())
    assert set(raw) <= {"id", "aliases", "source", "published_params", "published_params_rounded",
                        "published_params_source", "params", "config"}
    assert raw["id"] == f"{path.parent.name}/{path.stem}", "file must be named after its repo id"
    assert raw["source"].strip()
    assert isinstance(raw["config"], dict) and raw["config"].get("model_type")
    assert not BOOKKEEPING & set(raw["config"])
    if "published_params" in raw:
        assert isinstance(raw["published_params"], int) and raw["published_params_source"].strip()
    if "published_params_rounded" in raw:  # a publisher's rounded figure ("30.5B in total"): value and unit
        rounded = raw["published_params_rounded"]
        assert set(rounded) == {"total", "unit"} and raw["published_params_source"].strip()
    assert isinstance(raw.get("params"), int) and raw["params"] > 0, "run scripts/catalog_params.py"


@pytest.mark.parametrize("path", MODEL_FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_stored_params_equal_a_fresh_build(path):
    """The listed count (GET /v1/models, `memplan models`) is what memplan builds for the model."""
    raw = json.loads(path.read_text())
    assert introspect(raw["id"]).total_params == raw["params"], "stale: run scripts/catalog_params.py"


@pytest.mark.parametrize("path", GPU_FILES, ids=lambda p: p.stem)
def test_gpu_file_schema(path):
    raw = json.loads(path.read_text())
    assert raw["id"] == path.stem
    assert re.fullmatch(r"[A-Za-z0-9]+(-[A-Za-z0-9]+)*-\d+GB", raw["id"])
    assert isinstance(raw["memory_bytes"], int) and raw["memory_bytes"] > 8 * 2**30
    if raw["vendor"] == "nvidia":
        assert raw["memory_bytes"] % 2**20 == 0, "nvidia-smi reports whole MiB"
    assert set(raw["dense_tflops"]) >= {"bf16", "fp16", "fp32"}
    assert raw["compute_capability"] and raw["source"] and raw["memory_source"]


def test_gpu_aliases_unique_and_h100_driver_memory():
    seen = {}
    for g in catalog.list_gpus():
        for key in (g.id, *g.aliases):
            assert seen.get(key.lower(), g.id) == g.id, f"{key} in {g.id} and {seen[key.lower()]}"
            seen[key.lower()] = g.id
    assert catalog.get_gpu("H100-SXM-80GB").memory_bytes == 81_559 * 2**20
    assert catalog.get_gpu("h100-sxm").id == "H100-SXM-80GB"


PUBLISHED = [(p, json.loads(p.read_text())) for p in MODEL_FILES]
PUBLISHED = [(raw["id"], raw["published_params"]) for _, raw in PUBLISHED if "published_params" in raw]


ROUNDED = [(raw["id"], raw["published_params_rounded"]) for raw in (json.loads(p.read_text()) for p in MODEL_FILES)
           if "published_params_rounded" in raw]


@pytest.mark.parametrize("model_id,rounded", ROUNDED, ids=[m for m, _ in ROUNDED])
def test_rounded_parameter_count(model_id, rounded):
    """Publishers of MoE models state rounded totals ("30.5B in total", "671B total"): memplan's exact count
    rounds to the same figure at the publisher's precision."""
    total = introspect(model_id).total_params
    assert abs(total - rounded["total"]) <= rounded["unit"] // 2, f"{model_id}: {total:,} vs {rounded}"


def test_at_least_12_published_counts():
    assert len(PUBLISHED) >= 12


@pytest.mark.parametrize("model_id,published", PUBLISHED, ids=[m for m, _ in PUBLISHED])
def test_exact_parameter_count(model_id, published):
    info = introspect(model_id)
    head = sum(p.numel for p in info.params if p.module in info.output_modules)
    # encoder checkpoints publish the bare encoder (BertModel with pooler): the classifier head is memplan's
    assert (info.total_params - head if info.head == "sequence_classification" else info.total_params) == published


@pytest.mark.parametrize("model_id,expected", [
    ("meta-llama/Llama-3.1-8B", 8_030_261_248),  # the anchor
    ("meta-llama/Llama-3.2-3B", 3_212_749_824),  # tied: 3.61B if counted untied
    ("google/flan-t5-base", 247_577_856),  # separate lm_head although transformers 5 forces T5 to tie
    ("google-t5/t5-base", 222_903_552),  # original T5 ties
])
def test_tying_follows_the_checkpoint(model_id, expected):
    assert introspect(model_id).total_params == expected


def test_unknown_ids_suggest():
    with pytest.raises(catalog.CatalogError) as err:
        catalog.get_model("meta-llama/Llama-3.1-8")
    assert "meta-llama/Llama-3.1-8B" in err.value.suggestions
    with pytest.raises(catalog.CatalogError) as err:
        catalog.get_gpu("H100-SXM-81GB")
    assert "H100-SXM-80GB" in err.value.suggestions


@pytest.mark.parametrize("name,family", [
    ("A100", ["A100-PCIe-40GB", "A100-PCIe-80GB", "A100-SXM-40GB", "A100-SXM-80GB"]),
    ("v100-pcie", ["V100-PCIe-16GB", "V100-PCIe-32GB"]),
    ("H100", ["H100-NVL-94GB", "H100-PCIe-80GB", "H100-SXM-80GB"]),
])
def test_a_family_name_is_ambiguous_not_a_silent_pick(name, family):
    """"A100" is 40 or 80 GB, SXM or PCIe: an error listing every choice (a 422 naming `gpu` through the API),
    never one picked for the user."""
    with pytest.raises(catalog.AmbiguousIdError) as err:
        catalog.get_gpu(name)
    assert err.value.suggestions == family and all(g in str(err.value) for g in family)
    with pytest.raises(SpecError) as err:
        memplan.estimate({"model": "Qwen/Qwen2.5-0.5B", "gpu": name})
    assert err.value.errors[0][0] == "gpu" and "give one of them" in err.value.errors[0][1]
    assert catalog.get_gpu("A100-80GB").id == "A100-SXM-80GB"  # an alias that names one memory size still works


@pytest.mark.parametrize("path", MODEL_FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_shipped_introspection_equals_a_fresh_build(path):
    """The formula engine reads a catalog model from memplan/catalog/introspected (no torch, no transformers):
    that file must be what a meta-device build gives today, field by field."""
    from memplan import introspected
    from memplan.architecture import build_catalog_info
    from memplan.model_info import info_to_dict

    raw = json.loads(path.read_text())
    stored = introspected.shipped(raw["id"], raw["config"], "auto", 2)
    assert stored is not None, "missing or stale: run scripts/catalog_introspection.py"
    assert info_to_dict(stored) == info_to_dict(build_catalog_info(raw["id"])), \
        "stale: run scripts/catalog_introspection.py"


def test_introspection_round_trips_every_field():
    from memplan.model_info import info_from_dict, info_to_dict

    info = introspect("google/flan-t5-base")
    again = info_from_dict(json.loads(json.dumps(info_to_dict(info))))
    assert again.params == info.params and again.layers == info.layers
    assert info_to_dict(again) == info_to_dict(info)
    assert again.block_linears.keys() == info.block_linears.keys()


def test_a_catalog_estimate_imports_neither_torch_nor_transformers():
    """Cold CLI start: a catalog model's formula estimate runs on the shipped introspection alone."""
    import subprocess
    import sys

    code = ("import sys, memplan; memplan.estimate({'model': 'meta-llama/Llama-3.1-8B', 'method': 'qlora'}); "
            "print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
