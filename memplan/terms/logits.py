"""Logits and the cross-entropy loss: with 128k-256k vocabularies often the largest single spike of a step."""

from __future__ import annotations


def logits_bytes(tokens: int, vocab: int, logits_bytes_per: int) -> int:
    """The lm_head output [T, V] in its dtype (c, or 4 when lm_head is fp32 after prepare_model_for_kbit_training).

    Example: T=4096, V=128,256, bf16: 1,050,673,152 B.
    """
    return tokens * vocab * logits_bytes_per


def cross_entropy_forward_peak_bytes(tokens: int, vocab: int, logits_bytes_per: int) -> int:
    """Peak inside the loss in forward: the logits, their fp32 upcast (ForCausalLMLoss calls logits.float(); no copy
    when they are fp32 already) and log_softmax's fp32 output, alive at one instant.

    Formula: l*T*V + (4*T*V if l != 4) + 4*T*V. Source: transformers/loss/loss_utils.py ForCausalLMLoss ->
    F.cross_entropy = log_softmax + nll_loss. Example: T=4096, V=128,256, bf16: 10*T*V = 5,253,365,760 B.
    """
    upcast = 0 if logits_bytes_per == 4 else 4 * tokens * vocab
    return logits_bytes_per * tokens * vocab + upcast + 4 * tokens * vocab


def cross_entropy_saved_bytes(tokens: int, vocab: int) -> int:
    """What the loss keeps for backward: log_softmax's fp32 output, 4*T*V (its backward needs only the output).

    Example: T=4096, V=128,256: 2,101,346,304 B.
    """
    return 4 * tokens * vocab


def cross_entropy_backward_spike_bytes(tokens: int, vocab: int) -> int:
    """At the start of backward: the saved log_softmax output, nll_loss's gradient and log_softmax's input
    gradient, all fp32 [T, V]: 12*T*V at one instant (memory-mechanics.md A2, traced at 8B).

    Example: T=4096, V=128,256: 6,304,038,912 B (5.87 GiB).
    """
    return 12 * tokens * vocab


def beam_search_scores_bytes(rows: int, vocab: int) -> int:
    """Beam search's scores over the last position, beside the fp32 logits `logits_bytes` counts: the fp32
    log-softmax and its sum with the running beam scores, both [b * beams, V] and alive together.

    Formula: 2 * 4 * rows * V.
    Source: transformers generation/utils.py GenerationMixin._beam_search (log_probs = log_softmax(logits);
    log_probs = log_probs + running_beam_scores[:, :, None]).
    Example: 4 beams of one Llama-3.1-8B prompt (V 128,256): 8 * 4 * 128,256 = 4,104,192 B.
    """
    return 8 * rows * vocab
