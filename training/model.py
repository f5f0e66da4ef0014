"""A Llama-style decoder (RMSNorm, rotate-half RoPE, SwiGLU, grouped-query attention).

Parameter names follow Hugging Face's LlamaForCausalLM, so a checkpoint saved here loads in
transformers unchanged and any LlamaForCausalLM checkpoint loads here (see hf_io.py).

Two forwards share the weights:
- `forward_train(ids)`: the usual causal forward over a whole window (SDPA), for training;
- `StepModule`: the explorer graph of docs/model-format.md — one forward over q new tokens
  given an arbitrary cache and an additive bias, returning logits, the new K/V, attention
  probabilities and post-RoPE queries. The engine owns the cache; this graph only sees it.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class LlamaConfig:
    vocab_size: int = 4096
    hidden_size: int = 256
    intermediate_size: int = 768
    n_layers: int = 8
    n_heads: int = 8
    n_kv_heads: int = 2
    head_dim: int = 32
    context_length: int = 1024
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    tie_word_embeddings: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (self.weight * xf).to(x.dtype)


def rope_cos_sin(position_ids: torch.Tensor, head_dim: int, theta: float):
    """cos/sin [batch, q, head_dim] for rotate-half RoPE (dimension i pairs with i + D/2)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=position_ids.device, dtype=torch.float32) / head_dim))
    freqs = position_ids.float()[..., None] * inv_freq
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos(), emb.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # x [B, heads, q, D]; cos/sin [B, q, D]
    return x * cos[:, None] + rotate_half(x) * sin[:, None]


class Attention(nn.Module):
    def __init__(self, c: LlamaConfig):
        super().__init__()
        self.c = c
        self.q_proj = nn.Linear(c.hidden_size, c.n_heads * c.head_dim, bias=False)
        self.k_proj = nn.Linear(c.hidden_size, c.n_kv_heads * c.head_dim, bias=False)
        self.v_proj = nn.Linear(c.hidden_size, c.n_kv_heads * c.head_dim, bias=False)
        self.o_proj = nn.Linear(c.n_heads * c.head_dim, c.hidden_size, bias=False)

    def qkv(self, x, cos, sin):
        b, q, _ = x.shape
        c = self.c
        qh = self.q_proj(x).view(b, q, c.n_heads, c.head_dim).transpose(1, 2)
        kh = self.k_proj(x).view(b, q, c.n_kv_heads, c.head_dim).transpose(1, 2)
        vh = self.v_proj(x).view(b, q, c.n_kv_heads, c.head_dim).transpose(1, 2)
        return apply_rope(qh, cos, sin), apply_rope(kh, cos, sin), vh

    def forward_train(self, x, cos, sin):
        qh, kh, vh = self.qkv(x, cos, sin)
        out = F.scaled_dot_product_attention(qh, kh, vh, is_causal=True, enable_gqa=True)
        b, _, q, _ = out.shape
        return self.o_proj(out.transpose(1, 2).reshape(b, q, -1))


class MLP(nn.Module):
    def __init__(self, c: LlamaConfig):
        super().__init__()
        self.gate_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=False)
        self.up_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=False)
        self.down_proj = nn.Linear(c.intermediate_size, c.hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, c: LlamaConfig):
        super().__init__()
        self.self_attn = Attention(c)
        self.mlp = MLP(c)
        self.input_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)


