"""Planning a training step at full scale: HBM per chip, step time, MFU, from the program itself.

``plan_training(job)`` runs one real training step of the model abstractly (``torch_tpu.abstract``)
on one representative chip of a simulated world (``torch_tpu.simulate``): the model is built on the
meta device, parallelized with PyTorch's own ``parallelize_module`` (tensor parallelism) and
``fully_shard`` (FSDP2, with the FSDP2 mixed-precision recipe: fp32 master parameters, bf16 compute,
fp32 gradient reduction), moved to tpu with ``to_empty``, and trained one step with AdamW. Every
allocation is counted to the byte, every kernel and collective charged by the cost model.

The step is the second one: a first optimizer step on zero gradients creates AdamW's state, as the
first real step would, so that the measured step sees the steady-state memory.
"""

import dataclasses
from collections.abc import Mapping

import torch
from torch import nn


from .. import fp8 as float8
from .._abstract import abstract
from . import efficiency, measure, models, user_code

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32, "fp16": torch.float16}
MESH_DIMENSIONS = ("dp", "fsdp", "tp")  # replicated data parallel, sharded data parallel, tensor parallel


@dataclasses.dataclass(frozen=True)
class TrainingJob:
    """What to plan: a model, a slice of chips and how the step is sharded and computed."""

    model: str = "llama3-8b"  # a built-in model (models.CONFIGS) or "module:function"
    chip: str = "ironwood"
    chips: int = 1
    mesh: tuple = ()  # ((dimension, size), ...), e.g. (("fsdp", 64), ("tp", 4)); () is FSDP over every chip
    batch: int = 8  # global batch, in sequences
    seq: int = 4096
    dtype: str = "bf16"  # matmul precision: "bf16", or "fp8" (the FP8 training recipe, torch_tpu.fp8)
    checkpoint: bool = False  # activation checkpointing of every layer
    master_dtype: str = "fp32"
    param_dtype: str = "bf16"  # the dtype parameters are gathered in for compute
    reduce_dtype: str = "fp32"  # the dtype gradients are reduced in
    optimizer: str = "adamw"  # or "adamw-fused"
    topology: str = None

    @property
    def mesh_shape(self):
        shape = dict(self.mesh) if self.mesh else {"fsdp": self.chips}
        if "dp" not in shape and "fsdp" not in shape:  # tensor parallelism alone: FSDP2's recipe on one rank
            shape = {"fsdp": 1, **shape}
        return shape

    @property
    def data_parallel(self):
        shape = self.mesh_shape
        return shape.get("dp", 1) * shape.get("fsdp", 1)


def parse_mesh(text):
    """"fsdp=64,tp=4" -> (("fsdp", 64), ("tp", 4))."""
    if not text:
        return ()
    mesh = []
    for part in text.split(","):
        name, _, size = part.partition("=")
        name = name.strip()
        if name not in MESH_DIMENSIONS or not size.strip().isdigit() or int(size) < 1:
            raise ValueError(f"--mesh {text!r}: each part is one of {', '.join(MESH_DIMENSIONS)} = a positive size")
        mesh.append((name, int(size)))
    return tuple(mesh)


def check_job(job):
    shape = job.mesh_shape
    product = 1
    for size in shape.values():
        product *= size
    if product != job.chips:
        raise ValueError(f"the mesh {format_mesh(shape)} has {product} chips, not --chips {job.chips}")
    if job.batch % job.data_parallel:
        raise ValueError(f"--batch {job.batch} does not split over {job.data_parallel} data-parallel ranks")
    if job.dtype not in ("bf16", "fp8"):
        raise ValueError(f"--dtype {job.dtype!r}: choose bf16 or fp8")
    if job.dtype == "fp8" and shape.get("tp", 1) > 1:
        raise ValueError("--dtype fp8 with tensor parallelism is not supported: torch_tpu.fp8's Float8Linear takes "
                         "plain weights, not tensor parallelism's DTensors; plan fp8 with dp/fsdp meshes, or tp in bf16")


def format_mesh(shape):
    return ",".join(f"{name}={size}" for name, size in shape.items())


