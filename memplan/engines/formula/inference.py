"""The phases of generate(): load, prefill (the prompt's pass, the cache it fills) and the last decode step
(the largest cache)."""

from __future__ import annotations

from memplan.architecture import ModelInfo
from memplan.engines.formula.activations import mask_count
from memplan.engines.formula.static import base_weights
from memplan.methods import float_dtype
from memplan.result import Phase
from memplan.spec import JobSpec
from memplan.terms import activations as act
from memplan.terms import kv_cache as kv
from memplan.terms import logits as lg
from memplan.terms.dtypes import dtype_bytes


def inference_phases(info: ModelInfo, spec: JobSpec, attention: str, notes: list[str]) -> list[Phase]:
    inf = spec.inference
    weights = base_weights(info, spec.weight_dtype, float_dtype(spec), spec.double_quant)
    c = dtype_bytes(spec.compute_dtype)
    kvb = dtype_bytes(inf.kv_cache_dtype)
    # beam search expands the batch before the prefill (generate()'s _expand_inputs_for_generation)
    b, prompt, total = inf.batch_size * inf.num_beams, inf.prompt_len, inf.prompt_len + inf.max_new_tokens
    static = inf.cache_implementation == "static"
    dec = [s for s in info.layers if s.stack == "decoder"]
    logits_last = lg.logits_bytes(b, info.vocab_size, c + 4)  # last position, and generate()'s fp32 copy
    if inf.num_beams > 1:
        logits_last += lg.beam_search_scores_bytes(b, info.vocab_size)

    def cache(tokens: int) -> int:
        if info.head not in ("causal_lm", "seq2seq_lm"):
            return 0
        layers = len(dec)
        if info.mla:
            return kv.mla_kv_cache_bytes(layers, info.kv_latent_size, b, tokens, kvb)
        if info.sliding_window and info.sliding_window_layers:
            return kv.sliding_kv_cache_bytes(layers - info.sliding_window_layers, info.sliding_window_layers,
                                             info.sliding_window, info.num_kv_heads, info.head_dim, b, tokens, kvb)
        return kv.kv_cache_bytes(layers, info.num_kv_heads, info.head_dim, b, tokens, kvb)

    prefill_tokens = b * prompt

    def block_transient(tokens: int) -> int:
        """The largest working set of a block over `tokens` tokens: a dense MLP's, or the routed experts'."""
        return max(kv.moe_prefill_transient_bytes(tokens, info.hidden_size, s.intermediate_size,
                                                  s.experts_per_token, c) if s.experts else
                   kv.prefill_transient_bytes(tokens, info.hidden_size, s.intermediate_size, s.gated_mlp, c)
                   for s in dec)

    transient = block_transient(prefill_tokens)

    def mla_attention(new: int, cached: int) -> int:
        """An MLA layer's attention: the keys and values expanded from every cached token, beside the queries,
        the attention output and the block input of the `new` tokens."""
        _, nope, rope, v_dim = info.mla
        return (kv.mla_expand_transient_bytes(b, cached, info.num_heads, nope, rope, v_dim, c)
                + kv.mla_attention_query_bytes(b, new, info.num_heads, info.hidden_size, nope, rope, v_dim, c))

    if info.mla:
        transient = max(transient, mla_attention(prompt, prompt))
    if attention == "eager":
        transient = max(transient + kv.eager_probs_held_bytes(b, info.num_heads, prompt, prompt, c),
                        kv.eager_prefill_transient_bytes(b, info.num_heads, prompt, info.hidden_size, c))
    if attention == "eager" or (info.sliding_window and attention == "sdpa"):
        transient += act.attention_mask_bytes(b, prompt, prompt, c, attention, mask_count(info))
    if info.is_encoder_decoder:
        cross = kv.kv_cache_bytes(len(dec), info.num_kv_heads, info.head_dim, b, prompt, kvb)
        prefill_kv, decode_kv = cross, cross + cache(inf.max_new_tokens)
        notes.append("encoder-decoder: the prompt feeds the encoder; the decoder caches max_new_tokens "
                     "self-attention positions and a static cross-attention cache of prompt_len positions")
    else:  # a static cache is allocated whole before the prefill
        prefill_kv, decode_kv = cache(total if static else prompt), cache(total)
    phases = [Phase("load", {"weights": weights}),
              Phase("prefill", {"weights": weights, "kv_cache": prefill_kv,
                                 "activations": transient, "logits": logits_last})]
    if info.head in ("causal_lm", "seq2seq_lm") and inf.max_new_tokens > 0:
        # a static cache writes each step in place (index_copy_); a dynamic one concatenates (MLA: the latent, the
        # larger of its two cached tensors)
        width = (info.num_kv_heads, info.head_dim) if not info.mla else (1, info.mla[0])
        append = 0 if static else kv.kv_append_transient_bytes(*width, b, total, kvb)
        step = block_transient(b)
        if info.mla:
            step = max(step, mla_attention(1, total))
        phases.append(Phase("decode", {"weights": weights, "kv_cache": decode_kv, "activations": step,
                                        "logits": logits_last, "temporaries": append}))
    return phases
