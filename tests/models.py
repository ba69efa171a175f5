"""Tiny models and data shared by the training tests (kept small so 20 steps run in seconds)."""

import math

import torch
import torch.nn.functional as F
from torch import nn


class MLP(nn.Module):
    def __init__(self, features=12, hidden=16, classes=5):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.Tanh(),
                                    nn.Linear(hidden, classes))

    def forward(self, x):
        return self.layers(x)


class SmallCNN(nn.Module):
    """conv -> batch norm -> ReLU -> max pool -> linear."""

    def __init__(self, channels=3, classes=4):
        super().__init__()
        self.conv = nn.Conv2d(channels, 6, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm2d(6)
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Linear(6 * 4 * 4, classes)

    def forward(self, x):
        x = self.pool(F.relu(self.norm(self.conv(x))))
        return self.head(x.flatten(1))


class DecoderBlock(nn.Module):
    def __init__(self, width, heads):
        super().__init__()
        self.heads = heads
        self.attention_norm = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.projection = nn.Linear(width, width)
        self.mlp_norm = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x):
        batch, length, width = x.shape
        q, k, v = self.qkv(self.attention_norm(x)).split(width, dim=-1)
        q, k, v = (t.view(batch, length, self.heads, width // self.heads).transpose(1, 2) for t in (q, k, v))
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.projection(attended.transpose(1, 2).reshape(batch, length, width))
        return x + self.mlp(self.mlp_norm(x))


class TinyGPT(nn.Module):
    """Token + position embeddings, causal attention blocks, LayerNorm, a head tied to the token embedding."""

    def __init__(self, vocabulary=32, context=8, width=16, heads=2, layers=2):
        super().__init__()
        self.tokens = nn.Embedding(vocabulary, width)
        self.positions = nn.Embedding(context, width)
        self.blocks = nn.ModuleList(DecoderBlock(width, heads) for _ in range(layers))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocabulary, bias=False)
        self.tie_weights()
        for name, parameter in self.named_parameters():
            if name.endswith("projection.weight"):
                nn.init.normal_(parameter, std=0.02 / math.sqrt(2 * layers))

    def tie_weights(self):
        self.head.weight = self.tokens.weight

    def forward(self, tokens):
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.tokens(tokens) + self.positions(positions)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))


def mlp_batch(generator, batch=8):
    return torch.randn(batch, 12, generator=generator), torch.randint(0, 5, (batch,), generator=generator)


def cnn_batch(generator, batch=4):
    return torch.randn(batch, 3, 8, 8, generator=generator), torch.randint(0, 4, (batch,), generator=generator)


def gpt_batch(generator, batch=4, context=8, vocabulary=32):
    tokens = torch.randint(0, vocabulary, (batch, context + 1), generator=generator)
    return tokens[:, :-1], tokens[:, 1:]


def cross_entropy(logits, targets):
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
