"""A small model zoo at tiny widths: the architectures people train, for benchmarks/zoo.py and tests/test_zoo.py.

torchvision cannot be installed beside torch 2.13 here, so each family is written out in a few lines, keeping
the layers that make it what it is (and that stress different kernels): ResNet (conv, batch norm, max pool,
adaptive average pool), ConvNeXt (7x7 depthwise conv, channels-last layer norm, GELU, layer scale), ViT
(patch embedding, class token, nn.TransformerEncoder), MobileNetV2 (inverted residuals, ReLU6), MobileNetV3
(hard-swish, squeeze-and-excitation), EfficientNet (SiLU, squeeze-and-excitation, a 7x7 AvgPool2d to 1x1),
Swin (shifted-window attention with a relative position bias, patch merging), nn.Transformer, LSTM and GRU.

``ZOO[name]`` is ``(make_model, make_batch)``: ``make_model()`` builds the model (dropout off, so that two
devices compute the same thing) and ``make_batch(generator)`` returns ``(inputs, class_targets)``; every
model returns logits for ``torch.nn.functional.cross_entropy``.
"""

import torch
import torch.nn.functional as F
from torch import nn

CLASSES = 10
IMAGE = 28
VOCABULARY = 32
SEQUENCE = 16
BATCH = 4


def conv_norm(in_channels, out_channels, kernel_size=3, stride=1, groups=1, activation=nn.ReLU):
    layers = [nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, groups=groups, bias=False),
              nn.BatchNorm2d(out_channels)]
    return nn.Sequential(*layers, activation()) if activation else nn.Sequential(*layers)


class BasicBlock(nn.Module):
    def __init__(self, in_channels, out_channels, stride):
        super().__init__()
        self.body = nn.Sequential(conv_norm(in_channels, out_channels, stride=stride),
                                  conv_norm(out_channels, out_channels, activation=None))
        self.shortcut = (nn.Identity() if stride == 1 and in_channels == out_channels
                         else conv_norm(in_channels, out_channels, 1, stride, activation=None))

    def forward(self, x):
        return F.relu(self.body(x) + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, width=8):
        super().__init__()
        self.stem = nn.Sequential(conv_norm(3, width), nn.MaxPool2d(3, stride=2, padding=1))
        self.stages = nn.Sequential(BasicBlock(width, width, 1), BasicBlock(width, 2 * width, 2))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(2 * width, CLASSES)

    def forward(self, x):
        return self.head(self.pool(self.stages(self.stem(x))).flatten(1))


class ChannelsLastNorm(nn.LayerNorm):
    """Layer norm over the channels of an NCHW map, as ConvNeXt's downsampling layers use it."""

    def forward(self, x):
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.depthwise = nn.Conv2d(width, width, 7, padding=3, groups=width)
        self.norm = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))
        self.scale = nn.Parameter(torch.full((width,), 0.1))

    def forward(self, x):
        y = self.mlp(self.norm(self.depthwise(x).permute(0, 2, 3, 1)))
        return x + (self.scale * y).permute(0, 3, 1, 2)


class ConvNeXt(nn.Module):
    def __init__(self, width=8):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 4, stride=4), ChannelsLastNorm(width))
        self.stages = nn.Sequential(ConvNeXtBlock(width), ChannelsLastNorm(width),
                                    nn.Conv2d(width, 2 * width, 2, stride=2), ConvNeXtBlock(2 * width))
        self.norm = nn.LayerNorm(2 * width)
        self.head = nn.Linear(2 * width, CLASSES)

    def forward(self, x):
        return self.head(self.norm(self.stages(self.stem(x)).mean((-2, -1))))


class ViT(nn.Module):
    def __init__(self, width=32, patch=7, layers=2, heads=4):
        super().__init__()
        self.patches = nn.Conv2d(3, width, patch, stride=patch)
        self.class_token = nn.Parameter(torch.zeros(1, 1, width))
        self.position = nn.Parameter(torch.randn(1, (IMAGE // patch) ** 2 + 1, width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, heads, 2 * width, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, CLASSES)

    def forward(self, x):
        tokens = self.patches(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.class_token.expand(len(x), -1, -1), tokens], 1) + self.position
        return self.head(self.norm(self.encoder(tokens)[:, 0]))


class SqueezeExcite(nn.Module):
    def __init__(self, channels, squeezed, gate=nn.Sigmoid, activation=nn.ReLU):
        super().__init__()
        self.scale = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, squeezed, 1), activation(),
                                   nn.Conv2d(squeezed, channels, 1), gate())

    def forward(self, x):
        return x * self.scale(x)


