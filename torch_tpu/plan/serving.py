"""Planning inference: weights and KV cache per chip, prefill time, decode step time, tokens per second.

``plan_serving(job)`` runs the model abstractly on one representative chip of a simulated slice, as
a serving loop does: bf16 weights (tensor-parallel over the mesh's ``tp`` dimension), a KV cache
preallocated for prompt + generated tokens in the chosen dtype, one prefill of the whole prompt
batch, then decode steps of one token per sequence. A decode step reads every weight and the cache
up to its position, so its time grows linearly with the position: the mean step is the mean of the
first step and the last, and both are run.
"""

import dataclasses
import gc

import torch

from .._abstract import abstract
from . import efficiency, measure, models
from .training import DTYPES, tensor_parallel_plan

KV_DTYPES = {"bf16": torch.bfloat16, "fp8": torch.float8_e4m3fn}


@dataclasses.dataclass(frozen=True)
class ServingJob:
    model: str = "llama3-8b"  # a built-in model
    chip: str = "ironwood"
    chips: int = 1  # tensor parallel over every chip
    prompt: int = 2048  # prompt length, tokens
    generate: int = 256  # tokens generated per sequence
    batch: int = 1  # sequences served together
    kv_dtype: str = "bf16"  # or "fp8"
    weight_dtype: str = "bf16"
    topology: str = None


def check_job(job):
    if job.model not in models.CONFIGS:
        raise ValueError(f"--serve plans the built-in models ({', '.join(models.CONFIGS)}), not {job.model!r}")
    if job.kv_dtype not in KV_DTYPES:
        raise ValueError(f"--kv-dtype {job.kv_dtype!r}: choose {' or '.join(KV_DTYPES)}")
    config = models.CONFIGS[job.model]
    if config.kv_heads % job.chips or config.heads % job.chips:
        raise ValueError(f"{job.model} has {config.kv_heads} key/value heads: tensor parallelism over "
                         f"{job.chips} chips must divide them")
    if job.prompt < 1 or job.generate < 1 or job.batch < 1:
        raise ValueError("--prompt, --generate and --batch must be positive")


def plan_serving(job):
    """Plan ``job`` (a ServingJob): the JSON-ready dict ``python -m torch_tpu.plan --serve --json`` prints."""
    check_job(job)
    spec = measure.use_chip(job.chip)
    config = models.CONFIGS[job.model]
    from ..distributed import simulate
    from torch.distributed.device_mesh import init_device_mesh

    length = job.prompt + job.generate
    with measure.unlimited_hbm() as capacity, simulate(job.chips, job.topology), abstract(), torch.no_grad():
        mesh = init_device_mesh("tpu", (job.chips,), mesh_dim_names=("tp",))
        with torch.device("meta"):
            model = models.build(job.model, length).to(DTYPES[job.weight_dtype])
        if job.chips > 1:
            from torch.distributed.tensor.parallel import parallelize_module

            for layer in model.layers:
                parallelize_module(layer, mesh["tp"], tensor_parallel_plan(config))
        model.to_empty(device="tpu")
        model.tie_weights()
        weight_bytes = measure.tensor_bytes(model.parameters())
        before = measure.allocated()
        caches = models.kv_caches(config, job.batch, length, KV_DTYPES[job.kv_dtype], "tpu",
                                  kv_heads=config.kv_heads // job.chips)
        cache_bytes = measure.allocated() - before
        measure.reset_peak()
        with measure.Stopwatch() as prefill:
            model(torch.empty(job.batch, job.prompt, dtype=torch.long, device="tpu"), caches=caches, position=0)
        decode_steps = []
        for position in sorted({job.prompt, length - 1}):
            with measure.Stopwatch() as step:
                model(torch.empty(job.batch, 1, dtype=torch.long, device="tpu"), caches=caches, position=position)
            decode_steps.append(step)
        peak = measure.peak()
        parameter_count = sum(p.numel() for p in model.parameters())
        del model, caches
        gc.collect()  # modules hold cycles: free their HBM before the next plan
    return _serving_result(job, spec, parameter_count, weight_bytes, cache_bytes, peak, capacity, prefill,
                           decode_steps)


def _serving_result(job, spec, parameter_count, weight_bytes, cache_bytes, peak, capacity, prefill, decode_steps):
    decode = measure.Phase(**{field.name: sum(getattr(s, field.name) for s in decode_steps) / len(decode_steps)
                              for field in dataclasses.fields(measure.Phase)})
    prefill_s = efficiency.predicted_seconds(spec.name, prefill.seconds)
    decode_s = efficiency.predicted_seconds(spec.name, decode.seconds)
    total_s = prefill_s + job.generate * decode_s
    return {
        "mode": "serving", "model": job.model, "chip": spec.name, "chips": job.chips,
        "mesh": {"tp": job.chips}, "batch": job.batch, "prompt": job.prompt, "generate": job.generate,
        "kv_dtype": job.kv_dtype, "weight_dtype": job.weight_dtype,
        "params": parameter_count,
        "hbm_per_chip": {"weights": weight_bytes, "kv_cache": cache_bytes, "peak": peak, "capacity": capacity,
                         "fits": peak <= capacity},
        "prefill_s": prefill_s, "prefill_roofline_s": prefill.seconds, "prefill_bound": prefill.bound,
        "decode_step_s": decode_s, "decode_step_roofline_s": decode.seconds, "decode_bound": decode.bound,
        "prefill": dataclasses.asdict(prefill), "decode_step": dataclasses.asdict(decode),
        "time_to_first_token_s": prefill_s,
        "tokens_per_s": job.batch * job.generate / total_s,
        "decode_tokens_per_s": job.batch / decode_s,
        "efficiency": efficiency.EFFICIENCY[spec.name],
    }
