"""task serve: vLLM's and SGLang's budgets per GPU through memplan.estimate, the CLI and the API. Checks the rules the
engines state (TP shards weights and KV heads, KV heads replicated past their count, LoRA slots cost KV tokens,
fp8 KV doubles them, the largest max_model_len is tight) and bad input (the field named, the values allowed)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import memplan
from memplan.engines.serving import shards
from memplan.job import resolve
from memplan.spec import SpecError
from memplan.terms import paged_kv as pkv

LLAMA_8B = "meta-llama/Llama-3.1-8B-Instruct"
LLAMA_70B = "meta-llama/Llama-3.1-70B-Instruct"
GIB = 2**30


def serve(model: str = LLAMA_8B, gpu: str = "H100-SXM-80GB", weight_dtype: str | None = None, **serving):
    job = {"model": model, "task": "serve", "gpu": gpu, "serving": serving}
    if weight_dtype:
        job["weight_dtype"] = weight_dtype
    return memplan.estimate(job)


def test_engine_auto_picks_the_serving_engine_and_others_refuse_it():
    e = serve()
    assert e.engine == "serving" and e.serving is not None and e.serving.engine == "vllm"
    with pytest.raises(SpecError) as err:
        memplan.estimate({"model": LLAMA_8B, "task": "serve"}, engine="trace")
    assert err.value.errors[0][0] == "engine" and "serving" in err.value.errors[0][1]
    with pytest.raises(SpecError) as err:
        memplan.estimate({"model": LLAMA_8B}, engine="serving")
    assert err.value.errors[0][0] == "engine" and "formula" in err.value.errors[0][1]


def test_components_add_up_to_what_nvidia_smi_shows():
    e = serve(gpu_memory_utilization=0.9, estimate_cuda_graphs=False)
    s = e.serving
    assert sum(e.components.values()) == e.peak_bytes
    # vLLM fills its requested share; graphs (not estimated) and the memory held before come on top
    assert e.peak_bytes == s.requested_bytes + s.cuda_graph_bytes + e.components["cuda_context"]
    assert s.kv_cache_bytes == s.requested_bytes - s.weights_bytes - s.activation_bytes - s.non_torch_bytes


def test_tensor_parallel_shards_weights_as_vllm_does():
    """Llama-3.1-70B: 80 layers, h 8192, 64 query / 8 KV heads of 128, MLP 28,672, vocab 128,256, untied. At TP 8
    each GPU holds an eighth of every projection, one KV head's k and v rows, an eighth of the embedding and the
    head, and whole norms; at TP 16 the KV heads are replicated (one per GPU), so k and v do not shrink further."""
    info = resolve({"model": LLAMA_70B, "task": "serve"}).info
    by_name = {p.name: p for p in info.params}
    k = by_name["model.layers.0.self_attn.k_proj.weight"]
    q = by_name["model.layers.0.self_attn.q_proj.weight"]
    down = by_name["model.layers.0.mlp.down_proj.weight"]
    norm = by_name["model.layers.0.input_layernorm.weight"]
    emb = by_name["model.embed_tokens.weight"]
    assert shards.rank_shape(q, info, 8) == (1024, 8192)
    assert shards.rank_shape(k, info, 8) == (128, 8192)
    assert shards.rank_shape(k, info, 16) == (128, 8192)  # replicated: still one head
    assert shards.rank_shape(down, info, 8) == (8192, 3584)
    assert shards.rank_shape(norm, info, 8) == (8192,)
    assert shards.rank_shape(emb, info, 8) == (16032, 8192)
    whole = shards.served_weight_bytes(info, "bf16", "bf16", True, 1)
    assert whole == 2 * info.total_params  # every tensor a multiple of 512 B
    eighth = shards.served_weight_bytes(info, "bf16", "bf16", True, 8)
    norms = sum(p.numel for p in info.params if p.kind == "norm") * 2
    assert eighth == (whole - norms) // 8 + norms


def test_kv_heads_split_then_replicate():
    """8 KV heads: the per-token KV bytes halve from TP 1 to 2 to 4 to 8, then stay (one head per GPU)."""
    per_token = [serve(LLAMA_70B, tensor_parallel_size=tp, max_model_len=4096).serving.kv_bytes_per_token
                 for tp in (1, 2, 4, 8, 16)]
    assert per_token == [327_680, 163_840, 81_920, 40_960, 40_960]


def test_lora_slots_lower_kv_tokens_by_their_bytes():
    base = serve(gpu_memory_utilization=0.9, max_model_len=8192)
    lora = serve(gpu_memory_utilization=0.9, max_model_len=8192, max_loras=8, max_lora_rank=64)
    s0, s1 = base.serving, lora.serving
    assert s1.lora_bytes > 0 and s1.weights_bytes == s0.weights_bytes + s1.lora_bytes
    assert s0.kv_cache_bytes - s1.kv_cache_bytes == s1.lora_bytes
    page_all_layers = s0.kv_bytes_per_token * s0.block_size
    lost_blocks = (s0.kv_cache_bytes // page_all_layers) - (s1.kv_cache_bytes // page_all_layers)
    assert s0.kv_cache_tokens - s1.kv_cache_tokens == lost_blocks * s0.block_size
    # the cost of one slot, as the estimate states it, is an eighth of the eight
    assert s1.kv_tokens_per_lora_slot == pytest.approx((s0.kv_cache_tokens - s1.kv_cache_tokens) / 8, abs=16)


def test_lora_slot_bytes_on_llama_8b_by_hand():
    """Per layer, rank 16, one slot, bf16: q/k/v A 3 x 16 x 4096, B (4096 + 1024 + 1024) x 16; o A 16 x 4096,
    B 4096 x 16; gate/up A 2 x 16 x 4096, B 2 x 14,336 x 16; down A 16 x 14,336, B 4096 x 16: 196,608 + 98,304 +
    65,536 + 65,536 + 131,072 + 458,752 + 229,376 + 65,536 = 1,310,720 values = 2,621,440 B (every tensor a
    multiple of 512 B). 32 layers: 83,886,080 B. Embedding and head: 2 x (128,256 + 4096) x 16 x 2 B = 8,470,528 B."""
    s = serve(max_loras=1, max_lora_rank=16, max_model_len=4096).serving
    assert s.lora_bytes == 83_886_080 + 8_470_528


def test_fp8_kv_doubles_the_tokens():
    bf16 = serve(max_model_len=8192).serving
    fp8 = serve(max_model_len=8192, kv_cache_dtype="fp8").serving
    assert fp8.kv_cache_bytes == bf16.kv_cache_bytes
    assert abs(fp8.kv_cache_tokens - 2 * bf16.kv_cache_tokens) <= fp8.block_size
    assert fp8.max_concurrency == pytest.approx(2 * bf16.max_concurrency, rel=1e-3)


def test_the_largest_max_model_len_is_tight():
    """Llama-3.1-70B at TP 2 on A100-80GB keeps about 1.5 GiB of KV cache per GPU: the longest request that fits
    takes every block, one token more needs one more block than there are."""
    s = serve(LLAMA_70B, gpu="A100-SXM-80GB", tensor_parallel_size=2, max_model_len=-1).serving
    longest = s.largest_max_model_len
    assert 0 < longest < 131_072 and s.max_model_len == longest
    blocks = s.kv_cache_tokens // s.block_size
    assert -(-longest // s.block_size) <= blocks < -(-(longest + 1) // s.block_size) or longest % s.block_size
    assert pkv.full_attention_request_bytes(longest + s.block_size, s.block_size, 1) > blocks


def test_a_model_that_does_not_fit_is_does_not_fit_and_tp_fixes_it():
    one = serve(LLAMA_70B, gpu="A100-SXM-80GB", max_model_len=8192)
    assert one.verdict == "does_not_fit" and one.serving.kv_cache_bytes < 0
    assert any("No available memory" in a for a in one.assumptions)
    two = serve(LLAMA_70B, gpu="A100-SXM-80GB", tensor_parallel_size=2, max_model_len=8192)
    assert two.verdict == "fits" and two.serving.kv_cache_tokens > 8192
    # at its full 131,072 tokens one request needs more KV cache than TP 2 leaves: vLLM refuses to start
    full = serve(LLAMA_70B, gpu="A100-SXM-80GB", tensor_parallel_size=2)
    assert full.verdict == "does_not_fit" and full.serving.request_kv_bytes > full.serving.kv_cache_bytes


def test_int4_replicas_of_the_issue_fit_with_tp():
    """The issue's case: Llama-3.1-70B on 2 x A100-80GB with int4 weights gets a positive KV budget."""
    s = serve(LLAMA_70B, gpu="A100-SXM-80GB", weight_dtype="int4", tensor_parallel_size=2).serving
    assert s.kv_cache_bytes > 40 * GIB and s.max_concurrency > 2


