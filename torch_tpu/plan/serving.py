"""Planning inference: weights and KV cache per chip, prefill time, decode step time, tokens per second.

``plan_serving(job)`` runs the model abstractly on one representative chip of a simulated slice, as
a serving loop does: bf16 weights (tensor-parallel over the mesh's ``tp`` dimension), a KV cache
preallocated for prompt + generated tokens in the chosen dtype, one prefill of the whole prompt
batch, then decode steps of one token per sequence. A decode step reads every weight and the cache
up to its position, so its time grows linearly with the position: the mean step is the mean of the
first step and the last, and both are run.
"""

import dataclasses

import torch
from torch import nn

from .._abstract import abstract
from . import efficiency, measure, models, user_code
from .training import DTYPES, outermost_blocks, tensor_parallel_plan

KV_DTYPES = {"bf16": torch.bfloat16, "fp8": torch.float8_e4m3fn}


@dataclasses.dataclass(frozen=True)
class ServingJob:
    model: str = "llama3-8b"  # a built-in model (models.CONFIGS) or "module:function"
    chip: str = "ironwood"
    chips: int = 1  # tensor parallel over every chip
    prompt: int = 2048  # prompt length, tokens
    generate: int = 256  # tokens generated per sequence
    batch: int = 1  # sequences served together
    kv_dtype: str = "bf16"  # or "fp8"
    weight_dtype: str = "bf16"
    topology: str = None


def check_job(job):
    if job.kv_dtype not in KV_DTYPES:
        raise ValueError(f"--kv-dtype {job.kv_dtype!r}: choose {' or '.join(KV_DTYPES)}")
    if job.prompt < 1 or job.generate < 1 or job.batch < 1:
        raise ValueError("--prompt, --generate and --batch must be positive")
    config = models.CONFIGS.get(job.model)
    if config is not None and (config.kv_heads % job.chips or config.heads % job.chips):
        raise ValueError(f"{job.model} has {config.kv_heads} key/value heads: tensor parallelism over "
                         f"{job.chips} chips must divide them")
    if config is None and ":" not in job.model:
        raise ValueError(f"unknown model {job.model!r}: a built-in model ({', '.join(models.CONFIGS)}) or "
                         "module:function (docs/planning.md, \"Serving your own model\")")


# --- the program: a model, how it runs one step, and its cache ------------------------------------


@dataclasses.dataclass
class ServingProgram:
    model: nn.Module
    forward: object  # forward(model, tokens, cache, position): one step on tokens (batch, n) from position
    cache: object = None  # cache(batch=, length=, dtype=, tp=) -> the KV cache on tpu; None: the model keeps none
    tp_plan: dict = None  # parallelize_module plan of each block (relative names)

    def make_cache(self, job, length):
        if self.cache is None:
            return None
        with torch.device("tpu"):
            return user_code.call_accepting(self.cache, batch=job.batch, length=length,
                                            dtype=KV_DTYPES[job.kv_dtype], tp=job.chips)

    def tokens(self, cache, batch, position, length):
        """What one step reads: a prefill's (``position`` 0, ``length`` prompt tokens) or a decode step's
        (one new token at ``position``); a model without a cache reads its whole sequence so far. Zeros,
        so that the same step can run with values."""
        return torch.zeros(batch, length if cache is not None else position + length, dtype=torch.long, device="tpu")

    def step(self, cache, tokens, position):
        return self.forward(self.model, tokens, cache, position if cache is not None else 0)


def _decoder_step(model, tokens, caches, position):
    return model(tokens, caches=caches, position=position)


def _builtin_program(job, length):
    config = models.CONFIGS[job.model]

    def cache(batch, length, dtype, tp):
        return models.kv_caches(config, batch, length, dtype, kv_heads=config.kv_heads // tp)

    return ServingProgram(models.build(job.model, length), _decoder_step, cache, tensor_parallel_plan(config))


def _whole_sequence(model, tokens, cache, position):
    return model(tokens)


def _user_program(job, length):
    """``module:function`` called with ``batch=`` and ``seq=`` (prompt + generated tokens) returns a dict
    with ``model`` and optionally ``forward``, ``cache`` and ``tp_plan`` (see ServingProgram), or just
    the model (then each decode step runs ``model(tokens)`` on the whole sequence so far)."""
    made, _ = user_code.call_model_function(job.model, batch=job.batch, seq=length)
    made = made if isinstance(made, dict) else {"model": made[0] if isinstance(made, tuple) else made}
    if "cache" in made and "forward" not in made:
        raise ValueError(f"{job.model} returns a 'cache' but no 'forward(model, tokens, cache, position)' that uses it")
    return ServingProgram(made["model"], made.get("forward", _whole_sequence), made.get("cache"), made.get("tp_plan"))


def build_program(job, length):
    with torch.device("meta"):
        program = (_builtin_program if job.model in models.CONFIGS else _user_program)(job, length)
        program.model.to(DTYPES[job.weight_dtype])
    return program


def _shared_parameters(model):
    """Groups of (module, name) that share one parameter (tied embeddings, say)."""
    groups = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        module_name, _, attribute = name.rpartition(".")
        groups.setdefault(id(parameter), []).append((model.get_submodule(module_name), attribute))
    return [group for group in groups.values() if len(group) > 1]


def materialize(model):
    """``to_empty(device="tpu")``, keeping shared parameters shared (``to_empty`` gives each use its own)."""
    shared = _shared_parameters(model)
    model.to_empty(device="tpu")
    for (first, first_name), *others in shared:
        for module, name in others:
            setattr(module, name, getattr(first, first_name))


def plan_serving(job):
    """Plan ``job`` (a ServingJob): the JSON-ready dict ``python -m torch_tpu.plan --serve --json`` prints."""
    check_job(job)
    spec = measure.use_chip(job.chip)
    from ..distributed import simulate
    from torch.distributed.device_mesh import init_device_mesh

    length = job.prompt + job.generate
    with measure.collecting_the_plans_garbage_only() as baseline, measure.unlimited_hbm() as capacity, \
            simulate(job.chips, job.topology), abstract(), torch.no_grad(), \
            user_code.running(job.model, {"tp": job.chips}):
        mesh = init_device_mesh("tpu", (job.chips,), mesh_dim_names=("tp",))
        program = build_program(job, length)
        model = program.model
        if job.chips > 1:
            from torch.distributed.tensor.parallel import parallelize_module

            if program.tp_plan is None:
                raise ValueError(f"{job.model} has no tensor-parallel plan: serve it on one chip, or return "
                                 "'tp_plan' from the model function")
            for container, index in outermost_blocks(model):
                parallelize_module(container[index], mesh["tp"], program.tp_plan)
        materialize(model)
        weight_bytes = measure.tensor_bytes(model.parameters())
        before = measure.allocated()
        cache = program.make_cache(job, length)
        cache_bytes = measure.allocated() - before
        prompt = program.tokens(cache, job.batch, 0, job.prompt)
        measure.reset_peak()
        with measure.Stopwatch() as prefill:
            program.step(cache, prompt, 0)
        decode_steps = []
        for position in sorted({job.prompt, length - 1}):
            token = program.tokens(cache, job.batch, position, 1)
            with measure.Stopwatch() as step:
                program.step(cache, token, position)
            decode_steps.append(step)
            del token
        peak = measure.peak() - baseline
        parameter_count = sum(p.numel() for p in model.parameters())
        del model, cache, program, prompt, mesh
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