class InvertedResidual(nn.Module):
    """MobileNetV2's block; with ``squeeze`` and another activation it is MobileNetV3's and EfficientNet's MBConv."""

    def __init__(self, in_channels, out_channels, stride, expansion, activation=nn.ReLU6, squeeze=None,
                 kernel_size=3):
        super().__init__()
        hidden = in_channels * expansion
        layers = [conv_norm(in_channels, hidden, 1, activation=activation),
                  conv_norm(hidden, hidden, kernel_size, stride, groups=hidden, activation=activation)]
        if squeeze:
            layers.append(squeeze(hidden))
        layers.append(conv_norm(hidden, out_channels, 1, activation=None))
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x):
        return x + self.body(x) if self.residual else self.body(x)


class MobileNetV2(nn.Module):
    def __init__(self, width=8):
        super().__init__()
        self.features = nn.Sequential(
            conv_norm(3, width, stride=2, activation=nn.ReLU6),
            InvertedResidual(width, width, 1, 1), InvertedResidual(width, 2 * width, 2, 4),
            InvertedResidual(2 * width, 2 * width, 1, 4), conv_norm(2 * width, 4 * width, 1, activation=nn.ReLU6))
        self.head = nn.Linear(4 * width, CLASSES)

    def forward(self, x):
        return self.head(F.adaptive_avg_pool2d(self.features(x), 1).flatten(1))


class MobileNetV3(nn.Module):
    def __init__(self, width=8):
        super().__init__()

        def squeeze(channels):
            return SqueezeExcite(channels, channels // 4, gate=nn.Hardsigmoid)

        self.features = nn.Sequential(
            conv_norm(3, width, stride=2, activation=nn.Hardswish),
            InvertedResidual(width, width, 1, 1, nn.ReLU, squeeze),
            InvertedResidual(width, 2 * width, 2, 4, nn.Hardswish, squeeze, kernel_size=5),
            conv_norm(2 * width, 4 * width, 1, activation=nn.Hardswish))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * width, 32), nn.Hardswish(),
                                  nn.Linear(32, CLASSES))

    def forward(self, x):
        return self.head(self.features(x))


