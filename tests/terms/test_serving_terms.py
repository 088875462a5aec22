"""The serving terms (memplan.terms.vllm, paged_kv, tensor_parallel, weights.fp8_weight_bytes): the worked examples
of their docstrings, repeated on Llama-3.1-8B at vLLM's H100 defaults, and vLLM's own formulas on real configs."""

from memplan.terms import kv_cache as kvt
from memplan.terms import paged_kv as pkv
from memplan.terms import tensor_parallel as tpt
from memplan.terms import vllm as vt
from memplan.terms.weights import fp8_weight_bytes

GIB = 2**30
H100_CUDA_TOTAL = int(79.19 * GIB)  # what vLLM 0.19 logs as total_memory on H100 80GB


def test_tensor_parallel_rules():
    assert [tpt.kv_heads_per_rank(8, tp) for tp in (1, 2, 8, 16)] == [8, 4, 1, 1]
    assert tpt.tp_divisibility_problem(32, 8, 4) is None
    assert tpt.tp_divisibility_problem(32, 8, 16) is None  # 16 GPUs share 8 KV heads, two GPUs per head
    assert "attention heads" in tpt.tp_divisibility_problem(32, 8, 3)
    assert "key/value heads" in tpt.tp_divisibility_problem(28, 4, 7)
    assert tpt.padded_vocab_rows_per_rank(128_256, 1) == 128_256
    assert tpt.padded_vocab_rows_per_rank(128_256, 8) == 16_032
    assert tpt.padded_vocab_rows_per_rank(151_936, 4) == 37_984
    assert tpt.padded_vocab_rows_per_rank(32_001, 2) == 16_032  # 32,001 pads to 32,064
    assert tpt.qkv_rows_per_rank(32, 8, 128, 2) == 3_072
    assert tpt.column_parallel_rows(2 * 14_336, 4) == 7_168
    assert tpt.row_parallel_columns(14_336, 8) == 1_792


def test_pages_blocks_tokens_concurrency_llama_8b():
    page = pkv.attention_page_bytes(16, 8, 128, 2)
    assert page == 65_536
    assert pkv.attention_page_bytes(16, 4, 128, 2) == 32_768  # tp 2
    assert pkv.attention_page_bytes(16, 8, 128, 1) == 32_768  # fp8
    blocks = pkv.num_blocks(54 * GIB, page, 32)
    assert blocks == 27_648
    assert pkv.kv_cache_tokens(blocks, 16) == 442_368
    assert pkv.full_attention_request_bytes(131_072, 16, page) == 536_870_912
    assert pkv.max_concurrency(blocks, 131_072 // 16) == 3.375
    assert pkv.num_blocks(-5, page, 32) == 0


def test_mla_sliding_window_and_sglang_pool():
    assert pkv.mla_page_bytes(64, 512 + 64, 2) == 73_728
    assert pkv.sliding_window_request_bytes(8192, 4096, 8192, 16, 131_072) == 67_239_936
    # a short request takes only its own pages plus one, whatever the window
    assert pkv.sliding_window_request_bytes(100, 4096, 8192, 16, 1) == 8
    assert pkv.token_pool_cell_bytes(8, 128, 32, 2) == 131_072
    assert pkv.pool_tokens(50 * GIB, 131_072) == 409_600


def test_vllm_budget_llama_8b_on_h100_matches_its_log():
    """The worked example of memplan.terms.vllm: the vLLM 0.19 log of Llama-3.1-8B-Instruct on an H100 at 0.95
    (bench/published/serving/vllm-0.19-meta-llama-llama-3-1-8b-h100-tp1pp1dp1-8192.yaml) says requested 75.23 GiB,
    weights 14.99, torch peak 1.89, non-torch 0.25, available 58.11 GiB, 476,016 tokens."""
    requested = vt.requested_bytes(H100_CUDA_TOTAL, 0.95)
    assert requested == 80_778_134_290
    weights = 16_060_522_496 + vt.rope_cache_bytes(131_072, 128, 2)
    assert weights == 16_094_076_928
    assert round(weights / GIB, 2) == 14.99
    forward = kvt.prefill_transient_bytes(8192, 4096, 14_336, True, 2)
    assert forward == 973_078_528
    sampler = vt.sampler_peak_bytes(8192, 1024, 4096, 128_256, 2)
    assert sampler == 83_886_080 + 1_904_345_088 == 1_988_231_168
    peak = vt.profile_peak_bytes(forward, sampler, 32 * 2**20)
    assert peak == 2_021_785_600
    assert abs(peak / GIB - 1.89) < 0.015
    available = vt.available_kv_bytes(requested, weights, peak, vt.non_torch_bytes(1))
    assert available == 62_393_836_306
    assert round(available / GIB, 2) == 58.11
    blocks = pkv.num_blocks(available, 65_536, 32)
    assert pkv.kv_cache_tokens(blocks, 16) == 476_016


def test_vllm_defaults_and_measured_terms():
    assert vt.serve_batch_limits(79.65, False) == (8192, 1024)
    assert vt.serve_batch_limits(80.0, True) == (2048, 256)  # A100s keep the low defaults
    assert vt.serve_batch_limits(22.0, False) == (2048, 256)
    assert vt.non_torch_bytes(1) == 268_435_456
    assert vt.non_torch_bytes(2) == 2_222_981_120
    assert vt.init_memory_bytes(1) == 547_356_672
    assert vt.init_memory_bytes(8) == 2_673_868_800
    assert vt.init_memory_bytes(2) < vt.init_memory_bytes(4) < vt.init_memory_bytes(8) < vt.init_memory_bytes(16)
    assert vt.capture_sizes(1024, 8192) == 51
    assert vt.capture_sizes(256, 2048) == 51  # 2 * 256 = 512
    assert vt.capture_sizes(8, 8192) == 5  # up to 2 * 8 = 16: 1, 2, 4, 8, 16
    assert vt.cuda_graph_bytes(51, 32) == 949_970_472
    assert vt.lora_slot_bytes(8, 64, 4096, 4096, 2) == 8_388_608
    # a profile run's peak is the larger of forward and sampler, not their sum
    assert vt.profile_peak_bytes(10, 3, 1) == 11


def test_fp8_weights():
    assert fp8_weight_bytes(4096, 4096) == 16_777_728
    assert fp8_weight_bytes(4096, 4096, 128) == 16_781_312