def test_sliding_window_groups_as_vllm_logs_gemma_2_9b():
    """Gemma-2-9B: 21 full + 21 sliding layers share pages of 16 x 8 heads x 256 x 2 x 2 B = 131,072 B in two groups
    of 21; the vLLM 0.19 log shows 54.12 GiB -> 168,880 tokens."""
    s = serve("google/gemma-2-9b", gpu_memory_utilization=0.95, max_model_len=8192,
              estimate_cuda_graphs=False).serving
    assert pkv.kv_cache_tokens(pkv.num_blocks(int(54.12 * GIB), 131_072, 21), 16, 2) == 168_880
    assert abs(s.kv_cache_tokens / 168_880 - 1) < 0.002


def test_sglang_budget_is_its_fraction_less_weights():
    e = serve(engine="sglang", gpu_memory_utilization=0.88)
    s = e.serving
    free_before = e.components["cuda_context"]
    assert s.kv_cache_bytes == s.requested_bytes - s.weights_bytes
    assert s.kv_cache_tokens == s.kv_cache_bytes // s.kv_bytes_per_token
    # its default fraction on an H100 at TP 1 (0.83) leaves less than 0.88
    default = serve(engine="sglang").serving
    assert default.gpu_memory_utilization == 0.83 and default.kv_cache_tokens < s.kv_cache_tokens
    assert free_before > 0
    # the LoRA pool comes out of the KV budget
    lora = serve(engine="sglang", gpu_memory_utilization=0.88, max_loras=8, max_lora_rank=64).serving
    assert s.kv_cache_bytes - lora.kv_cache_bytes == lora.lora_bytes > 0


