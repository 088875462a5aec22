"""Plain shape records the terms take as input (filled in by `memplan.architecture`, or by hand in tests)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LinearShape:
    name: str  # block-relative module name, e.g. "self_attn.q_proj"
    group: str  # which tensor it reads: attn_in | attn_out | cross_q | cross_kv | mlp_in | mlp_out
    d_in: int
    d_out: int
    bias: bool = False


@dataclass(frozen=True)
class LayerShape:
    """One transformer block: h, heads, MLP width and the tensors autograd saves depend on these."""

    stack: str  # decoder | encoder
    index: int
    hidden: int  # h
    heads: int  # n_q
    kv_heads: int  # n_kv
    head_dim: int  # d_head
    intermediate_size: int  # I
    gated_mlp: bool  # SwiGLU / GeGLU: two input projections and a product
    activation: str  # config's activation name
    norm_kind: str  # rms | t5_rms | gemma_rms | layer
    norms: int  # norms over h in the block (2 for pre-norm blocks, 4 for Gemma 2, 3 for T5 decoder)
    head_norms: int = 0  # per-head q/k norms (Qwen3, Gemma 3)
    cross_attention: bool = False
    hidden_dropout: float = 0.0
    attention_dropout: float = 0.0
    linears: tuple[LinearShape, ...] = ()
    experts: int = 0
    experts_per_token: int = 0
    attn_softcap: bool = False  # attention logit softcapping (Gemma 2): eager saves the tanh output
    parallel_residual: bool = False  # attention and MLP both read the block input (GPT-NeoX, Phi, GPT-J)
    post_norm: bool = False  # norms after each sublayer's residual add (BERT) instead of before it
    attn_bias: bool = False  # an additive position bias per attention call (T5's relative attention)
    mlp_dropout: bool = False  # a dropout between the MLP's activation and its output projection (T5)
    #: q, k and v stay views of one fused projection's output (GPT-2's c_attn: no rotary makes new q, k); when the
    #: training forward's cache copies k and v, attention saves q's view, so the whole fused output stays too
    fused_qkv_view: bool = False

    @property
    def kv_width(self) -> int:
        """h_kv = n_kv * d_head."""
        return self.kv_heads * self.head_dim

    @property
    def q_width(self) -> int:
        return self.heads * self.head_dim
