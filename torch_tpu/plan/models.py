"""The built-in models of ``python -m torch_tpu.plan``: Llama- and GPT-style decoders as plain nn.Modules.

The shapes are the published ones (``CONFIGS``): Llama 3.1 8B/70B/405B and Llama 3.2 1B/3B from
Meta's model cards and ``params.json`` files, Llama 2 7B/13B/70B (the models of MaxText's published
v5p and v6e runs), and GPT-3's sizes from Brown et al. (2020), table 2.1. The code is ordinary
PyTorch, written as the reference implementations are: Llama has grouped-query attention through
``F.scaled_dot_product_attention(..., enable_gqa=True)``, SwiGLU, RMSNorm and rotary position
embeddings; GPT has learned positions, LayerNorm, a GELU MLP and a head tied to the token embedding.
Every projection is an ``nn.Linear``, and attention reshapes by head *size*, not head count, so that
``parallelize_module`` can shard heads and FFN columns without changing this code.
"""

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
    family: str  # "llama" or "gpt"
    dim: int
    layers: int
    heads: int
    kv_heads: int
    ffn_dim: int
    vocab: int
    norm_eps: float = 1e-5
    rope_theta: float = 500000.0
    tie_embeddings: bool = False

    @property
    def head_dim(self):
        return self.dim // self.heads

    def matmul_weights(self):
        """Weights that multiply activations in a matmul: every layer's projections, and the output head."""
        attention = self.dim * self.head_dim * (self.heads + 2 * self.kv_heads) + self.heads * self.head_dim * self.dim
        mlp = (3 if self.family == "llama" else 2) * self.dim * self.ffn_dim
        return self.layers * (attention + mlp) + self.vocab * self.dim

    def vector_parameters(self):
        """Norm weights, and for GPT biases and LayerNorm biases."""
        if self.family == "llama":
            return (2 * self.layers + 1) * self.dim
        biases = self.dim + 2 * self.kv_heads * self.head_dim + self.dim + self.ffn_dim + self.dim
        return self.layers * (biases + 4 * self.dim) + 2 * self.dim

    def parameter_count(self, max_length=None):
        """The closed form the model's parameters must add up to (GPT adds its position table)."""
        lookups = 0 if self.tie_embeddings else self.vocab * self.dim
        if self.family == "gpt":
            lookups += max(max_length or GPT_CONTEXT, GPT_CONTEXT) * self.dim
        return self.matmul_weights() + self.vector_parameters() + lookups


def _llama3(dim, layers, heads, ffn_dim, tie=False):
    return DecoderConfig("llama", dim, layers, heads, 8, ffn_dim, 128256, tie_embeddings=tie)


def _llama2(dim, layers, heads, kv_heads, ffn_dim):
    return DecoderConfig("llama", dim, layers, heads, kv_heads, ffn_dim, 32000, rope_theta=10000.0)


def _gpt3(dim, layers, heads):
    return DecoderConfig("gpt", dim, layers, heads, heads, 4 * dim, 50257, tie_embeddings=True)


CONFIGS = {
    "llama3-1b": _llama3(2048, 16, 32, 8192, tie=True),
    "llama3-3b": _llama3(3072, 28, 24, 8192, tie=True),
    "llama3-8b": _llama3(4096, 32, 32, 14336),
    "llama3-70b": _llama3(8192, 80, 64, 28672),
    "llama3-405b": _llama3(16384, 126, 128, 53248),
    "llama2-7b": _llama2(4096, 32, 32, 32, 11008),
    "llama2-13b": _llama2(5120, 40, 40, 40, 13824),
    "llama2-70b": _llama2(8192, 80, 64, 8, 28672),
    "gpt3-1.3b": _gpt3(2048, 24, 16),
    "gpt3-2.7b": _gpt3(2560, 32, 32),
    "gpt3-6.7b": _gpt3(4096, 32, 32),
    "gpt3-13b": _gpt3(5120, 40, 40),
    "gpt3-175b": _gpt3(12288, 96, 96),
}
GPT_CONTEXT = 2048  # GPT-3's learned position table


class RMSNorm(nn.Module):
    """x / rms(x) * weight, computed in float32 and cast back, as Llama's reference code does."""

    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        normed = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.type_as(x) * self.weight


def rotary_tables(head_dim, length, theta, device=None, start=0):
    """cos and sin of the rotation angles of positions start..start+length-1, (length, head_dim), the
    halves repeated."""
    frequencies = 1.0 / theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim)
    positions = torch.arange(start, start + length, device=device, dtype=torch.float32)
    angles = torch.outer(positions, frequencies)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def rotate(x, cos, sin):
    """RoPE on (batch, heads, length, head_dim), in the rotate-half layout (the casts are free when the
    tables already have ``x``'s dtype)."""
    first, second = x.chunk(2, dim=-1)
    return x * cos.to(x.dtype) + torch.cat([-second, first], dim=-1) * sin.to(x.dtype)