# --- the program: the user's model, its batch and its loss ---------------------------------------


@dataclasses.dataclass
class Program:
    model: nn.Module
    batch: tuple  # positional arguments of ``loss``, on the meta device
    loss: object  # loss(model, *batch, **keywords) -> a scalar tensor
    tp_plan: dict = None  # parallelize_module plan of each layer (relative names), None if the model has none
    head_plan: dict = None  # plan of the layers outside the blocks
    description: str = ""
    seq: int = None  # the batch's sequence length; None for a model function that takes no ``seq`` (a ViT's)
    keywords: dict = dataclasses.field(default_factory=dict)  # keyword arguments of ``loss``: a batch given as a dict

    @property
    def layers(self):
        return outermost_blocks(self.model)


def outermost_blocks(model):
    """The repeated blocks, FSDP's, activation checkpointing's and tensor parallelism's units: the elements
    of the outermost ModuleLists, as (list, index) pairs."""
    lists = [name for name, module in model.named_modules() if isinstance(module, nn.ModuleList)]
    outermost = [name for name in lists if not any(name.startswith(f"{other}.") for other in lists)]
    return [(model.get_submodule(name), index) for name in outermost for index in range(len(model.get_submodule(name)))]


def _decoder_loss(model, tokens, targets):
    return model(tokens, targets)


def tensor_parallel_plan(config):
    """Megatron's layout for a decoder layer: q, k, v and the MLP's first matmuls split by columns (heads,
    FFN units), the output projections by rows, so each layer needs one all-reduce per block."""
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel

    plan = {"attention.q": ColwiseParallel(), "attention.k": ColwiseParallel(), "attention.v": ColwiseParallel(),
            "attention.o": RowwiseParallel(), "mlp.up": ColwiseParallel(), "mlp.down": RowwiseParallel()}
    if config.family == "llama":
        plan["mlp.gate"] = ColwiseParallel()
    return plan


def head_parallel_plan(config):
    """An untied output head split by vocabulary columns, its logits gathered for the loss."""
    from torch.distributed.tensor import Replicate
    from torch.distributed.tensor.parallel import ColwiseParallel

    return {} if config.tie_embeddings else {"head": ColwiseParallel(output_layouts=Replicate())}


def _builtin_program(job, local_batch):
    config = models.CONFIGS[job.model]
    model = models.build(job.model, job.seq)
    tokens = torch.empty(local_batch, job.seq, dtype=torch.long)
    return Program(model, (tokens, tokens), _decoder_loss, tensor_parallel_plan(config), head_parallel_plan(config),
                   models.describe(config), job.seq)


def _user_program(job, local_batch):
    """``module:function`` returns ``(model, batch)`` or a dict with ``model``, ``batch`` (a tuple of positional
    arguments, or a dict of keyword arguments) and optionally ``loss`` (loss(model, *batch) or
    loss(model, **batch)), ``tp_plan`` (a parallelize_module plan for each block). It is called
    on the meta device, with ``batch=`` (sequences per data-parallel rank) and ``seq=`` when it takes them.
    """
    made, passed = user_code.call_model_function(job.model, batch=local_batch, seq=job.seq)
    if not isinstance(made, dict):
        model, batch = made
        made = {"model": model, "batch": batch}
    batch = made["batch"]
    keywords = dict(batch) if isinstance(batch, Mapping) else {}  # Hugging Face's model(**batch); {} is model()
    batch = () if isinstance(batch, Mapping) else batch if isinstance(batch, tuple) else (batch,)
    return Program(made["model"], batch, made.get("loss", _output_as_loss), made.get("tp_plan"),
                   made.get("head_plan"), f"{job.model}: {type(made['model']).__name__}",
                   job.seq if "seq" in passed else None, keywords)


