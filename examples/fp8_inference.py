"""FP8 inference: run a bf16 GPT and its FP8 conversion on the same tokens and compare logits.

The FP8 model shares nothing with the bf16 one but its weight values: every linear layer
casts weights and activations to E4M3 on the fly (per tensor or per row) and multiplies on the
MXU with float32 accumulation. The report says how far the logits move and how often the
most likely next token stays the same.

Run: python examples/fp8_inference.py [--recipe rowwise] [--train-steps 50]
"""

import argparse
import copy
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from train_fp8 import CONTEXT, make_model, synthetic_corpus, train  # noqa: E402

from torch_tpu.fp8 import RECIPES, convert_to_float8  # noqa: E402


def compare_logits(reference, candidate):
    reference, candidate = reference.float(), candidate.float()
    difference = (candidate - reference).abs()
    return {
        "max_abs_logit_difference": difference.max().item(),
        "relative_logit_error": (difference.norm() / reference.norm()).item(),
        "top1_agreement": (candidate.argmax(-1) == reference.argmax(-1)).float().mean().item(),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", choices=RECIPES, default="rowwise")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--train-steps", type=int, default=0, help="bf16 training steps before comparing")
    args = parser.parse_args(argv)

    corpus = synthetic_corpus(sequences=max(args.train_steps, 1) * args.batch)
    model = make_model(fp8=False, recipe=args.recipe)
    if args.train_steps:
        train(model, corpus, args.train_steps, args.batch)
    fp8_model = convert_to_float8(copy.deepcopy(model), args.recipe)

    tokens = corpus[: args.batch, :CONTEXT].to("tpu")
    with torch.no_grad():
        report = compare_logits(model(tokens), fp8_model(tokens))
    print(f"FP8 ({args.recipe}) vs bf16 logits on {args.batch}x{CONTEXT} tokens: "
          f"max |difference| {report['max_abs_logit_difference']:.4f}, "
          f"relative error {report['relative_logit_error']:.2%}, "
          f"top-1 agreement {report['top1_agreement']:.2%}")
    return report


if __name__ == "__main__":
    main()
