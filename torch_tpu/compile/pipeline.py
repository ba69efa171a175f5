"""The pipeline behind ``backend="tpu"``: Dynamo's graph -> AOTAutograd -> one program per FX graph.

AOTAutograd traces forward and backward into core-ATen graphs with our decompositions (core
ATen's, except for the ops whose eager kernels already do in one pass what a decomposition would
split into many: layer norm, softmax, GELU, NLL loss, embedding backward), partitions them with
the min-cut rematerialising partitioner, and keeps input mutations (the optimizer's in-place
updates) in the graph. Each graph then has its ``_foreach_*`` ops unrolled into the per-tensor
ops whose maths the pointwise kernels hold, and is lowered, fused and generated into a Program.
Graphs with symbolic shapes (``dynamic=True``) get one program per concrete shape, made on first
use.
"""

import functools
import itertools
import operator

import torch

from . import debug, remembered
from .codegen import generate
from .lowering import EAGER, lower, meta_twin, pointwise_maths, relay_saved_values, saved_layouts, value_of
from .runtime import Program

aten = torch.ops.aten

# Ops whose eager kernels do in one pass what core ATen's decompositions would split into many (ReLU's backward:
# one masked pass, where the decomposition's comparison, fill and select are three kernels). lerp, addcmul,
# addcdiv and logit also keep eager's (CPU's) arithmetic: the decompositions compute a 0-dim weight unrounded
# in float32, divide before scaling, and compute a bf16 logit in float32 where CPU rounds every step. mv and dot
# stay products on the MXU, as eager runs them (the decompositions multiply and sum on the VPU, in another order).
# linalg_cross's decomposition computes a bf16/fp16 cross product in float32 and rounds once, where CPU's kernel
# (eager's) rounds each product; it has no NumPy lowering and runs its eager kernel. special_log_ndtr's
# decomposition is another formula than CPU's: for x < -10 its result (and so the gradient, which adds it to x^2/2
# and cancels) moves by 1e-5 relative; it lowers to eager's pointwise maths. Batch norm's backward decomposition
# sums its two channel reductions in another order and form than eager's kernel (input gradients 1e-7 apart, a
# MobileNet's norm weights' gradients 6e-6); kept whole, it runs its eager kernel, as batch norm's forward does.
# bernoulli's decomposition compares float32 uniforms with the probabilities, where eager draws through
# random.bernoulli_draw: kept whole, a program draws eager's mask under the same seed. std's decomposition takes
# the square root of a var rounded to float32, where CPU's (eager's) takes it in double and rounds once.
KEPT_WHOLE = (
    aten.native_batch_norm_backward.default,
    aten.mv.default, aten.dot.default, aten.linalg_cross.default, aten.special_log_ndtr.default,
    aten.native_layer_norm.default, aten.native_layer_norm_backward.default, aten.gelu.default,
    aten.gelu_backward.default, aten._softmax.default, aten._log_softmax.default,
    aten._softmax_backward_data.default, aten._log_softmax_backward_data.default, aten.nll_loss_forward.default,
    aten.nll_loss_backward.default, aten.embedding_dense_backward.default, aten.embedding.default,
    aten.native_dropout.default, aten.native_dropout_backward.default, aten.threshold_backward.default,
    aten.lerp.Scalar, aten.lerp.Tensor, aten.addcmul.default, aten.addcdiv.default, aten.logit.default,
    aten.bernoulli.default, aten.std.correction, aten.std_mean.correction,
)
# Composite ops whose Python decomposition torch registers on the CompositeImplicitAutograd key (py_impl), which
# the Python dispatcher runs while AOTAutograd traces whatever decomposition table the backend passes. Eager runs
# ATen's C++ composite instead, and the two differ: for a vector times a batch of matrices, the Python matmul
# folds the batch into one mv where the C++ one runs a bmm, summing in another order. Traced through ATen's C++
# composite, the graph holds the ops eager runs.
TRACED_AS_ATEN_COMPOSITES = (aten.matmul.default, aten.matmul.out)
# Ops that torch._refs decomposes on the Autograd key (py_impl), so that AOTAutograd traces the reference, not the
# op: a hardshrink of integers computed where eager refuses it, and softshrink's zeros took the reference's signs,
# not CPU's (its scalar tail's -0.0). Traced through ATen's own autograd kernel, the graph holds the op itself and
# its backward, which lower to eager's maths and argument checks.
TRACED_AS_ATEN_AUTOGRAD = (aten.hardshrink.default, aten.softshrink.default)
_names = itertools.count()