def _output_as_loss(model, *batch, **keywords):
    """The model's output is the loss when it is a scalar; otherwise its sum stands in for one. Of a dict of
    outputs (Hugging Face's ModelOutput is one) or a dataclass of them, the "loss" entry, else the first that is
    not None; of a tuple or list the first. An empty one (or one of Nones) is refused as it is."""
    output = model(*batch, **keywords)
    if dataclasses.is_dataclass(output) and not isinstance(output, type):  # a ModelOutput-like dataclass
        output = {field.name: getattr(output, field.name) for field in dataclasses.fields(output)}
    if isinstance(output, Mapping):
        present = {name: value for name, value in output.items() if value is not None}
        output = present["loss"] if "loss" in present else next(iter(present.values()), output)
    elif isinstance(output, (tuple, list)) and output:
        output = output[0]
    if not isinstance(output, torch.Tensor):
        raise TypeError(f"the model's output is a {type(output).__name__}, not a tensor to take as the loss: "
                        "return 'loss' (loss(model, *batch) -> a tensor) from the model function")
    return output if output.dim() == 0 else output.float().sum()


def build_program(job):
    local_batch = job.batch // job.data_parallel
    with torch.device("meta"):
        if job.model in models.CONFIGS:
            return _builtin_program(job, local_batch)
        if ":" in job.model:
            return _user_program(job, local_batch)
    raise ValueError(f"unknown model {job.model!r}: a built-in model ({', '.join(models.CONFIGS)}) or "
                     "module:function returning (nn.Module, example batch)")


# --- parallelizing it as the FSDP2 x TP recipe does ------------------------------------------------


def _device_mesh(job):
    from torch.distributed.device_mesh import init_device_mesh

    shape = job.mesh_shape
    return init_device_mesh("tpu", tuple(shape.values()), mesh_dim_names=tuple(shape))


def parallelize(program, job, mesh):
    """Tensor parallelism, then FP8, then activation checkpointing, then FSDP2: torchtitan's order."""
    model = program.model
    shape = job.mesh_shape
    if shape.get("tp", 1) > 1:
        from torch.distributed.tensor.parallel import parallelize_module

        if program.tp_plan is None:
            raise ValueError(f"{job.model} has no tensor-parallel plan: use a mesh without tp, or return "
                             "'tp_plan' from the model function")
        for container, index in program.layers:
            parallelize_module(container[index], mesh["tp"], program.tp_plan)
        if program.head_plan:
            parallelize_module(model, mesh["tp"], program.head_plan)
    if job.dtype == "fp8":
        float8.convert_to_float8(model, module_filter_fn=lambda module, name: name not in ("head", "output"))
    if job.checkpoint:
        from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

        for container, index in program.layers:
            container[index] = checkpoint_wrapper(container[index])
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    data_mesh = mesh[tuple(name for name in ("dp", "fsdp") if name in shape)] if mesh is not None else None
    policy = MixedPrecisionPolicy(param_dtype=DTYPES[job.param_dtype], reduce_dtype=DTYPES[job.reduce_dtype])
    if policy.param_dtype != torch.float32 or job.master_dtype != "fp32":
        _keep_batch_norms_in_float32(model, data_mesh, policy)
    for container, index in program.layers:
        fully_shard(container[index], mesh=data_mesh, mp_policy=policy)
    fully_shard(model, mesh=data_mesh, mp_policy=policy)
    return model