@pytest.mark.parametrize("serving, field, words", [
    ({"engine": "vlm"}, "serving.engine", "'vllm'"),
    ({"tensor_parallel_size": 3}, "serving.tensor_parallel_size", "32 attention heads"),
    ({"max_loras": 4, "max_lora_rank": 12}, "serving.max_lora_rank", "8, 16, 32"),
    ({"gpu_memory_utilization": 1.5}, "serving.gpu_memory_utilization", "less than or equal to 1"),
    ({"kv_cache_dtype": "int3"}, "serving.kv_cache_dtype", "'fp8'"),
    ({"tensor_parralel_size": 2}, "serving.tensor_parralel_size", "did you mean 'tensor_parallel_size'"),
])
def test_bad_serving_input_names_the_field(serving, field, words):
    with pytest.raises(SpecError) as err:
        memplan.estimate({"model": LLAMA_8B, "task": "serve", "serving": serving})
    fields = {f: m for f, m in err.value.errors}
    assert field in fields and words in fields[field], err.value.errors


def test_serve_rejects_training_fields():
    with pytest.raises(SpecError) as err:
        memplan.estimate({"model": LLAMA_8B, "task": "serve", "zero_stage": 3})
    assert err.value.errors[0][0] == "zero_stage"
    with pytest.raises(SpecError) as err:
        memplan.estimate({"model": LLAMA_8B, "task": "serve", "num_gpus": 3, "serving": {"tensor_parallel_size": 2}})
    assert err.value.errors[0][0] == "num_gpus"
    with pytest.raises(SpecError) as err:
        memplan.estimate({"model": LLAMA_8B, "task": "train", "weight_dtype": "fp8"})
    assert err.value.errors[0][0] == "weight_dtype"


@settings(max_examples=25, deadline=None)
@given(st.floats(0.5, 0.95), st.floats(0.0, 0.04), st.sampled_from([0, 1, 4]), st.sampled_from([1, 2, 4]))
def test_budget_properties(utilization, more, loras, tp):
    """More utilization never lowers the KV tokens; more LoRA slots never raise them; more TP never raises the
    weights per GPU."""
    base = serve(gpu_memory_utilization=utilization, max_model_len=4096, tensor_parallel_size=tp,
                 max_loras=loras).serving
    up = serve(gpu_memory_utilization=utilization + more, max_model_len=4096, tensor_parallel_size=tp,
               max_loras=loras).serving
    assert up.kv_cache_tokens >= base.kv_cache_tokens
    more_slots = serve(gpu_memory_utilization=utilization, max_model_len=4096, tensor_parallel_size=tp,
                       max_loras=loras + 2).serving
    assert more_slots.kv_cache_tokens <= base.kv_cache_tokens
    wider = serve(gpu_memory_utilization=utilization, max_model_len=4096, tensor_parallel_size=2 * tp,
                  max_loras=loras).serving
    assert wider.weights_bytes <= base.weights_bytes