class LlamaBody(nn.Module):
    def __init__(self, c: LlamaConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(c.vocab_size, c.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(c) for _ in range(c.n_layers))
        self.norm = RMSNorm(c.hidden_size, c.rms_norm_eps)


class Llama(nn.Module):
    def __init__(self, c: LlamaConfig):
        super().__init__()
        self.config = c
        self.model = LlamaBody(c)
        self.lm_head = nn.Linear(c.hidden_size, c.vocab_size, bias=False)
        if c.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def init_gpt2_style(self, generator: torch.Generator) -> None:
        """N(0, 0.02) everywhere, residual projections scaled by 1/sqrt(2 L).

        TRAINING_NOTES.md: PyTorch's default N(0, 1) embedding init gave no induction heads
        at all; this init gave a 0.79 induction head and working passkey retrieval."""
        residual_std = 0.02 / math.sqrt(2 * self.config.n_layers)
        for name, p in self.named_parameters():
            if p.dim() < 2:
                continue
            std = residual_std if name.endswith(("o_proj.weight", "down_proj.weight")) else 0.02
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=generator) * std)

    def forward_train(self, ids: torch.Tensor, dropout: float = 0.0) -> torch.Tensor:
        c = self.config
        pos = torch.arange(ids.shape[1], device=ids.device)[None].expand_as(ids)
        cos, sin = rope_cos_sin(pos, c.head_dim, c.rope_theta)
        x = self.model.embed_tokens(ids)
        drop = dropout if self.training else 0.0
        for layer in self.model.layers:
            x = x + F.dropout(layer.self_attn.forward_train(layer.input_layernorm(x), cos, sin), drop)
            x = x + F.dropout(layer.mlp(layer.post_attention_layernorm(x)), drop)
        return self.lm_head(self.model.norm(x))

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())  # tied weights counted once

    def macs_per_token(self) -> int:
        """Multiply-accumulates of the weight matrices per token (attention over the cache excluded)."""
        c = self.config
        attn = c.hidden_size * c.head_dim * (2 * c.n_heads + 2 * c.n_kv_heads)
        mlp = 3 * c.hidden_size * c.intermediate_size
        return c.n_layers * (attn + mlp) + c.hidden_size * c.vocab_size


class StepModule(nn.Module):
    """The explorer graph: inputs/outputs exactly as in docs/model-format.md."""

    def __init__(self, llama: Llama):
        super().__init__()
        self.llama = llama

    def forward(self, input_ids, position_ids, *layer_inputs):
        m, c = self.llama, self.llama.config
        group = c.n_heads // c.n_kv_heads
        cos, sin = rope_cos_sin(position_ids, c.head_dim, c.rope_theta)
        x = m.model.embed_tokens(input_ids)
        per_layer = []
        for l, layer in enumerate(m.model.layers):
            past_k, past_v, bias = layer_inputs[3 * l: 3 * l + 3]
            attn = layer.self_attn
            qh, kh, vh = attn.qkv(layer.input_layernorm(x), cos, sin)
            keys = torch.cat([past_k, kh], dim=2)
            values = torch.cat([past_v, vh], dim=2)
            b, hkv, t, d = keys.shape
            # query head h reads KV head h // group (contiguous groups, as in transformers)
            keys_rep = keys[:, :, None].expand(b, hkv, group, t, d).reshape(b, hkv * group, t, d)
            values_rep = values[:, :, None].expand(b, hkv, group, t, d).reshape(b, hkv * group, t, d)
            scores = torch.matmul(qh, keys_rep.transpose(-1, -2)) * (1.0 / math.sqrt(c.head_dim)) + bias
            probs = torch.softmax(scores, dim=-1)
            out = torch.matmul(probs, values_rep)
            q = out.shape[2]
            x = x + attn.o_proj(out.transpose(1, 2).reshape(b, q, -1))
            x = x + layer.mlp(layer.post_attention_layernorm(x))
            per_layer += [kh, vh, probs, qh]
        logits = m.lm_head(m.model.norm(x))
        return (logits, *per_layer)


def io_names(n_layers: int):
    inputs = ["input_ids", "position_ids"]
    outputs = ["logits"]
    for l in range(n_layers):
        inputs += [f"past_key_{l}", f"past_value_{l}", f"attn_bias_{l}"]
        outputs += [f"key_{l}", f"value_{l}", f"attn_{l}", f"query_{l}"]
    return inputs, outputs
