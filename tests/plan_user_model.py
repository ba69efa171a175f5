"""Models that tests plan through ``python -m torch_tpu.plan --model plan_user_model:<function>``."""

import dataclasses
import warnings

import torch
from torch import nn

from torch_tpu.plan import models, training


class ResidualLanguageModel(nn.Module):
    """A user's own module: embedding, residual ``blocks``, output head; returns logits."""

    def __init__(self, vocabulary, width, blocks):
        super().__init__()
        self.embedding = nn.Embedding(vocabulary, width)
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Linear(width, vocabulary, bias=False)

    def forward(self, tokens):
        x = self.embedding(tokens)
        for block in self.blocks:
            x = x + block(x)
        return self.head(x)


class ResidualMLPLanguageModel(ResidualLanguageModel):
    def __init__(self, vocabulary=512, width=128, blocks=3):
        super().__init__(vocabulary, width, (nn.Sequential(nn.LayerNorm(width), nn.Linear(width, 4 * width), nn.GELU(),
                                                           nn.Linear(4 * width, width)) for _ in range(blocks)))


def mlp_language_model(batch, seq):
    return ResidualMLPLanguageModel(), torch.randint(0, 512, (batch, seq))


class OutputsWithLoss(ResidualMLPLanguageModel):
    """Hugging Face's convention: a dict of outputs, the loss under "loss"."""

    def forward(self, tokens, labels):
        logits = super().forward(tokens)
        return {"logits": logits, "loss": nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten())}


class WarningLanguageModel(ResidualMLPLanguageModel):
    """Warns in its forward, as user code may: the warning is the user's and must reach them."""

    def forward(self, tokens):
        warnings.warn("the user's own warning", UserWarning)
        return super().forward(tokens)


def warning_language_model(batch, seq):
    return WarningLanguageModel(), torch.randint(0, 512, (batch, seq))


class WithoutAFastPath(nn.Module):
    def forward(self, tokens):
        raise NotImplementedError("no fast path for these tokens")


class FallingBackLanguageModel(ResidualMLPLanguageModel):
    """Tries a fast path that raises and falls back, as user code may; then its head (too wide) raises."""

    def __init__(self):
        super().__init__()
        self.fast_path = WithoutAFastPath()
        self.head = nn.Linear(256, 512)

    def forward(self, tokens):
        try:
            return self.fast_path(tokens)
        except NotImplementedError:
            return super().forward(tokens)


def falling_back_language_model(batch, seq):
    return FallingBackLanguageModel(), torch.randint(0, 512, (batch, seq))


def outputs_with_loss(batch, seq):
    tokens = torch.randint(0, 512, (batch, seq))
    return OutputsWithLoss(), (tokens, tokens)


@dataclasses.dataclass
class LanguageModelOutput:
    """Hugging Face's ModelOutput as a plain dataclass: fields that may be None, the loss first."""

    loss: torch.Tensor = None
    logits: torch.Tensor = None


class DataclassOutputs(ResidualMLPLanguageModel):
    """Hugging Face's calling convention: ``model(input_ids=..., labels=...)`` returning a dataclass."""

    def forward(self, input_ids, labels=None):
        logits = super().forward(input_ids)
        loss = None if labels is None else nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten())
        return LanguageModelOutput(loss=loss, logits=logits)


def keyword_batch_dataclass_outputs(batch, seq):
    tokens = torch.randint(0, 512, (batch, seq))
    return DataclassOutputs(), {"input_ids": tokens, "labels": tokens}


def outputs_with_loss_taken_by_a_function(batch, seq):
    model, tokens = outputs_with_loss(batch, seq)
    return {"model": model, "batch": tokens, "loss": lambda m, x, y: m(x, y)["loss"]}


def _returning(output, batch, seq):
    class Described(ResidualMLPLanguageModel):
        def forward(self, tokens):
            return output

    return Described(), torch.randint(0, 512, (batch, seq))


def outputs_without_a_tensor(batch, seq):
    return _returning({"summary": "no tensor here"}, batch, seq)


def outputs_nothing(batch, seq):
    return _returning({}, batch, seq)


def outputs_only_nones(batch, seq):
    return _returning({"loss": None, "logits": None}, batch, seq)


class WeightDecayOnly(nn.Module):
    """Takes no input: its loss is its own weights' squares (an empty batch dict is ``model()``)."""

    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList([nn.Linear(64, 32, bias=False)])

    def forward(self):
        return self.blocks[0].weight.square().sum()


def weight_decay_only(batch, seq):
    return WeightDecayOnly(), {}


TINY_LLAMA = dataclasses.replace(models.CONFIGS["llama3-8b"], dim=256, layers=2, heads=8, kv_heads=4, ffn_dim=512,
                                 vocab=1024)