def test_serve_plan_configurations_changes_and_solvers():
    """Llama-3.1-70B at 32k on one A100-80GB does not fit; the plan offers what does, each re-estimated."""
    from memplan.plan import plan

    job = {"model": LLAMA_70B, "task": "serve", "gpu": "A100-SXM-80GB", "serving": {"max_model_len": 32768}}
    p = plan(job)
    assert p.estimate.verdict == "does_not_fit"
    assert p.configurations and all(memplan.estimate(o.job).verdict == "fits" for o in p.configurations)
    own = [o for o in p.configurations if o.recipe_changes == 0]
    assert own[0].num_gpus == 4  # bf16 weights need TP 4 at 32k
    assert p.solvers["serving"]["fewest_gpus"]["num_gpus"] == 4
    fitting = [c for c in p.changes if c.fits]
    assert fitting and fitting[0].fields == {"weight_dtype": "int4"}
    for c in p.changes:
        assert memplan.estimate(c.job).serving.kv_cache_tokens == int(c.description.split(": ")[1].split()[0]
                                                                      .replace(",", ""))
    smallest = p.solvers["serving"]["smallest_memory_gpu"]
    assert memplan.estimate(smallest["job"]).verdict == "fits"


def test_api_serves_the_serving_estimate_and_names_bad_fields():
    from fastapi.testclient import TestClient

    from api.app import create_app
    from api.settings import Settings

    job = {"model": LLAMA_8B, "task": "serve", "gpu": "H100-SXM-80GB", "serving": {"max_model_len": 8192}}
    with TestClient(create_app(Settings()), base_url="http://localhost") as client:
        r = client.post("/v1/estimate", json=job)
        assert r.status_code == 200
        assert r.json() == memplan.estimate(job).model_dump(mode="json")
        assert r.json()["serving"]["kv_cache_tokens"] > 400_000
        r = client.post("/v1/check", json={**job, "serving": {"tensor_parallel_size": 3}})
        assert r.status_code == 422 and "serving.tensor_parallel_size" in r.text
        r = client.post("/v1/estimate", json={**job, "serving": {"engine": "tgi"}})
        assert r.status_code == 422 and "'vllm' or 'sglang'" in r.text
        r = client.post("/v1/plan", json={"job": job})
        assert r.status_code == 200 and r.json()["solvers"]["serving"]["fewest_gpus"]["num_gpus"] == 1


def test_fp8_checkpoints_are_read_from_their_quantization_config():
    """A compressed-tensors fp8 config.json (RedHatAI's fp8-dynamic Llama-3.1-8B) serves at one byte per linear
    weight: 8.49 GiB as vLLM 0.19 logged it for that checkpoint; training it is refused by name."""
    from memplan import catalog

    cfg = dict(catalog.get_model(LLAMA_8B).config, quantization_config={
        "quant_method": "compressed-tensors", "format": "float-quantized",
        "config_groups": {"group_0": {"weights": {"num_bits": 8, "type": "float"}, "targets": ["Linear"]}}})
    e = memplan.estimate({"model_config": cfg, "task": "serve"})
    assert round(e.serving.weights_bytes / GIB, 2) == 8.49
    with pytest.raises(SpecError) as err:
        memplan.estimate({"model_config": cfg, "task": "train"})
    assert err.value.errors[0][0] == "weight_dtype" and "serving only" in err.value.errors[0][1]


def test_mla_caches_the_latent_whole_on_every_gpu():
    """A DeepSeek-V3-shaped model (4 dense layers): vLLM pages and SGLang cells hold 576 values per token and
    layer (DeepSeek-V2-Lite's vLLM 0.19 log: 31,103 B per token for 27 layers = 27 x 576 x 2), not split by TP."""
    from tests.trace.crosscheck_configs import MLA_CONFIG

    cfg = dict(MLA_CONFIG, num_hidden_layers=4, first_k_dense_replace=4)
    for engine in ("vllm", "sglang"):
        for tp in (1, 2, 4):
            s = memplan.estimate({"model_config": cfg, "task": "serve",
                                  "serving": {"engine": engine, "tensor_parallel_size": tp,
                                              "max_model_len": 8192}}).serving
            assert s.kv_bytes_per_token == 4 * 576 * 2