@functools.cache
def decompositions():
    from torch._decomp import core_aten_decompositions

    table = dict(core_aten_decompositions())
    for op in KEPT_WHOLE + tuple(filter(has_eager_pointwise_maths, table)):
        table.pop(op, None)
    return table


def has_eager_pointwise_maths(op):
    """A functional pointwise op with eager's own maths (SiLU and its backward, softplus, mish, hardswish): kept
    whole, the program computes it as eager does, where core ATen's decomposition rounds other steps (SiLU's
    backward as ``grad * sig * (1 + x * (1 - sig))`` in several kernels: an EfficientNet's gradients 2e-6 off)."""
    return (isinstance(op, torch._ops.OpOverload) and not op._schema.is_mutable
            and pointwise_maths(op) is not None)


@functools.cache
def trace_composites_as_aten_runs_them():
    """Give each of TRACED_AS_ATEN_COMPOSITES (TRACED_AS_ATEN_AUTOGRAD), for tpu tensors under the Python dispatcher
    (tracing only: eager never consults it), a Python kernel that calls ATen's C++ composite (autograd) kernel."""
    from torch._C import DispatchKey

    for ops, key in ((TRACED_AS_ATEN_COMPOSITES, DispatchKey.CompositeImplicitAutograd),
                     (TRACED_AS_ATEN_AUTOGRAD, DispatchKey.Autograd)):
        for op in ops:
            op.py_impl(DispatchKey.AutogradPrivateUse1)(functools.partial(op._op_dk, key))


def backend(gm, example_inputs, mode=None, options=None, **unused):
    """The ``torch.compile`` backend "tpu". ``mode`` ("default", "reduce-overhead", "max-autotune")
    is accepted; every mode compiles the same way."""
    from torch._dynamo.backends.common import aot_autograd
    from torch._functorch.partitioners import min_cut_rematerialization_partition

    debug.record_dynamo_graph(gm)
    trace_composites_as_aten_runs_them()
    compile_as = functools.partial(compile_graph, dynamo_graph=debug.current_dynamo_graph(),
                                   shared=remembered.Remembered(), layouts={})
    return aot_autograd(
        fw_compiler=functools.partial(compile_as, kind="forward"),
        bw_compiler=functools.partial(compile_as, kind="backward"),
        inference_compiler=functools.partial(compile_as, kind="inference"),
        decompositions=decompositions(),
        partition_fn=min_cut_rematerialization_partition,
        keep_inference_input_mutations=True,
    )(gm, example_inputs)


def compile_graph(gm, example_inputs, kind, dynamo_graph=None, shared=None, layouts=None):
    """AOTAutograd's compiler: the FX graph ``gm`` as a Program (one per shape when shapes are symbolic).
    ``shared`` holds the host values its forward and backward programs share (``remembered.py``); ``layouts`` the
    strides the forward program gives the values the backward reads (``lowering.saved_layouts``)."""
    unroll_foreach(gm.graph)
    copies_into_fresh_tensors_as_casts(gm.graph)
    skip_copies_of_values_read_once(gm.graph)
    if shared is not None:
        remembered.mark(gm.graph, kind, shared)
    constants = lift_constants(gm)
    name = f"{kind}_{next(_names)}"
    if _symbolic(gm.graph):
        return _ShapeSpecialised(gm, name, kind, dynamo_graph, constants)
    if kind == "backward" and layouts:
        relay_saved_values(gm.graph, layouts)
    program = Program(name, generate(gm.graph, name), constants)
    if kind == "forward" and layouts is not None:
        layouts.update(saved_layouts(gm.graph))
    debug.record_program(program, kind, gm, dynamo_graph)
    return program


def _symbolic(graph):
    for node in graph.nodes:
        value = node.meta.get("val")
        if isinstance(value, torch.SymInt) or (isinstance(value, torch.Tensor) and any(
                isinstance(s, torch.SymInt) for s in value.shape)):
            return True
    return False