def tiny_llama(batch, seq):
    """The built-in Llama code at a tiny size, with its tensor-parallel plan."""
    model = models.Decoder(TINY_LLAMA, seq)
    tokens = torch.randint(0, TINY_LLAMA.vocab, (batch, seq))
    return {"model": model, "batch": (tokens, tokens), "loss": lambda m, t, y: m(t, y),
            "tp_plan": training.tensor_parallel_plan(TINY_LLAMA), "head_plan": training.head_parallel_plan(TINY_LLAMA)}


class SwiGLUExpert(nn.Module):
    def __init__(self, width, hidden):
        super().__init__()
        self.gate = nn.Linear(width, hidden, bias=False)
        self.up = nn.Linear(width, hidden, bias=False)
        self.down = nn.Linear(hidden, width, bias=False)

    def forward(self, x):
        return self.down(torch.nn.functional.silu(self.gate(x)) * self.up(x))


class TopTwoMoE(nn.Module):
    """Mixtral-style top-2 routing with a fixed capacity per expert (GShard's dispatch): every shape is
    known before the values, so the planner can run it. Capacity factor 1: each expert takes at most
    tokens x 2 / experts tokens; the planned compute is that of perfectly uniform routing."""

    def __init__(self, width, hidden, experts=4, top=2):
        super().__init__()
        self.router = nn.Linear(width, experts, bias=False)
        self.experts = nn.ModuleList(SwiGLUExpert(width, hidden) for _ in range(experts))
        self.top = top

    def forward(self, x):
        shape, x = x.shape, x.flatten(0, -2)
        tokens, experts = x.shape[0], len(self.experts)
        capacity = tokens * self.top // experts
        weights, chosen = self.router(x).softmax(-1).topk(self.top, dim=-1)  # (tokens, top)
        weights = weights / weights.sum(-1, keepdim=True)
        routed = torch.zeros(tokens, experts, dtype=torch.long, device=x.device).scatter_(1, chosen, 1)
        position = (routed.cumsum(0) - 1).gather(1, chosen)  # each choice's slot in its expert's buffer
        kept = position < capacity
        slot = torch.where(kept, chosen * capacity + position, experts * capacity)  # the last slot drops
        buffer = x.new_zeros(experts * capacity + 1, x.shape[1])
        buffer.index_add_(0, slot.flatten(), x.repeat_interleave(self.top, dim=0))
        outputs = [expert(buffer[e * capacity:(e + 1) * capacity]) for e, expert in enumerate(self.experts)]
        outputs = torch.cat([*outputs, x.new_zeros(1, x.shape[1])])
        combined = (outputs[slot] * (weights * kept).unsqueeze(-1).to(x.dtype)).sum(1)
        return combined.view(shape)


class WhereRoutedMoE(TopTwoMoE):
    """The same routing written with torch.where(mask): how many tokens each expert gets depends on values."""

    def forward(self, x):
        shape, x = x.shape, x.flatten(0, -2)
        weights, chosen = self.router(x).softmax(-1).topk(self.top, dim=-1)
        out = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            token, rank = torch.where(chosen == e)
            out.index_add_(0, token, expert(x[token]) * weights[token, rank, None].to(x.dtype))
        return out.view(shape)


class MoELanguageModel(ResidualLanguageModel):
    """Residual MoE blocks: every matmul is a router, an expert or the head."""

    def __init__(self, moe=TopTwoMoE, vocabulary=256, width=64, hidden=128, blocks=2, experts=4):
        super().__init__(vocabulary, width, (moe(width, hidden, experts) for _ in range(blocks)))


def fixed_capacity_moe(batch, seq):
    return MoELanguageModel(), torch.randint(0, 256, (batch, seq))


def where_routed_moe(batch, seq):
    return MoELanguageModel(WhereRoutedMoE), torch.randint(0, 256, (batch, seq))


def compiled_block(batch, seq):
    """A model whose first block the user compiled: planned as its eager program."""
    model, tokens = mlp_language_model(batch, seq)
    model.blocks[0] = torch.compile(model.blocks[0], backend="tpu")
    return model, tokens


class HeadCountAttention(nn.Module):
    """Attention that reshapes by the whole model's head count: right on one chip, wrong under TP."""

    def __init__(self, width=64, heads=4):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.out = nn.Linear(width, width, bias=False)

    def forward(self, x):
        batch, length, width = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        attended = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        return x + self.out(attended.transpose(1, 2).reshape(batch, length, width))


def tiny_llama_reshaped_by_heads(batch, seq):
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel

    model = nn.Sequential(nn.Embedding(128, 64), nn.ModuleList([HeadCountAttention()]))
    model.forward = lambda tokens: model[1][0](model[0](tokens))
    return {"model": model, "batch": torch.randint(0, 128, (batch, seq)),
            "tp_plan": {"qkv": ColwiseParallel(), "out": RowwiseParallel()}}