class KVCache(nn.Module):
    """One layer's keys and values for ``max_length`` positions, preallocated as serving does, in
    ``dtype`` (bf16, or fp8 to halve the cache; attention reads it back in the activations' dtype)."""

    def __init__(self, batch, kv_heads, max_length, head_dim, dtype, device=None):
        super().__init__()
        shape = (batch, kv_heads, max_length, head_dim)
        self.register_buffer("keys", torch.empty(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("values", torch.empty(shape, dtype=dtype, device=device), persistent=False)

    def update(self, position, keys, values):
        """Store the new positions' keys and values; return every position's so far."""
        end = position + keys.shape[2]
        self.keys[:, :, position:end] = keys
        self.values[:, :, position:end] = values
        return self.keys[:, :, :end].to(keys.dtype), self.values[:, :, :end].to(values.dtype)


class Attention(nn.Module):
    def __init__(self, config, bias):
        super().__init__()
        self.head_dim = config.head_dim
        self.rotary = config.family == "llama"
        self.q = nn.Linear(config.dim, config.heads * self.head_dim, bias=bias)
        self.k = nn.Linear(config.dim, config.kv_heads * self.head_dim, bias=bias)
        self.v = nn.Linear(config.dim, config.kv_heads * self.head_dim, bias=bias)
        self.o = nn.Linear(config.heads * self.head_dim, config.dim, bias=bias)

    def forward(self, x, cos=None, sin=None, cache=None, position=0):
        batch, length, _ = x.shape
        q, k, v = (projection(x).view(batch, length, -1, self.head_dim).transpose(1, 2)
                   for projection in (self.q, self.k, self.v))
        if self.rotary:
            q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        if cache is not None:
            k, v = cache.update(position, k, v)
        causal = length > 1  # one new query (a decode step) attends to every cached position
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=q.shape[1] != k.shape[1])
        return self.o(attended.transpose(1, 2).reshape(batch, length, -1))


class SwiGLU(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.gate = nn.Linear(config.dim, config.ffn_dim, bias=False)
        self.up = nn.Linear(config.dim, config.ffn_dim, bias=False)
        self.down = nn.Linear(config.ffn_dim, config.dim, bias=False)

    def forward(self, x):
        return self.down(F.silu(self.gate(x)) * self.up(x))


class GELUMLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.up = nn.Linear(config.dim, config.ffn_dim)
        self.down = nn.Linear(config.ffn_dim, config.dim)

    def forward(self, x):
        return self.down(F.gelu(self.up(x), approximate="tanh"))


class Block(nn.Module):
    """A pre-norm decoder layer: x + attention(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config):
        super().__init__()
        llama = config.family == "llama"
        norm = (lambda: RMSNorm(config.dim, config.norm_eps)) if llama else (lambda: nn.LayerNorm(config.dim))
        self.attention_norm, self.mlp_norm = norm(), norm()
        self.attention = Attention(config, bias=not llama)
        self.mlp = SwiGLU(config) if llama else GELUMLP(config)

    def forward(self, x, cos=None, sin=None, cache=None, position=0):
        x = x + self.attention(self.attention_norm(x), cos, sin, cache, position)
        return x + self.mlp(self.mlp_norm(x))


class Decoder(nn.Module):
    """A decoder-only language model. ``model(tokens)`` gives logits; ``model(tokens, targets)`` the mean
    cross-entropy (computed in float32). Serving passes ``caches`` (one KVCache per layer) and the
    ``position`` of the first token: then only the last position's logits are computed."""

    def __init__(self, config, max_length=GPT_CONTEXT):
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab, config.dim)
        self.positions = nn.Embedding(max_length, config.dim) if config.family == "gpt" else None
        self.layers = nn.ModuleList(Block(config) for _ in range(config.layers))
        self.norm = RMSNorm(config.dim, config.norm_eps) if config.family == "llama" else nn.LayerNorm(config.dim)
        self.head = nn.Linear(config.dim, config.vocab, bias=False)
        self.tie_weights()

    def tie_weights(self):
        """Share the token embedding with the output head (GPT, Llama 3.2); ``to_empty`` unties them."""
        if self.config.tie_embeddings:
            self.head.weight = self.embedding.weight

    def forward(self, tokens, targets=None, caches=None, position=0):
        length = tokens.shape[1]
        x = self.embedding(tokens)
        cos = sin = None
        if self.positions is not None:
            x = x + self.positions(torch.arange(position, position + length, device=tokens.device))
        else:
            tables = rotary_tables(self.config.head_dim, length, self.config.rope_theta, tokens.device, position)
            cos, sin = (table.to(x.dtype) for table in tables)  # once, not in every layer
        for index, layer in enumerate(self.layers):
            x = layer(x, cos, sin, None if caches is None else caches[index], position)
        if caches is not None:
            x = x[:, -1:]
        logits = self.head(self.norm(x))
        if targets is None:
            return logits
        return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())


def kv_caches(config, batch, max_length, dtype, device=None, kv_heads=None):
    """One KVCache per layer (``kv_heads``: each chip's share under tensor parallelism)."""
    heads = config.kv_heads if kv_heads is None else kv_heads
    return nn.ModuleList(KVCache(batch, heads, max_length, config.head_dim, dtype, device) for _ in range(config.layers))


def build(name, max_length=GPT_CONTEXT):
    """The built-in model ``name`` (a key of ``CONFIGS``), on the current default device."""
    try:
        config = CONFIGS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; built-in models: {', '.join(CONFIGS)}") from None
    return Decoder(config, max(max_length, GPT_CONTEXT) if config.family == "gpt" else max_length)


def model_flops_per_token(config, length, causal_fraction=0.5):
    """Training FLOPs per token of a ``length``-token sequence: 6 per matmul weight (2 forward, 4 backward)
    plus attention, 3 passes x 2 matmuls (QK^T, PV) x 2 FLOPs x length x heads x head_dim per layer,
    times the fraction of scores computed. MaxText's MFU convention counts half for causal attention
    (``causal_fraction=0.5``); a kernel that computes every score does 1."""
    attention = 12 * length * config.heads * config.head_dim * config.layers * causal_fraction
    return 6 * config.matmul_weights() + attention


def describe(config):
    billions = config.parameter_count() / 1e9
    return f"{config.family} {billions:.1f}B: {config.layers} layers, width {config.dim}, {config.heads} heads " \
           f"({config.kv_heads} kv), FFN {config.ffn_dim}, vocabulary {config.vocab}"