class _ShapeSpecialised:
    """A graph with symbolic shapes: a program per concrete set of input shapes, lowered on first use."""

    def __init__(self, gm, name, kind, dynamo_graph, constants):
        self._boxed_call = True
        self.gm, self.name, self.kind, self.dynamo_graph, self.constants = gm, name, kind, dynamo_graph, constants
        self.programs = {}

    def __call__(self, *args):
        if len(args) == 1 and type(args[0]) is list:
            args = args[0]
        key = tuple(tuple(a.shape) if isinstance(a, torch.Tensor) else a for a in args)  # constants' shapes are fixed
        program = self.programs.get(key)
        if program is None:
            program = self.programs[key] = self._specialise(args, len(self.programs))
        return program(args)

    def _specialise(self, args, count):
        from torch._subclasses.fake_tensor import FakeTensorMode
        from torch.fx.passes.fake_tensor_prop import FakeTensorProp

        gm = torch.fx.GraphModule(self.gm, _copied(self.gm.graph))
        mode = FakeTensorMode(allow_non_fake_inputs=True)
        fakes = [mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in (*args, *self.constants)]
        FakeTensorProp(gm, mode).propagate_dont_convert_inputs(*fakes)
        name = f"{self.name}_{count}"
        program = Program(name, generate(gm.graph, name), self.constants)
        debug.record_program(program, self.kind, gm, self.dynamo_graph)
        return program


def _copied(graph):
    new = torch.fx.Graph()
    mapping = {}
    output = new.graph_copy(graph, mapping)
    new.output(output)
    for old, copy in mapping.items():
        copy.meta = dict(old.meta)
    return new


def lift_constants(gm):
    """The graph's tensor constants (``get_attr`` nodes: a ``torch.tensor(...)`` made inside the model, a
    mask buffer) become inputs after the caller's, so that the program reads them as it reads any input;
    returns their values, which the program appends to its arguments."""
    graph = gm.graph
    anchor = next((n for n in reversed(graph.nodes) if n.op == "placeholder"), None)
    constants = []
    for node in list(graph.nodes):
        if node.op != "get_attr":
            continue
        value = operator.attrgetter(node.target)(gm)
        if not isinstance(value, torch.Tensor):
            continue  # a submodule (a higher-order op's branch): not a value
        with graph.inserting_after(anchor) if anchor is not None else graph.inserting_before(next(iter(graph.nodes))):
            anchor = graph.placeholder(f"constant_{node.name}")
        anchor.meta = dict(node.meta)
        node.replace_all_uses_with(anchor)
        graph.erase_node(node)
        constants.append(value)
    return tuple(constants)


# --- a gradient copied into a fresh tensor -----------------------------------------------------------

# The allocations whose values nothing reads before a copy overwrites them whole.
_FRESH = (aten.empty_permuted.default, aten.empty_like.default, aten.empty.memory_format, aten.empty_strided.default)


def copies_into_fresh_tensors_as_casts(graph):
    """``copy(empty_like(p), g)`` -> ``_to_copy(g, dtype=..., memory_format=contiguous)`` when the empty tensor
    has no other use and ``g`` fills it whole in its contiguous layout. A ``loss.backward()`` traced into the graph
    (``torch._dynamo.config.trace_autograd_ops``) accumulates each new gradient this way (Dynamo's
    ``accumulate_grad`` polyfill, after PyTorch's gradient layout contract): as written, the allocation
    would be an HBM buffer of its own that the copy's kernel never reads."""
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target is not aten.copy.default:
            continue
        destination, source = node.args[:2]
        value, copied = value_of(node), value_of(source)
        if not (isinstance(destination, torch.fx.Node) and destination.target in _FRESH
                and len(destination.users) == 1 and isinstance(copied, torch.Tensor)
                and tuple(copied.shape) == tuple(value.shape) and copied.device == value.device
                and value.is_contiguous()):
            continue
        with graph.inserting_before(node):
            cast = graph.call_function(aten._to_copy.default, (source,),
                                       {"dtype": value.dtype, "memory_format": torch.contiguous_format})
        cast.meta = dict(node.meta)
        node.replace_all_uses_with(cast)
        graph.erase_node(node)
        graph.erase_node(destination)


def skip_copies_of_values_read_once(graph):
    """A same-dtype ``_to_copy`` laid out exactly as the value it copies, which it alone reads (through
    views that change no layout: a weight gradient transposed twice), is that value: the copy goes. This is
    the new gradient a traced ``loss.backward()`` copies into a fresh tensor, which eager's gradient
    accumulation takes as it is when its layout is the parameter's (PyTorch's gradient layout contract)."""
    for node in list(graph.nodes):
        if (node.op != "call_function" or node.target is not aten._to_copy.default
                or set(node.kwargs) - {"dtype", "memory_format"}):
            continue
        source, value = node.args[0], value_of(node)
        if not isinstance(source, torch.fx.Node) or not _same_layout(value_of(source), value):
            continue
        computed = _computed_value_read_only_through(source)
        if computed is not None and _same_layout(value_of(computed), value, shape=False):
            node.replace_all_uses_with(source)
            graph.erase_node(node)