def served_tiny_llama(batch, seq):
    """A cached decoder served from user code: the built-in Llama code at a tiny size, its KV cache with
    each chip's share of the key/value heads."""
    return {"model": models.Decoder(TINY_LLAMA, seq),
            "forward": lambda model, tokens, cache, position: model(tokens, caches=cache, position=position),
            "cache": lambda batch, length, dtype, tp: models.kv_caches(TINY_LLAMA, batch, length, dtype,
                                                                       kv_heads=TINY_LLAMA.kv_heads // tp),
            "tp_plan": training.tensor_parallel_plan(TINY_LLAMA)}


class PatchClassifier(nn.Module):
    """A ViT-style image classifier: convolutional patches, encoder blocks, a class head and its loss."""

    def __init__(self, width=64, blocks=2, classes=10):
        super().__init__()
        self.patches = nn.Conv2d(3, width, 8, 8)
        self.blocks = nn.ModuleList(nn.TransformerEncoderLayer(width, 4, 2 * width, dropout=0.0, batch_first=True)
                                    for _ in range(blocks))
        self.head = nn.Linear(width, classes)

    def forward(self, images, labels):
        x = self.patches(images).flatten(2).transpose(1, 2)
        for block in self.blocks:
            x = block(x)
        return torch.nn.functional.cross_entropy(self.head(x.mean(1)), labels)


def patch_classifier(batch):
    """Takes no ``seq``: its throughput is in images."""
    return PatchClassifier(), (torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,)))


class OneLinear(nn.Module):
    """One bias-free linear layer as the only block: every byte of its plan has a closed form."""

    def __init__(self, features=64, outputs=32):
        super().__init__()
        self.blocks = nn.ModuleList([nn.Linear(features, outputs, bias=False)])

    def forward(self, x):
        return self.blocks[0](x)


def one_linear(batch, seq):
    return OneLinear(), torch.randn(batch, seq, 64)


class ConvolutionBlock(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.convolution = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norm = nn.BatchNorm2d(channels)

    def forward(self, x):
        return torch.relu(x + self.norm(self.convolution(x)))


class SmallResNet(nn.Module):
    """A ResNet-style classifier: convolutions, BatchNorm (float32 running statistics: buffers), residual blocks."""

    def __init__(self, channels=8, blocks=2, classes=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels))
        self.blocks = nn.ModuleList(ConvolutionBlock(channels) for _ in range(blocks))
        self.head = nn.Linear(channels, classes)

    def forward(self, images, labels):
        x = torch.relu(self.stem(images))
        for block in self.blocks:
            x = block(x)
        return nn.functional.cross_entropy(self.head(x.mean((2, 3))), labels)


def small_resnet(batch):
    return SmallResNet(), (torch.randn(batch, 3, 8, 8), torch.randint(0, 10, (batch,)))


class EncoderDecoder(nn.Module):
    """``nn.Transformer`` translating tokens: ``causal`` says whether it is told its target mask is causal."""

    def __init__(self, causal=True, vocabulary=128, width=32):
        super().__init__()
        self.causal = causal
        self.embedding = nn.Embedding(vocabulary, width)
        self.transformer = nn.Transformer(width, 4, 1, 1, 64, dropout=0.0, batch_first=True)
        self.head = nn.Linear(width, vocabulary)

    def forward(self, source, target):
        mask = nn.Transformer.generate_square_subsequent_mask(target.shape[1], device=target.device)
        decoded = self.transformer(self.embedding(source), self.embedding(target), tgt_mask=mask,
                                   tgt_is_causal=True if self.causal else None)
        return nn.functional.cross_entropy(self.head(decoded).flatten(0, 1), target.flatten())


def encoder_decoder(batch, seq):
    tokens = torch.randint(0, 128, (batch, seq))
    return EncoderDecoder(), (tokens, tokens)


def encoder_decoder_with_an_unlabelled_mask(batch, seq):
    tokens = torch.randint(0, 128, (batch, seq))
    return EncoderDecoder(causal=False), (tokens, tokens)


class FrozenEmbeddingModel(ResidualMLPLanguageModel):
    """A frozen embedding (a parameter that does not train) and buffers: a float32 scale, a non-persistent table."""

    def __init__(self):
        super().__init__()
        self.embedding.weight.requires_grad_(False)
        self.register_buffer("scale", torch.ones(128))
        self.register_buffer("positions", torch.zeros(64, 128), persistent=False)

    def forward(self, tokens):
        x = self.embedding(tokens)
        x = x * self.scale.to(x.dtype) + self.positions[:tokens.shape[1]].to(x.dtype)
        for block in self.blocks:
            x = x + block(x)
        return self.head(x)


def frozen_embedding_model(batch, seq):
    return FrozenEmbeddingModel(), torch.randint(0, 512, (batch, seq))