class EfficientNet(nn.Module):
    def __init__(self, width=8):
        super().__init__()

        def squeeze(channels):
            return SqueezeExcite(channels, max(1, channels // 8), activation=nn.SiLU)

        self.features = nn.Sequential(
            conv_norm(3, width, stride=2, activation=nn.SiLU),
            InvertedResidual(width, width, 1, 1, nn.SiLU, squeeze),
            InvertedResidual(width, 2 * width, 2, 6, nn.SiLU, squeeze, kernel_size=5),
            conv_norm(2 * width, 4 * width, 1, activation=nn.SiLU))
        self.pool = nn.AvgPool2d(IMAGE // 4)  # the whole 7x7 map: a global pool written as a fixed window
        self.head = nn.Linear(4 * width, CLASSES)

    def forward(self, x):
        return self.head(self.pool(self.features(x)).flatten(1))


def window_partition(x, size):
    """(B, H, W, C) -> (B * windows, size * size, C)."""
    b, h, w, c = x.shape
    x = x.view(b, h // size, size, w // size, size, c).transpose(2, 3)
    return x.reshape(-1, size * size, c)


def window_merge(windows, size, b, h, w):
    x = windows.view(b, h // size, w // size, size, size, -1).transpose(2, 3)
    return x.reshape(b, h, w, -1)


def relative_position_index(size):
    """For each pair of positions in a window, the index of their offset in a (2 size - 1)^2 bias table."""
    coordinates = torch.stack(torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")).flatten(1)
    offsets = (coordinates[:, :, None] - coordinates[:, None, :]) + size - 1
    return offsets[0] * (2 * size - 1) + offsets[1]


def shifted_window_mask(h, w, size, shift):
    """-inf where two positions of a shifted window came from different regions of the map."""
    regions = torch.zeros(h, w)
    bands = (slice(0, -size), slice(-size, -shift), slice(-shift, None))
    for label, (rows, columns) in enumerate((r, c) for r in bands for c in bands):
        regions[rows, columns] = label
    labels = window_partition(regions[None, :, :, None], size)[..., 0]
    return (labels[:, None, :] != labels[:, :, None]).float() * -1e9


class SwinBlock(nn.Module):
    def __init__(self, width, heads, size, shift, resolution):
        super().__init__()
        self.heads, self.size, self.shift = heads, size, shift
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.projection = nn.Linear(width, width)
        self.bias_table = nn.Parameter(torch.randn((2 * size - 1) ** 2, heads) * 0.02)
        self.register_buffer("bias_index", relative_position_index(size), persistent=False)
        mask = shifted_window_mask(resolution, resolution, size, shift) if shift else None
        self.register_buffer("mask", mask, persistent=False)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))

    def attention(self, windows):
        n, tokens, width = windows.shape
        q, k, v = self.qkv(windows).view(n, tokens, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
        scores = scores + self.bias_table[self.bias_index].permute(2, 0, 1)
        if self.mask is not None:
            scores = (scores.view(-1, len(self.mask), self.heads, tokens, tokens)
                      + self.mask[:, None]).view(n, self.heads, tokens, tokens)
        return self.projection((scores.softmax(-1) @ v).transpose(1, 2).reshape(n, tokens, width))

    def forward(self, x):
        b, h, w, c = x.shape
        y = self.norm1(x)
        if self.shift:
            y = torch.roll(y, (-self.shift, -self.shift), (1, 2))
        y = window_merge(self.attention(window_partition(y, self.size)), self.size, b, h, w)
        if self.shift:
            y = torch.roll(y, (self.shift, self.shift), (1, 2))
        x = x + y
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.norm = nn.LayerNorm(4 * width)
        self.reduction = nn.Linear(4 * width, 2 * width, bias=False)

    def forward(self, x):
        x = torch.cat([x[:, i::2, j::2] for j in (0, 1) for i in (0, 1)], -1)
        return self.reduction(self.norm(x))


class Swin(nn.Module):
    def __init__(self, width=16, heads=2, size=4):
        super().__init__()
        resolution = IMAGE // 2  # patches a side, cropped below to a multiple of the shifted window
        self.patches = nn.Conv2d(3, width, 2, stride=2)
        self.crop = resolution - resolution % (2 * size)
        self.stage1 = nn.Sequential(SwinBlock(width, heads, size, 0, self.crop),
                                    SwinBlock(width, heads, size, size // 2, self.crop))
        self.merge = PatchMerging(width)
        self.stage2 = SwinBlock(2 * width, 2 * heads, size, 0, self.crop // 2)
        self.norm = nn.LayerNorm(2 * width)
        self.head = nn.Linear(2 * width, CLASSES)

    def forward(self, x):
        x = self.patches(x).permute(0, 2, 3, 1)[:, :self.crop, :self.crop]
        x = self.stage2(self.merge(self.stage1(x)))
        return self.head(self.norm(x).mean((1, 2)))


class Seq2SeqTransformer(nn.Module):
    """nn.Transformer over token sequences: the source is the sequence, the target its shifted copy."""

    def __init__(self, width=32, heads=4, layers=2):
        super().__init__()
        self.embedding = nn.Embedding(VOCABULARY, width)
        self.transformer = nn.Transformer(width, heads, layers, layers, 2 * width, dropout=0.0, batch_first=True)
        self.head = nn.Linear(width, CLASSES)

    def forward(self, tokens):
        source, target = self.embedding(tokens), self.embedding(tokens.roll(1, 1))
        mask = nn.Transformer.generate_square_subsequent_mask(tokens.shape[1], device=tokens.device)
        return self.head(self.transformer(source, target, tgt_mask=mask, tgt_is_causal=True)[:, -1])


class Recurrent(nn.Module):
    """Embedding -> a two-layer recurrent network -> a classifier on the last step."""

    def __init__(self, cell, width=32, layers=2):
        super().__init__()
        self.embedding = nn.Embedding(VOCABULARY, width)
        self.rnn = cell(width, width, layers, batch_first=True)
        self.head = nn.Linear(width, CLASSES)

    def forward(self, tokens):
        output, _ = self.rnn(self.embedding(tokens))
        return self.head(output[:, -1])


def images(generator):
    return torch.randn(BATCH, 3, IMAGE, IMAGE, generator=generator), torch.randint(0, CLASSES, (BATCH,),
                                                                                   generator=generator)


def sequences(generator):
    return (torch.randint(0, VOCABULARY, (BATCH, SEQUENCE), generator=generator),
            torch.randint(0, CLASSES, (BATCH,), generator=generator))


ZOO = {
    "ResNet": (ResNet, images),
    "ConvNeXt": (ConvNeXt, images),
    "ViT": (ViT, images),
    "MobileNetV2": (MobileNetV2, images),
    "MobileNetV3": (MobileNetV3, images),
    "EfficientNet": (EfficientNet, images),
    "Swin": (Swin, images),
    "nn.Transformer": (Seq2SeqTransformer, sequences),
    "LSTM": (lambda: Recurrent(nn.LSTM), sequences),
    "GRU": (lambda: Recurrent(nn.GRU), sequences),
}