def _same_layout(a, b, shape=True):
    """Contiguous tensors of one dtype and device at offset 0, of one shape (or one number of elements)."""
    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
        return False
    same_size = tuple(a.shape) == tuple(b.shape) if shape else a.numel() == b.numel()
    return (same_size and a.dtype == b.dtype and a.device == b.device and a.is_contiguous() and b.is_contiguous()
            and a.storage_offset() == 0 == b.storage_offset())


_LAYOUT_VIEWS = (aten.view.default, aten._unsafe_view.default, aten.permute.default, aten.t.default,
                 aten.alias.default, aten.reshape.default)


def _computed_value_read_only_through(node):
    """The new value ``node`` views, when every value on the way has one reader, the next one; else None."""
    while node.op == "call_function" and node.target in _LAYOUT_VIEWS and len(node.users) == 1:
        node = node.args[0]
    return node if _new_value(node) and len(node.users) == 1 else None


def _new_value(node):
    """A result that aliases nothing (not a view, not an input written in place), laid out by the program as
    its graph value says: an eager kernel's result is laid out by the kernel, which may differ from the graph's
    (a convolution's weight gradient is channels-last for a channels-last input; its meta function says
    contiguous)."""
    if node.op == "call_function" and node.target is operator.getitem:
        node = node.args[0]
    if node.op != "call_function" or not isinstance(node.target, torch._ops.OpOverload):
        return False
    schema = node.target._schema
    return (not schema.is_mutable and not any(r.alias_info is not None for r in schema.returns)
            and lower(node).kind != EAGER)


# --- _foreach_* ops as the per-tensor ops they apply ---------------------------------------------


def unroll_foreach(graph):
    """Replace each ``_foreach_<op>`` node by one ``<op>`` node per tensor of its lists, so that the
    optimizer's updates lower to the pointwise kernels' maths and fuse like any elementwise chain."""
    for node in list(graph.nodes):
        if node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload) and \
                node.target.overloadpacket.__name__.startswith("_foreach_"):
            _unroll(graph, node)


def _per_tensor(node):
    """(overload, args, kwargs) of each tensor's op, or None when the op has no per-tensor twin."""
    name = node.target.overloadpacket.__name__.removeprefix("_foreach_").rstrip("_")
    name = {"norm": "linalg_vector_norm"}.get(name, name)
    packet = getattr(aten, name, None)
    values = node.meta.get("val")
    if packet is None or not isinstance(values, (list, tuple)):
        return None
    count = len(values)

    def pick(argument, i):  # the i-th element of a list argument; scalars are shared
        return argument[i] if isinstance(argument, (list, tuple)) and len(argument) == count else argument

    calls = []
    for i in range(count):
        call = _resolve(packet, name, [pick(a, i) for a in node.args], {k: pick(v, i) for k, v in node.kwargs.items()})
        if call is None:
            return None
        calls.append(call)
    return calls, count


def _resolve(packet, name, args, kwargs):
    """The overload of ``packet`` that takes these arguments; a trailing scalar may be the keyword ``value``."""
    def meta(a):
        return meta_twin(value_of(a))

    attempts = [(args, kwargs)]
    if len(args) == 4 and name in ("addcmul", "addcdiv"):
        attempts.append((args[:3], {**kwargs, "value": args[3]}))
    for positional, keywords in attempts:
        try:
            overload = torch._C._jit_resolve_packet(f"aten::{name}", *map(meta, positional),
                                                    **{k: meta(v) for k, v in keywords.items()})
        except RuntimeError:
            continue
        return getattr(packet, overload), positional, keywords
    return None


def _unroll(graph, node):
    resolved = _per_tensor(node)
    if resolved is None or any(user.target is not operator.getitem for user in node.users):
        return  # left whole: it runs as its eager foreach kernel
    calls, count = resolved
    replacements = []
    with graph.inserting_before(node):
        for i, (overload, args, kwargs) in enumerate(calls):
            replacement = graph.call_function(overload, tuple(args), kwargs)
            replacement.meta["val"] = node.meta["val"][i]
            replacement.meta["foreach"] = node.name  # its siblings launch with it (fusion rule 7)
            replacements.append(replacement)
    for user in list(node.users):
        user.replace_all_uses_with(replacements[user.args[1]])
        graph.erase_node(user)
    graph.erase_node(node)
