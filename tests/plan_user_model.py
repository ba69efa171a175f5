"""Models that tests plan through ``python -m torch_tpu.plan --model plan_user_model:<function>``."""

import dataclasses

import torch
from torch import nn

from torch_tpu.plan import models, training


class ResidualMLPLanguageModel(nn.Module):
    """A user's own module: embedding, residual MLP blocks, output head; returns logits."""

    def __init__(self, vocabulary=512, width=128, blocks=3):
        super().__init__()
        self.embedding = nn.Embedding(vocabulary, width)
        self.blocks = nn.ModuleList(nn.Sequential(nn.LayerNorm(width), nn.Linear(width, 4 * width), nn.GELU(),
                                                  nn.Linear(4 * width, width)) for _ in range(blocks))
        self.head = nn.Linear(width, vocabulary, bias=False)

    def forward(self, tokens):
        x = self.embedding(tokens)
        for block in self.blocks:
            x = x + block(x)
        return self.head(x)


def mlp_language_model(batch, seq):
    return ResidualMLPLanguageModel(), torch.randint(0, 512, (batch, seq))


TINY_LLAMA = dataclasses.replace(models.CONFIGS["llama3-8b"], dim=256, layers=2, heads=8, kv_heads=4, ffn_dim=512,
                                 vocab=1024)


def tiny_llama(batch, seq):
    """The built-in Llama code at a tiny size, with its tensor-parallel plan."""
    model = models.Decoder(TINY_LLAMA, seq)
    tokens = torch.randint(0, TINY_LLAMA.vocab, (batch, seq))
    return {"model": model, "batch": (tokens, tokens), "loss": lambda m, t, y: m(t, y),
            "tp_plan": training.tensor_parallel_plan(TINY_LLAMA), "head_plan": training.head_parallel_plan(TINY_LLAMA)}
