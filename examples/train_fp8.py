"""FP8 training on the emulated Ironwood: the same GPT trained in bf16 and in FP8.

Both runs start from the same weights and see the same batches. The FP8 run converts every
linear layer with ``torch_tpu.fp8.convert_to_float8`` (E4M3 weights and activations, E5M2
gradients, dynamic scaling); everything else stays bf16. The printed gap is what FP8 costs in
loss on this model.

Run: python examples/train_fp8.py --steps 200 [--recipe rowwise]
"""

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from models import GPT  # noqa: E402

from torch_tpu.fp8 import RECIPES, convert_to_float8  # noqa: E402

VOCAB, CONTEXT, WIDTH, HEADS, LAYERS = 128, 32, 64, 4, 2


def synthetic_corpus(sequences, seed=0):
    """Token sequences from a fixed random Markov chain with two likely successors per token.

    A model that learns the chain reaches a loss near ln 2; the bf16/FP8 gap is measured there.
    """
    generator = torch.Generator().manual_seed(seed)
    successors = torch.randint(0, VOCAB, (VOCAB, 2), generator=generator)
    tokens = torch.empty(sequences, CONTEXT + 1, dtype=torch.long)
    tokens[:, 0] = torch.randint(0, VOCAB, (sequences,), generator=generator)
    for position in range(1, CONTEXT + 1):
        choice = torch.randint(0, 2, (sequences,), generator=generator)
        tokens[:, position] = successors[tokens[:, position - 1], choice]
    return tokens


def make_model(fp8, recipe, seed=0):
    torch.manual_seed(seed)
    model = GPT(vocabulary=VOCAB, context=CONTEXT, width=WIDTH, heads=HEADS, layers=LAYERS).to("tpu", torch.bfloat16)
    return convert_to_float8(model, recipe) if fp8 else model


def train(model, corpus, steps, batch, lr=3e-3):
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    losses = []
    for step in range(steps):
        rows = torch.arange(step * batch, (step + 1) * batch) % len(corpus)
        tokens = corpus[rows].to("tpu")
        loss = model(tokens[:, :-1], tokens[:, 1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def final_loss(losses, window=10):
    """The mean over the last steps: one step's loss is too noisy to compare runs by."""
    tail = losses[-window:]
    return sum(tail) / len(tail)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--recipe", choices=RECIPES, default="tensorwise")
    args = parser.parse_args(argv)

    corpus = synthetic_corpus(sequences=max(args.steps * args.batch, args.batch))
    results = {}
    for label, fp8 in (("bf16", False), ("fp8", True)):
        losses = train(make_model(fp8, args.recipe), corpus, args.steps, args.batch)
        results[label] = final_loss(losses)
        print(f"{label:>4}: first loss {losses[0]:.4f}  final loss {results[label]:.4f} "
              f"(mean of last {min(10, len(losses))} of {args.steps} steps)")
    gap = results["fp8"] - results["bf16"]
    print(f"FP8 ({args.recipe}) - bf16 final loss gap: {gap:+.4f} ({gap / results['bf16']:+.2%})")
    return results


if __name__ == "__main__":
    main()