def _keep_batch_norms_in_float32(model, data_mesh, policy):
    """FSDP's mixed precision casts parameters, not buffers: a BatchNorm's weight would be bf16 and its running
    statistics float32, a mix its kernels refuse. FSDP1's MixedPrecision keeps batch norms in full precision by
    default (``_module_classes_to_ignore``); so does the planner: each is its own FSDP unit with float32
    parameters, taking its bf16 input as it comes (the kernels' one mixed precision). A bf16 master copy
    keeps them float32 too (``_batch_norms_back_to_float32``)."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    full = MixedPrecisionPolicy(param_dtype=torch.float32, reduce_dtype=policy.reduce_dtype, cast_forward_inputs=False)
    for module in _affine_batch_norms(model):
        fully_shard(module, mesh=data_mesh, mp_policy=full)


def _affine_batch_norms(model):
    return [module for module in model.modules()
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.weight is not None]


def _batch_norms_back_to_float32(model):
    """``model.to(bf16)`` casts the batch norms' parameters and running statistics alike: back to float32, the
    whole module, as FSDP1 keeps it (a bf16 running mean beside float32 parameters is a mix the kernels refuse)."""
    for module in _affine_batch_norms(model):
        module.float()


# --- the planned step ----------------------------------------------------------------------------------


class ShardOptimizer:
    """AdamW over each chip's shards of the parameters.

    What a chip does for ``AdamW(model.parameters())`` over FSDP's DTensor parameters is AdamW's
    kernels on its local shards: same tensors, same kernels, same bytes. Calling them on the shards
    directly spares the host DTensor's sharding propagation over every parameter list, which takes
    seconds the first time for a large model and costs the chip nothing.
    """

    def __init__(self, job, parameters):
        if job.optimizer not in ("adamw", "adamw-fused"):
            raise ValueError(f"--optimizer {job.optimizer!r}: choose adamw or adamw-fused")
        self.parameters = list(parameters)
        self.shards = [_local(p).detach() for p in self.parameters]
        fused = job.optimizer == "adamw-fused"
        self.optimizer = torch.optim.AdamW(self.shards, lr=1e-4, fused=fused, foreach=not fused)

    def step(self):
        for parameter, shard in zip(self.parameters, self.shards):
            shard.grad = None if parameter.grad is None else _local(parameter.grad)
        self.optimizer.step()

    def zero_grad(self):
        for parameter, shard in zip(self.parameters, self.shards):
            parameter.grad = shard.grad = None

    def state_tensors(self):
        return [value for state in self.optimizer.state.values() for value in state.values()
                if isinstance(value, torch.Tensor)]

    def create_state(self):
        """The state AdamW makes on its first step (both moments), made by one step on zero gradients: of the
        parameters that train (a frozen one never has a gradient, and AdamW keeps no state for it)."""
        for parameter in self.parameters:
            if parameter.requires_grad:
                parameter.grad = torch.zeros_like(parameter)
        self.step()
        self.zero_grad()


def _local(tensor):
    return tensor._local_tensor if hasattr(tensor, "_local_tensor") else tensor


def _on_tpu(value):
    if isinstance(value, torch.Tensor):
        return torch.empty_like(value, device="tpu")
    return value


def plan_training(job):
    """Plan ``job`` (a TrainingJob): the JSON-ready dict ``python -m torch_tpu.plan --json`` prints."""
    check_job(job)
    spec = measure.use_chip(job.chip)
    from ..distributed import simulate

    with measure.collecting_the_plans_garbage_only() as baseline, measure.unlimited_hbm() as capacity, \
            simulate(job.chips, job.topology) as world, abstract(), user_code.running(job.model, job.mesh_shape):
        mesh = _device_mesh(job)
        program = build_program(job)
        model = parallelize(program, job, mesh)
        model.to_empty(device="tpu")
        if job.master_dtype != "fp32":
            model.to(DTYPES[job.master_dtype])
            _batch_norms_back_to_float32(model)
            _batch_norms_back_to_float32(model)
        batch = tuple(_on_tpu(value) for value in program.batch)
        keywords = {name: _on_tpu(value) for name, value in program.keywords.items()}
        optimizer = ShardOptimizer(job, model.parameters())
        optimizer.create_state()
        parameters = list(model.parameters())
        parameter_bytes = measure.tensor_bytes(parameters)
        parameter_storages = {measure.storage_key(measure.local_storage(p)) for p in parameters}
        optimizer_bytes = measure.tensor_bytes(optimizer.state_tensors())
        measure.reset_peak()
        before_step = measure.allocated()
        with measure.Stopwatch() as step:
            flops_before = measure.flops_so_far()
            loss = program.loss(model, *batch, **keywords)
            forward_flops = measure.flops_so_far() - flops_before
            gathered = measure.tensor_bytes(model.parameters(), excluding=parameter_storages)
            activation_bytes = measure.allocated() - before_step - gathered
            loss.backward()
            gradient_bytes = measure.tensor_bytes(p.grad for p in model.parameters() if p.grad is not None)
            optimizer.step()
            optimizer.zero_grad()
        peak = measure.peak() - baseline
        topology = "x".join(map(str, world.torus.shape)) if hasattr(world.torus, "shape") else str(world.torus)
        parameter_count = sum(p.numel() for p in parameters)  # DTensors report their global size
        sequence = program.seq
        del model, optimizer, loss, batch, keywords, parameters, program, mesh, world
    memory = {"params": parameter_bytes, "grads": gradient_bytes, "optimizer": optimizer_bytes,
              "activations": activation_bytes, "peak": peak, "capacity": capacity, "fits": peak <= capacity}
    memory["largest_consumer"] = max(("params", "grads", "optimizer", "activations"), key=memory.get)
    return _training_result(job, spec, topology, parameter_count, memory, step, 3 * forward_flops, sequence)


def _training_result(job, spec, topology, parameter_count, memory, step, model_flops, sequence):
    predicted = efficiency.predicted_seconds(spec.name, step.seconds)
    peak_flops = spec.peak_flops["bfloat16"]
    return {
        "mode": "training", "model": job.model, "chip": spec.name, "chips": job.chips,
        "mesh": job.mesh_shape, "topology": topology, "batch": job.batch, "seq": sequence, "dtype": job.dtype,
        "checkpoint": job.checkpoint, "optimizer": job.optimizer,
        "precision": {"master": job.master_dtype, "compute": job.param_dtype, "reduce": job.reduce_dtype},
        "params": parameter_count,
        "hbm_per_chip": memory,
        "step": {
            "time_s": predicted, "roofline_s": step.seconds, "compute_s": step.compute_s, "hbm_s": step.hbm_s,
            "ici_s": step.ici_s, "ici_exposed_s": step.ici_exposed_s, "bound": step.bound,
            "model_flops_per_chip": model_flops, "hardware_flops_per_chip": step.flops,
            "efficiency": efficiency.EFFICIENCY[spec.name],
        },
        "mfu": model_flops / (predicted * peak_flops),
        "roofline_mfu": model_flops / (step.seconds * peak_flops),
        "samples_per_s_per_chip": job.batch / job.chips / predicted,
        "tokens_per_s_per_chip": job.batch * sequence / job.chips / predicted if sequence else None,
    }


def published_job(run):
    """The TrainingJob that replays an efficiency.PublishedRun: its model, slice, batch and sharding."""
    return TrainingJob(model=run.model, chip=run.chip, chips=run.chips, mesh=run.mesh, batch=run.batch, seq=run.seq,
                       checkpoint=run.checkpoint, dtype=run.dtype)


def candidate_meshes(job, limit=8):
    """Meshes worth trying for ``job.chips`` chips: FSDP over all of them, and FSDP x TP for each
    tensor-parallel size the model's heads allow, smallest TP first (TP's all-reduces are costly)."""
    shapes = [(("fsdp", job.chips),)]
    heads = None
    if job.model in models.CONFIGS:
        config = models.CONFIGS[job.model]
        heads = (config.heads, config.kv_heads)
    for tp in (2, 4, 8, 16):
        if job.chips % tp or tp > job.chips or heads is None or heads[1] % tp or heads[0] % tp:
            continue
        shapes.append((("fsdp", job.chips // tp), ("tp", tp)))
    for dp in (2, 4, 8, 16):
        if job.chips % dp == 0 and job.chips > dp and len(shapes) < limit:
            shapes.append((("dp", dp), ("fsdp", job.chips // dp)))
    return [mesh for mesh in shapes if job.batch % _data_parallel(mesh) == 0][:limit]


def _data_parallel(mesh):
    shape = dict(mesh)
    return shape.get("dp", 1) * shape.get("fsdp", 1)


def sweep(job, limit=8):
    """Plan every candidate mesh; those that fit, fastest first, then those that do not."""
    results = [plan_training(dataclasses.replace(job, mesh=mesh)) for mesh in candidate_meshes(job, limit)]
    return sorted(results, key=lambda r: (not r["hbm_per_chip"]["fits"], r["step"]["time_s"]))


__all__ = ["TrainingJob", "candidate_meshes", "parse_mesh", "plan_training", "sweep"]
