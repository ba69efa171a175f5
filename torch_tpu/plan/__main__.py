"""``python -m torch_tpu.plan``: will this model fit on N chips, and how fast will it train or serve?

    python -m torch_tpu.plan --model llama3-70b --chips 256 --mesh fsdp=64,tp=4 --batch 256 --seq 8192
    python -m torch_tpu.plan --model llama3-70b --chips 256 --batch 256 --seq 8192 --sweep
    python -m torch_tpu.plan --model llama3-8b --serve --prompt 2048 --generate 256 --batch 16 --kv-dtype fp8
    python -m torch_tpu.plan --model mypackage.models:build --chips 8 --batch 64 --seq 2048 --json

See docs/planning.md for what is measured and how the prediction is calibrated.
"""

import argparse
import json
import sys
import time

from .. import _C
from .._errors import NoValuesError
from . import models, report


def parser():
    chips = ", ".join(_C.CHIPS)
    p = argparse.ArgumentParser(prog="python -m torch_tpu.plan", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="built-in models: " + ", ".join(models.CONFIGS))
    p.add_argument("--model", default="llama3-8b",
                   help="a built-in model, or module:function returning (nn.Module, example batch) or a dict "
                        "(model, batch, loss, tp_plan; for --serve forward and cache): docs/planning.md")
    p.add_argument("--chip", default="ironwood", help=f"one of {chips}")
    p.add_argument("--chips", type=int, default=1, help="chips in the slice")
    p.add_argument("--topology", default=None, help="torus shape, e.g. 4x8x8 (default: the chip's slice shape)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    training = p.add_argument_group("training")
    training.add_argument("--mesh", default="", help="e.g. fsdp=64,tp=4 (dimensions dp, fsdp, tp; default fsdp=chips)")
    training.add_argument("--batch", type=int, default=None,
                          help="global batch in sequences (training; default 1 per chip) or sequences served")
    training.add_argument("--seq", type=int, default=4096, help="sequence length (training)")
    training.add_argument("--dtype", default="bf16", choices=("bf16", "fp8"), help="matmul precision")
    training.add_argument("--checkpoint", action=argparse.BooleanOptionalAction, default=False,
                          help="activation checkpointing of every layer")
    training.add_argument("--master-dtype", default="fp32", choices=("fp32", "bf16"))
    training.add_argument("--param-dtype", default="bf16", choices=("bf16", "fp32"), help="compute dtype")
    training.add_argument("--reduce-dtype", default="fp32", choices=("fp32", "bf16"), help="gradient reduction")
    training.add_argument("--optimizer", default="adamw", choices=("adamw", "adamw-fused"))
    training.add_argument("--sweep", action="store_true", help="plan the candidate meshes and rank them")
    serving = p.add_argument_group("serving")
    serving.add_argument("--serve", action="store_true", help="plan inference instead of training")
    serving.add_argument("--prompt", type=int, default=2048, help="prompt length, tokens")
    serving.add_argument("--generate", type=int, default=256, help="generated tokens per sequence")
    serving.add_argument("--kv-dtype", default="bf16", choices=("bf16", "fp8"))
    return p


def _training_job(args):
    from .training import TrainingJob, parse_mesh

    return TrainingJob(model=args.model, chip=args.chip, chips=args.chips, mesh=parse_mesh(args.mesh),
                       batch=args.batch or args.chips, seq=args.seq, dtype=args.dtype, checkpoint=args.checkpoint,
                       master_dtype=args.master_dtype, param_dtype=args.param_dtype,
                       reduce_dtype=args.reduce_dtype, optimizer=args.optimizer, topology=args.topology)


def _serving_job(args):
    from .serving import ServingJob

    return ServingJob(model=args.model, chip=args.chip, chips=args.chips, prompt=args.prompt,
                      generate=args.generate, batch=args.batch or 1, kv_dtype=args.kv_dtype,
                      topology=args.topology)


def run(args):
    """The plan(s) ``args`` ask for: one result dict, or a list of them for a sweep."""
    if args.serve:
        from .serving import plan_serving

        return plan_serving(_serving_job(args))
    from .training import plan_training, sweep

    job = _training_job(args)
    return sweep(job) if args.sweep else plan_training(job)


def main(argv=None):
    args = parser().parse_args(argv)
    start = time.perf_counter()
    try:
        result = run(args)
    except (ValueError, NotImplementedError, NoValuesError) as error:
        print("\n".join([f"python -m torch_tpu.plan: {error}", *getattr(error, "__notes__", ())]), file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - start
    if args.json:
        print(json.dumps({"sweep": result} if isinstance(result, list) else result, indent=2))
    else:
        print(report.table(result))
        print(f"\n(planned in {elapsed:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
