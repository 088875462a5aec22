from memplan.terms import kv_cache as kv
from memplan.terms import logits as lg

T, V = 4096, 128_256


def test_logits_and_loss_8b():
    assert lg.logits_bytes(T, V, 2) == 1_050_673_152
    assert lg.cross_entropy_forward_peak_bytes(T, V, 2) == 10 * T * V == 5_253_365_760
    assert lg.cross_entropy_forward_peak_bytes(T, V, 4) == 8 * T * V  # fp32 logits: no upcast copy
    assert lg.cross_entropy_saved_bytes(T, V) == 2_101_346_304
    assert lg.cross_entropy_backward_spike_bytes(T, V) == 6_304_038_912


def test_kv_cache_128kib_per_token():
    assert kv.kv_cache_bytes(32, 8, 128, 1, 1, 2) == 131_072
    assert kv.kv_cache_bytes(32, 8, 128, 1, 4096, 2) == 536_870_912


def test_sliding_window_gemma2():
    assert kv.sliding_kv_cache_bytes(13, 13, 4096, 4, 256, 1, 8192, 2) == 654_311_424
    # below the window the hybrid cache equals the full cache
    assert kv.sliding_kv_cache_bytes(13, 13, 4096, 4, 256, 1, 1000, 2) == kv.kv_cache_bytes(26, 4, 256, 1, 1000, 2)


def test_prefill_and_append():
    assert kv.kv_append_transient_bytes(8, 128, 1, 4096, 2) == 8_388_608
    assert kv.prefill_transient_bytes(4096, 4096, 14336, True, 2) == 486_539_264
    assert kv.eager_prefill_transient_bytes(1, 32, 4096, 4096, 2) == 5_502_926_848
    assert kv.eager_probs_held_bytes(1, 32, 4096, 4096, 2) == 1_073_741_824


def test_mla_cache_expansion_and_queries():
    """DeepSeek-V3's latent cache at 8k tokens is 0.54 GiB; counted as 128 heads of keys and values of its
    head_dim (64, the rotary part), as memplan did before, it came out at 15.25 GiB (issue #20)."""
    assert kv.mla_kv_cache_bytes(61, 576, 1, 8192, 2) == 575_668_224
    assert kv.kv_cache_bytes(61, 128, 64, 1, 8192, 2) == 16_374_562_816  # 15.25 GiB
    assert kv.mla_expand_transient_bytes(1, 8192, 128, 128, 64, 128, 2) == 939_524_096
    assert kv.mla_attention_query_bytes(2, 1024, 128, 7168, 128, 64, 128, 2) == 457_179_136
