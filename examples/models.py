"""Small reference models shared by the examples, the benchmarks and the tests."""

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
    """conv -> batch norm -> ReLU -> max pool -> linear, for square images of ``image_size``."""

    def __init__(self, channels=3, classes=4, image_size=8):
        super().__init__()
        # no bias: batch norm subtracts it again, so its gradient is rounding noise that Adam would amplify
        self.conv = nn.Conv2d(channels, 6, kernel_size=3, padding=1, bias=False)
        self.norm = nn.BatchNorm2d(6)
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Linear(6 * (image_size // 2) ** 2, classes)

    def forward(self, x):
        x = self.pool(F.relu(self.norm(self.conv(x))))
        return self.head(x.flatten(1))


class DecoderBlock(nn.Module):
    def __init__(self, width, heads):
        super().__init__()
        self.head_width = width // heads
        self.attention_norm = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.projection = nn.Linear(width, width)
        self.mlp_norm = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x):
        # shapes come from the tensors, never from the configuration, so that a tensor-parallel
        # rank holding some of the heads (examples/distributed/tensor_parallel.py) runs this unchanged
        q, k, v = self.qkv(self.attention_norm(x)).chunk(3, dim=-1)
        q, k, v = (t.unflatten(-1, (-1, self.head_width)).transpose(1, 2) for t in (q, k, v))
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.projection(attended.transpose(1, 2).flatten(2))
        return x + self.mlp(self.mlp_norm(x))


class GPT(nn.Module):
    """A GPT-style decoder: token + position embeddings, causal attention blocks, LayerNorm,
    and an output head tied to the token embedding.

    ``model(tokens)`` returns logits; ``model(tokens, targets)`` returns the mean cross-entropy.
    """

    def __init__(self, vocabulary=32, context=8, width=16, heads=2, layers=2):
        super().__init__()
        self.tokens = nn.Embedding(vocabulary, width)
        self.positions = nn.Embedding(context, width)
        self.blocks = nn.ModuleList(DecoderBlock(width, heads) for _ in range(layers))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocabulary, bias=False)
        self.head.weight = self.tokens.weight
        for name, parameter in self.named_parameters():
            if name.endswith("projection.weight"):
                nn.init.normal_(parameter, std=0.02 / math.sqrt(2 * layers))

    def forward(self, tokens, targets=None):
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.tokens(tokens) + self.positions(positions)
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.norm(x))
        return logits if targets is None else cross_entropy(logits, targets)


def cross_entropy(logits, targets):
    """Mean cross-entropy over every position of a (batch, ..., classes) output."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
