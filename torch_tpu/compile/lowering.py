"""Lowering: what each FX node of an AOTAutograd graph becomes in a compiled program.

A node becomes one of:

- a **view** (``view``, ``permute``, ``expand``, ...): a NumPy view, free, in no kernel;
- a **pointwise**, **reduction** or **matmul** computation: the eager kernel's own NumPy maths
  (``ops.pointwise.MATHS``, ``mxu_matmul``, the reductions' ``reduce_into``), called on arrays
  and writing into a buffer the program planned. These are what fusion groups;
- an **opaque** computation: NumPy maths that never fuses (softmax and its backward: a row
  reduction followed by an elementwise pass, which is already one kernel);
- an **eager** node: everything else runs the registered eager kernel through the dispatcher
  (counted and listed in the debug output), never the CPU. Nodes whose values live on the CPU
  (optimizer step counters) run as torch CPU ops, as they do in eager mode.

Each lowering is a small function registered for its aten overloads by ``@lowers``; it looks
only at the node's static facts (shapes and dtypes from ``node.meta["val"]``) and returns a
``Lowered``: its kind and a ``run(out, *arrays)`` closure with everything static bound.
"""

import dataclasses
import functools
import math
import operator

import numpy as np
import torch

from .. import _C, _cost, _tensor
from . import remembered
from .._tensor import DTYPE_NAME, numpy_dtype
from ..ops import attention, conv, indexing, linalg, nn, pointwise, reduction
from ..ops._common import converted, opmath_dtype, wrap_dim, wrap_dims

aten = torch.ops.aten
LOWERINGS = {}  # OpOverload -> lowering function(node) -> Lowered
VIEW, POINTWISE, REDUCTION, MATMUL, OPAQUE, EAGER = "view", "pointwise", "reduction", "matmul", "opaque", "eager"
FUSIBLE = frozenset({POINTWISE, REDUCTION, MATMUL})
REFUSED = "tpu_refused"  # node.meta key: why the meta function refuses the node's operands in eager's dtypes


@dataclasses.dataclass
class Lowered:
    kind: str
    run: object = None  # views: run(*arrays) -> array; computations: run(out, *arrays)
    inputs: tuple = ()  # the fx Nodes whose arrays run takes, in order
    flops: dict = dataclasses.field(default_factory=dict)  # MXU FLOPs by input type
    reason: str = ""  # for EAGER: why there is no NumPy lowering
    writes: object = None  # the input node a mutation writes into (its result is that input)
    host: bool = False  # a host scalar (an optimizer's step counter): NumPy on the host, never charged
    multi: bool = False  # several results: run(outs, *arrays) writes result i into outs[i], the home codegen planned
    #                      for it (None: nothing reads it), and returns the results (outs, and any host values)
    results: tuple = ()  # for ``multi``: the positions of the results written into ``outs`` (its tpu tensors)
    value: object = None  # value(*arrays) -> a fresh array of the result: for values that need no planned home
    inline: tuple = None  # (ufunc, operands): the whole kernel is ``ufunc(*operands, out=out)``, written
    #                       into the source; an operand is an input node or a constant array
    constant: bool = False  # its value depends on nothing (a fill, a range): a scratch home is filled once,
    #                         when the program is generated
    rowwise: bool = False  # an OPAQUE row reduction with its elementwise pass (softmax, layer norm): it may
    #                        be the root of the kernel that produces its first input (fusion rule 9)


def lowers(*overloads):
    def decorate(function):
        for overload in overloads:
            LOWERINGS[overload] = function
        return function

    return decorate


def value_of(node):
    """The FakeTensor (or number) AOTAutograd recorded for a node."""
    return node.meta.get("val") if isinstance(node, torch.fx.Node) else node


def is_tpu_node(node):
    value = value_of(node)
    return isinstance(value, torch.Tensor) and value.device.type == "tpu"


def tensor_inputs(args):
    """The fx Nodes among (possibly nested) arguments, in order."""
    found = []
    for arg in args:
        if isinstance(arg, torch.fx.Node):
            found.append(arg)
        elif isinstance(arg, (list, tuple)):
            found.extend(tensor_inputs(arg))
        elif isinstance(arg, dict):
            found.extend(tensor_inputs(arg.values()))
    return found


def meta_twin(value):
    """A meta tensor standing for a recorded value, for dtype and shape rules evaluated at compile time
    (read only: one twin serves every value of the same layout, as making one costs a dispatch)."""
    if not isinstance(value, torch.Tensor):
        return value
    shape, stride = tuple(value.shape), tuple(value.stride())
    if all(type(n) is int for n in shape + stride):
        return _meta_twin_of_layout(shape, stride, value.dtype)
    return torch.empty_strided(shape, stride, dtype=value.dtype, device="meta")  # symbolic sizes: not cached


@functools.lru_cache(maxsize=4096)
def _meta_twin_of_layout(shape, stride, dtype):
    return torch.empty_strided(shape, stride, dtype=dtype, device="meta")


def lower(node):
    """The Lowered form of one call_function node."""
    if node.target is operator.getitem:
        return Lowered(VIEW, lambda values, index=node.args[1]: values[index], (node.args[0],))
    host = not is_tpu_node(node) and not _has_tpu_result(node)
    if host and not is_host_scalar(node):
        return Lowered(EAGER, inputs=tuple(tensor_inputs((node.args, node.kwargs))), reason="its values live on the CPU")
    if REFUSED in node.meta:  # the meta function refused the call once retyped to eager's dtypes
        return Lowered(EAGER, inputs=tuple(tensor_inputs((node.args, node.kwargs))),
                       reason=f"CPU refuses it: {node.meta[REFUSED]}")
    _read_numbers_as_lowered(node)
    lowering = LOWERINGS.get(node.target)
    if lowering is None and isinstance(node.target, torch._ops.OpOverload):
        maths = pointwise_maths(node.target)
        if maths is not None:
            lowering = functools.partial(lower_pointwise, maths=maths)
    if lowering is None:
        return Lowered(EAGER, inputs=tuple(tensor_inputs((node.args, node.kwargs))), reason="no NumPy lowering")
    lowered = lowering(node)
    lowered.host = host and lowered.kind != EAGER
    return lowered


def _read_numbers_as_lowered(node):
    """Replace each argument node holding a number (a SymInt or SymFloat input of a ``dynamic`` graph, or one
    computed from them) by that number, so that every lowering reads it as a constant like any other scalar. The
    graph is this program's own copy, specialised on those numbers (``pipeline._ShapeSpecialised``)."""
    def as_number(argument):
        value = value_of(argument)
        return value if type(value) in (int, float, bool) else argument

    node.args = torch.fx.node.map_arg(node.args, as_number)
    node.kwargs = torch.fx.node.map_arg(node.kwargs, as_number)


def is_host_scalar(node):
    """A node computing a one-element CPU tensor from others (the step counters of torch's optimizers)."""
    values = [value_of(node)] + [value_of(a) for a in tensor_inputs((node.args, node.kwargs))]
    return all(isinstance(v, torch.Tensor) and v.device.type == "cpu" and v.numel() == 1 for v in values)


def _has_tpu_result(node):
    value = value_of(node)
    return isinstance(value, (list, tuple)) and any(isinstance(v, torch.Tensor) and v.device.type == "tpu" for v in value)


# --- views -------------------------------------------------------------------------------------


def _view(function):
    """A lowering whose node is a NumPy view of its first argument, shaped by the node's own value. An index
    or bound computed from a symbolic size is read as the number it is in this program (each program is
    specialised to its inputs' shapes: ``pipeline._ShapeSpecialised``)."""

    def lowering(node):
        return Lowered(VIEW, function(node), (node.args[0],))

    return lowering


def _reshaped(node):
    shape = tuple(value_of(node).shape)
    return lambda array: array.reshape(shape)


def _permuted(node):
    dims = wrap_dims(node.args[1], len(value_of(node).shape))
    return lambda array: array.transpose(dims)


def _transposed(node):
    ndim = value_of(node.args[0]).dim()
    dims = list(range(ndim))
    if ndim >= 2:
        first, second = wrap_dim(node.args[1], ndim), wrap_dim(node.args[2], ndim)
        dims[first], dims[second] = dims[second], dims[first]
    return lambda array: array.transpose(dims)


def _transposed_matrix(node):
    return lambda array: array.T


def _expanded(node):
    shape = tuple(value_of(node).shape)
    return lambda array: np.broadcast_to(array, shape)


def _aliased(node):
    return lambda array: array


def _sliced(node):
    index = _slice_index(value_of(node.args[0]), node.args[1:5])
    return lambda array: array[index]


def _slice_index(source, arguments):
    """The NumPy index of ``source[start:end:step]`` along ``dim``, from aten.slice's ``(dim, start, end, step)``
    with its defaults (bounds read as the numbers they are here)."""
    dim, start, end, step = list(arguments) + [0, None, None, 1][len(arguments):]
    dim = wrap_dim(dim, source.dim())
    index = [slice(None)] * source.dim()
    index[dim] = slice(*slice(*map(value_of, (start, end, step))).indices(source.shape[dim]))
    return tuple(index)


def _selected(node):
    source = value_of(node.args[0])
    dim = wrap_dim(node.args[1], source.dim())
    index = (slice(None),) * dim + (value_of(node.args[2]),)
    return lambda array: array[index]


for _overloads, _function in (
    ((aten.view.default, aten._unsafe_view.default, aten.reshape.default, aten.squeeze.dim, aten.squeeze.dims,
      aten.squeeze.default, aten.unsqueeze.default), _reshaped),
    ((aten.permute.default,), _permuted),
    ((aten.transpose.int,), _transposed),
    ((aten.t.default,), _transposed_matrix),
    ((aten.expand.default,), _expanded),
    ((aten.alias.default, aten.detach.default), _aliased),
    ((aten.slice.Tensor,), _sliced),
    ((aten.select.int,), _selected),
):
    lowers(*_overloads)(_view(_function))


@lowers(aten.split_with_sizes.default, aten.split.Tensor)
def lower_split(node):
    source = value_of(node.args[0])
    dim = wrap_dim(node.args[2] if len(node.args) > 2 else 0, source.dim())
    bounds = np.cumsum([0] + [v.shape[dim] for v in value_of(node)]).tolist()
    index = [tuple([slice(None)] * dim + [slice(a, b)]) for a, b in zip(bounds[:-1], bounds[1:])]
    return Lowered(VIEW, lambda array: [array[i] for i in index], (node.args[0],))


# --- pointwise ---------------------------------------------------------------------------------


_OUT_OVERLOAD = {}


def pointwise_maths(overload):
    """The Maths of ``overload`` (``add.Tensor``) as registered for it or for its ``out=`` twin (``add.out``)."""
    if overload in _OUT_OVERLOAD:
        return _OUT_OVERLOAD[overload]
    name = _overload_name(overload)
    maths = pointwise.MATHS.get(name)
    if maths is None and overload._overloadname == "Scalar":  # mul.Scalar: mul's maths, the scalar promoted as such
        maths = pointwise.MATHS.get(f"{name.partition('.')[0]}.out")
    if maths is None:
        arguments = [(a.name, str(a.type)) for a in overload._schema.arguments]
        packet = overload.overloadpacket
        for other in packet.overloads():
            schema = getattr(packet, other)._schema
            if [(a.name, str(a.type)) for a in schema.arguments if not a.is_out] == arguments and \
                    any(a.is_out for a in schema.arguments):
                maths = pointwise.MATHS.get(_overload_name(getattr(packet, other)))
                break
    _OUT_OVERLOAD[overload] = maths
    return maths


def _overload_name(overload):
    base = overload._schema.name.removeprefix("aten::")
    return base if overload._overloadname == "default" else f"{base}.{overload._overloadname}"


# Real maths whose body is one ufunc when called without its optional scalar: called as that ufunc, with out=.
# Complex operands keep their maths: CPU multiplies a complex operand by alpha even when it is 1 (an infinite
# part then gives NaN), as pointwise._scaled does, and rounds complex products by its own lanes
# (pointwise.complex_product).
_UFUNC_BODIES = {pointwise.add: np.add, pointwise.sub: np.subtract, pointwise.multiply: np.multiply}


def _refusal(maths, promoted, extras, kwargs):
    """The error CPU gives for these arguments, or None (Dynamo's fake tensors do not apply CPU's checks)."""
    try:
        maths.check(promoted, extras, kwargs)
    except (RuntimeError, TypeError, ValueError, NotImplementedError) as error:
        return error
    return None


def lower_pointwise(node, maths):
    """``maths.function`` on the operands converted to the compute type, rounded once into ``out``."""
    args = list(node.args)
    promoted, extras = args[:maths.operands], args[maths.operands:]
    metas = [meta_twin(value_of(a)) for a in promoted]
    refusal = _refusal(maths, metas, [meta_twin(value_of(a)) if isinstance(a, torch.fx.Node) else a for a in extras],
                       dict(node.kwargs))
    if refusal:  # the eager kernel raises CPU's error when the program reaches the node
        return Lowered(EAGER, inputs=tuple(tensor_inputs((node.args, node.kwargs))), reason=f"CPU refuses it: {refusal}")
    _follow_eager_layout(node, maths, metas)
    dtype = maths.rule(pointwise.common_dtype(*metas))
    compute = opmath_dtype(dtype) if maths.opmath(*metas) else numpy_dtype(dtype)
    out_name = DTYPE_NAME[value_of(node).dtype]
    inputs = [a for a in promoted if isinstance(a, torch.fx.Node)]
    on_host = not is_tpu_node(node)
    # each promoted operand, converted as eager converts it (pointwise.as_converted: rounded to a 16-bit dtype
    # first unless the kernel reads it as given): ("array", position in inputs, needs a conversion, as given),
    # ("number", position in inputs, its dtype, as given) or ("constant", array)
    given = pointwise.read_as_given(maths.name, metas)
    plan = []
    for position, argument in enumerate(promoted):
        as_given = position == given
        if isinstance(argument, torch.fx.Node):
            value = value_of(argument)
            if value.device.type == "cpu" and not on_host:  # a 0-d CPU tensor (a step counter) read as a number
                plan.append(("number", inputs.index(argument), numpy_dtype(value.dtype), as_given))
            else:
                source = numpy_dtype(value.dtype)
                converts = source != compute or source != numpy_dtype(dtype)
                plan.append(("array", inputs.index(argument), converts, as_given))
        elif argument is None:
            plan.append(("constant", None))
        else:
            plan.append(("constant", pointwise.as_converted(argument, dtype, compute, as_given)))
    # Scalar arguments as CPU's kernel reads them (alpha rounded to a 16-bit dtype, as eager rounds it)
    args, kwargs = pointwise.with_scalars_in_dtype(node.target._schema, tuple(node.args), dict(node.kwargs), dtype)
    extras, function = list(args[maths.operands:]), maths.function
    if kwargs.get("alpha", 1) == 1 and not extras and function in _UFUNC_BODIES and compute.kind != "c":
        function, kwargs = _UFUNC_BODIES[function], {}
    if function is pointwise.power and compute.kind == "f":  # power's body for floating operands, called like a ufunc
        function = pointwise.real_power
    ufunc = (isinstance(function, np.ufunc) or function is pointwise.real_power) and not extras and not kwargs
    writes_out = getattr(function, "writes_out", False)  # maths that write their last step into out= (eager's too)

    def operands(arrays):
        result = []
        for entry in plan:
            if entry[0] == "constant":
                result.append(entry[1])
            elif entry[0] == "number":
                number = np.asarray(arrays[entry[1]].item(), entry[2])
                result.append(pointwise.as_converted(number, dtype, compute, entry[3]))
            else:
                array = arrays[entry[1]]
                result.append(pointwise.as_converted(array, dtype, compute, entry[3]) if entry[2] else array)
        return result

    def lane_inputs(arrays):
        """The input arrays whose layout decides which bf16 NaNs CPU's kernel stores from its scalar tail."""
        return [arrays[e[1]] for e in plan if e[0] == "array"]

    def run(out, *arrays):
        values = operands(arrays)
        if ufunc and out.dtype == compute:
            _C.vpu.apply(function, *values, out=out)
            return
        if writes_out and out.dtype == compute:  # no temporary result and no copy of it
            function(*values, *extras, **kwargs, out=out)
            return
        pointwise.store_result(out, function(*values, *extras, **kwargs), out_name, lane_inputs(arrays), maths.name)

    out_dtype = numpy_dtype(value_of(node).dtype)
    shape = tuple(value_of(node).shape)

    def value(*arrays):
        result = np.asarray(function(*operands(arrays), *extras, **kwargs))
        if result.dtype == out_dtype and result.shape == shape:
            return result
        out = np.empty(shape, out_dtype)
        pointwise.store_result(out, result, out_name, lane_inputs(arrays), maths.name)
        return out

    lowered = Lowered(POINTWISE, run, tuple(inputs), value=None if ufunc else value)
    if ufunc and out_dtype == compute and math.prod(value_of(node).shape) < _C.vpu.PARALLEL_MIN_ELEMENTS and \
            all(entry[0] == "constant" or (entry[0] == "array" and not entry[2]) for entry in plan):
        lowered.inline = (function, [inputs[e[1]] if e[0] == "array" else e[1] for e in plan])
    return lowered


@lowers(aten.gelu.default, aten.gelu_backward.default)
def lower_gelu(node):
    """GELU's pointwise maths; a node ``remembered.mark`` marked shares its Gaussian CDF between forward and backward."""
    maths = pointwise_maths(node.target)
    if remembered.SLOT in node.meta:
        memo, slot, vouched = node.meta[remembered.SLOT]
        share = memo.gelu(slot, vouched) if node.target is aten.gelu.default else memo.gelu_backward(slot)
        maths = dataclasses.replace(maths, function=share)
    return lower_pointwise(node, maths)


@lowers(aten.where.self)
def lower_where(node):
    """``where``'s maths; the condition takes no part in type promotion."""
    condition, *values = node.args
    compute = opmath_dtype(pointwise.common_dtype(*(meta_twin(value_of(v)) for v in values)))
    name = DTYPE_NAME[value_of(node).dtype]
    constants = [None if isinstance(v, torch.fx.Node) else np.array(v).astype(compute) for v in values]
    inputs = tuple(a for a in node.args if isinstance(a, torch.fx.Node))

    def run(out, *arrays):
        supply = iter(arrays)
        mask = next(supply) if isinstance(condition, torch.fx.Node) else condition
        chosen = [next(supply).astype(compute, copy=False) if c is None else c for c in constants]
        _C.dtypes.cast_into(out, pointwise.where(mask, *chosen), name)

    return Lowered(POINTWISE, run, inputs)


@lowers(aten.copy_.default)
def lower_copy_into_input(node):
    """A mutation of a graph input kept in the graph (``keep_inference_input_mutations``): written in place."""
    destination, source = node.args[:2]
    if is_tpu_node(destination) != is_tpu_node(source):
        return Lowered(EAGER, inputs=(destination, source), reason="a host transfer")
    name = DTYPE_NAME[value_of(destination).dtype]

    def run(out, array):
        _C.dtypes.cast_into(out, array, name)

    return Lowered(POINTWISE, run, (source,), writes=destination)


@lowers(aten.clone.default, aten._to_copy.default, aten.copy.default)
def lower_copy(node):
    source = node.args[-1] if node.target is aten.copy.default else node.args[0]
    name = DTYPE_NAME[value_of(node).dtype]
    if not is_tpu_node(source):
        return Lowered(EAGER, inputs=tuple(tensor_inputs((node.args, node.kwargs))), reason="a host transfer")

    def run(out, array):
        _C.dtypes.cast_into(out, array, name)

    return Lowered(POINTWISE, run, (source,))


@lowers(aten.full.default, aten.full_like.default, aten.scalar_tensor.default, aten.zeros_like.default,
        aten.ones_like.default, aten.zeros.default, aten.ones.default)
def lower_fill(node):
    fills = {aten.zeros_like.default: 0, aten.ones_like.default: 1, aten.zeros.default: 0, aten.ones.default: 1}
    fill = fills.get(node.target, node.args[-1] if node.target is not aten.scalar_tensor.default else node.args[0])
    name = DTYPE_NAME[value_of(node).dtype]

    native = name in ("float32", "float64", "int64", "int32", "bool")  # a fill NumPy converts as c10 does

    def run(out, *unused):
        if native:
            out.fill(fill)
        else:
            _C.dtypes.cast_into(out, fill, name, scalar_source=True)

    return Lowered(POINTWISE, run, (), constant=not isinstance(fill, torch.fx.Node))  # a *_like's input gives only its shape


@lowers(aten.arange.start_step, aten.arange.start, aten.arange.default)
def lower_arange(node):
    """A range's values are known when the graph is compiled: the kernel writes them."""
    value = value_of(node)
    integral = value.dtype in (torch.int64, torch.int32) and all(isinstance(a, int) for a in node.args)
    values = np.arange(*node.args, dtype=numpy_dtype(value.dtype)) if integral else None
    if values is None or tuple(values.shape) != tuple(value.shape):
        reason = "a floating-point range (torch's own rounding)" if not tensor_inputs(node.args) else "a symbolic range"
        return Lowered(EAGER, inputs=tuple(tensor_inputs((node.args, node.kwargs))), reason=reason)

    def run(out):
        np.copyto(out, values)

    return Lowered(POINTWISE, run, (), constant=True)



@lowers(aten.embedding.default)
def lower_embedding(node):
    """Rows of the weight gathered by index: a copy, exact in any dtype."""
    weight, indices = node.args[:2]

    def run(out, table, positions):
        np.take(table, positions, axis=0, out=out)

    return Lowered(OPAQUE, run, (weight, indices))


@lowers(aten.embedding_dense_backward.default)
def lower_embedding_backward(node):
    """Each gradient row added to its weight row in order, as eager's kernel adds them (its own helper)."""
    from ..ops import indexing

    grad_output, indices, num_weights, padding_idx, scale_grad_by_freq = node.args
    if scale_grad_by_freq or 0 <= padding_idx < num_weights or value_of(grad_output).dtype != value_of(node).dtype:
        return Lowered(EAGER, inputs=(grad_output, indices), reason="frequency scaling, padding or a cast")
    width = value_of(grad_output).shape[-1]

    def run(out, grad, positions):
        out.fill(0)
        flat = positions.reshape(-1)
        indexing._add_rows_in_order(out, flat, grad.reshape(flat.size, width))

    return Lowered(OPAQUE, run, (grad_output, indices))


@lowers(aten.cat.default)
def lower_cat(node):
    tensors, dim = node.args[0], node.args[1] if len(node.args) > 1 else 0
    value = value_of(node)
    if any(value_of(t).dtype != value.dtype or value_of(t).dim() != value.dim() for t in tensors):
        return Lowered(EAGER, inputs=tuple(tensors), reason="cat with type promotion or legacy empty tensors")
    axis = wrap_dim(dim, value.dim())

    def run(out, *arrays):
        np.concatenate(arrays, axis=axis, out=out)

    return Lowered(OPAQUE, run, tuple(tensors))


@lowers(aten.index_select.default)
def lower_index_select(node):
    """index_select through eager's maths (``indexing.index_select_arrays``: CPU's range check, then a take)
    (a relative position bias, an embedding written as a selection)."""
    source, dim, index = node.args
    if (value_of(index).dim() > 1 or value_of(index).dtype not in (torch.int32, torch.int64)
            or (value_of(source).dim() == 0 and value_of(index).numel() != 1)):
        return Lowered(EAGER, inputs=(source, index), reason="CPU refuses the call: the eager kernel raises its error")
    axis = wrap_dim(dim, max(value_of(source).dim(), 1))
    store = _storer(value_of(node))

    def run(out, array, positions):
        taken_from, checked = indexing.index_select_arrays(array, axis, positions)
        store(out, np.take(taken_from, checked, axis=axis))

    return Lowered(OPAQUE, run, (source, index))


@lowers(aten.slice_scatter.default)
def lower_slice_scatter(node):
    """``input`` with a slice replaced by ``src`` (the gradient of a slice): a copy, then the slice written."""
    input, src = node.args[:2]
    if value_of(input).dtype != value_of(src).dtype:
        return Lowered(EAGER, inputs=(input, src), reason="a slice of another dtype: the eager kernel casts it")
    index = _slice_index(value_of(input), node.args[2:6])
    if np.broadcast_to(np.empty((), bool), tuple(value_of(input).shape))[index].shape != tuple(value_of(src).shape):
        return Lowered(EAGER, inputs=(input, src), reason="a src of another size than the slice: CPU refuses it")

    def run(out, base, part):
        np.copyto(out, base)
        out[index] = part

    return Lowered(OPAQUE, run, (input, src))


@lowers(aten.any.dim, aten.any.dims)
def lower_any(node):
    axes, keepdim = _reduced_axes(node), _keepdim(node)

    def run(out, array):
        np.any(array, axis=axes, keepdims=keepdim, out=out)

    return Lowered(REDUCTION, run, (node.args[0],))


# --- matmul ------------------------------------------------------------------------------------


def _flops(overload_name, node):
    return _cost.MXU_FLOPS[overload_name](*(meta_twin(value_of(a)) for a in node.args))


def _mixed_operands(node, count):
    """A product whose operands differ in dtype, which CPU refuses (a bf16 statistic eager keeps in bf16 times a
    float32 matrix): the eager kernel raises its error."""
    if len({value_of(a).dtype for a in node.args[:count]}) > 1:
        return Lowered(EAGER, inputs=tuple(node.args[:count]), reason="CPU refuses it: operands of different dtypes")
    return None


@lowers(aten.mm.default, aten.bmm.default, aten.mv.default, aten.dot.default)
def lower_product(node):
    refused = _mixed_operands(node, 2)
    if refused:
        return refused

    def run(out, a, b):
        linalg.mxu_matmul(a, b, out)

    # mv's FLOPs by mm's formula, which reads a vector as one column (the cost table's mv entry unsqueezes, a
    # dispatch that fake tensors refuse here)
    flops_of = "dot" if node.target is aten.dot.default else "mm"
    return Lowered(MATMUL, run, tuple(node.args[:2]), _flops(flops_of, node))


@lowers(aten.addmm.default)
def lower_addmm(node):
    refused = _mixed_operands(node, 3)
    if refused:
        return refused
    beta, alpha = node.kwargs.get("beta", 1), node.kwargs.get("alpha", 1)
    name = DTYPE_NAME[value_of(node).dtype]

    def run(out, bias, a, b):
        direct = out.dtype == _C.mxu.accumulator_dtype(a.dtype, b.dtype)
        product = linalg.scaled_sum(linalg.mxu_matmul(a, b, out if direct else None), bias, beta, alpha)
        if not direct:
            _C.dtypes.cast_into(out, product, name)

    return Lowered(MATMUL, run, tuple(node.args[:3]), _flops("addmm", node))


# --- reductions --------------------------------------------------------------------------------


def _keepdim(node):
    return node.args[2] if len(node.args) > 2 else node.kwargs.get("keepdim", False)


def _reduced_axes(node):
    source = value_of(node.args[0])
    dims = node.args[1] if len(node.args) > 1 else None
    dims = () if dims is None else (dims,) if isinstance(dims, int) else tuple(dims)
    if source.dim() == 0:
        return ()
    return wrap_dims(dims, source.dim()) or tuple(range(source.dim()))


def _accumuland(array, dtype):
    """An array as a reduction into ``dtype`` reads it (eager's ``_accumuland``): converted, widened to opmath."""
    return converted(array, dtype).astype(opmath_dtype(dtype), copy=False)


@lowers(aten.sum.dim_IntList)
def lower_sum(node):
    axes, keepdim = _reduced_axes(node), _keepdim(node)
    dtype = value_of(node).dtype
    name = DTYPE_NAME[dtype]
    direct = reduction.direct_summer(value_of(node.args[0]), axes, dtype)

    def run(out, array):
        if direct is not None and direct(out, array):
            return
        layout = reduction.iterated_layout(array, None if array.dtype == out.dtype else out.itemsize)
        reduction.sum_into(out, _accumuland(array, dtype), axes, keepdim, name, layout)

    return Lowered(REDUCTION, run, (node.args[0],))


@lowers(aten.mean.dim)
def lower_mean(node):
    axes, keepdim = _reduced_axes(node), _keepdim(node)
    dtype = value_of(node).dtype
    name = DTYPE_NAME[dtype]

    def run(out, array):
        _C.dtypes.cast_into(out, reduction.mean_array(_accumuland(array, dtype), axes, keepdim), name)

    return Lowered(REDUCTION, run, (node.args[0],))


# --- softmax: a row reduction and an elementwise pass, already one kernel ------------------------


def _softmax_lowering(into, log=None):
    def lowering(node):
        if log is not None and node.args[2] and value_of(node.args[0]).dtype != torch.float16:
            # the eager kernel raises CUDA's error when the program runs, as eager mode does
            return Lowered(EAGER, inputs=(node.args[0],), reason="half_to_float on a non-half input")
        dim = wrap_dim(node.args[-2] if log is None else node.args[1], value_of(node).dim())
        name = DTYPE_NAME[value_of(node).dtype]
        inputs = tuple(node.args[:2]) if log is None else (node.args[0],)

        def run(out, *arrays):
            arrays = [nn.at_least_1d(a.astype(opmath_dtype(value_of(node).dtype), copy=False)) for a in arrays]
            compute = arrays[0].dtype
            target = nn.at_least_1d(out) if out.dtype == compute else np.empty(arrays[0].shape, compute)
            if log is None:
                into(target, *arrays, dim)
            else:
                stored_dtype = nn.softmax_stored_dtype(value_of(node).dtype, dim, value_of(node).dim(), log)
                into(target, arrays[0], dim, log, stored_dtype)
            if target is not out and target.base is not out:
                _C.dtypes.cast_into(out, target.reshape(out.shape), name)

        return Lowered(OPAQUE, run, inputs, rowwise=True)

    return lowering


lowers(aten._softmax.default)(_softmax_lowering(nn.softmax_into, log=False))
lowers(aten._log_softmax.default)(_softmax_lowering(nn.softmax_into, log=True))
lowers(aten._softmax_backward_data.default)(_softmax_lowering(nn.softmax_backward_into))
lowers(aten._log_softmax_backward_data.default)(_softmax_lowering(nn.log_softmax_backward_into))


def nbytes_of(value):
    return math.prod(value.shape) * value.element_size() if isinstance(value, torch.Tensor) else 0


# --- kernels with several results, each written into the home codegen planned for it ----------------


def _storer(value):
    """``store(out, array)`` for one result like ``value``: ``array`` (opmath) converted into the result's home
    ``out``, or, when nothing reads the result (``out`` is None), nothing stored."""
    if value is None:
        return lambda out, array: None
    shape, name = tuple(value.shape), DTYPE_NAME[value.dtype]

    def store(out, array):
        if out is not None:
            _C.dtypes.cast_into(out, array.reshape(shape), name)

    return store


def _retyped_results(node, dtypes, formats=None):
    """``node``'s results, each typed as ``dtypes`` says (None: as traced) and laid out in the memory format
    ``formats`` gives it by position (none: as traced), with the nodes after them traced again, so that their homes
    take eager's dtype and layout where the meta function AOTAutograd traced with says another."""
    traced, formats = value_of(node), formats or {}
    several = isinstance(traced, (tuple, list))
    originals = tuple(traced) if several else (traced,)
    values = list(originals)
    for index, value in enumerate(values):
        if value is None:
            continue
        dtype, memory_format = dtypes[index] or value.dtype, formats.get(index)
        if value.dtype != dtype or (memory_format and not value.is_contiguous(memory_format=memory_format)):
            with value.fake_mode:
                values[index] = torch.empty(value.shape, dtype=dtype, device=value.device,
                                            memory_format=memory_format or torch.contiguous_format)
    if any(new is not old for new, old in zip(values, originals)):
        layout_only = all(new.dtype == old.dtype for new, old in zip(values, originals) if new is not None)
        fake_mode = next(v for v in values if v is not None).fake_mode
        if not _replaced({node: tuple(values) if several else values[0]}, fake_mode, layout_only):
            return list(originals)
    return values


def _replaced(values, fake_mode, layout_only):
    """Each node given its value in ``values``, and the nodes after them traced again; whether the values hold.
    After a layout change (``layout_only``) a node that cannot take the new layout (the graph's ``view`` of a
    convolution's result, which eager's ``reshape`` copies once the result is channels-last) leaves every value as
    traced: the program then runs as AOTAutograd traced it."""
    previous = {node: node.meta["val"] for node in values}
    for node, value in values.items():
        node.meta["val"] = value
    try:
        _propagate_after(list(values), fake_mode, previous if layout_only else None)
    except (RuntimeError, ValueError):
        if not layout_only:
            raise
        for node, value in previous.items():
            node.meta["val"] = value
        return False
    return True


def saved_layouts(graph):
    """The strides of a forward program's results by node name, as its lowering laid them out."""
    results = graph.find_nodes(op="output")[0].args[0]
    return {n.name: tuple(value_of(n).stride()) for n in results
            if isinstance(n, torch.fx.Node) and isinstance(value_of(n), torch.Tensor)}


def relay_saved_values(graph, layouts):
    """The backward graph's saved values (placeholders named as the forward's nodes) laid out as the forward
    program made them (a convolution's channels-last result) where AOTAutograd traced another layout, with the
    nodes after them traced again: the backward's fused values then follow eager's layouts too."""
    _relaid([(node, layouts[node.name]) for node in graph.find_nodes(op="placeholder")
             if node.name in layouts and _relayable(value_of(node), layouts[node.name])])


def _relayable(value, strides):
    """Whether a traced tensor of plain sizes has other strides than ``strides`` (plain numbers too)."""
    return (isinstance(value, torch.Tensor) and all(type(n) is int for n in (*value.shape, *value.stride(), *strides))
            and tuple(value.stride()) != tuple(strides))


def _relaid(nodes_and_strides):
    """Each node's value given the strides paired with it, and the nodes after them traced again (or, where a node
    after them cannot take the layout, none: ``_replaced``)."""
    values = {}
    for node, strides in nodes_and_strides:
        value = value_of(node)
        with value.fake_mode:
            values[node] = torch.empty_strided(value.shape, strides, dtype=value.dtype, device=value.device)
    if values:
        _replaced(values, value.fake_mode, layout_only=True)


def _follow_eager_layout(node, maths, metas):
    """A pointwise node's result laid out as its eager kernel lays it out (``Maths.layout``: TensorIterator's rule,
    or ``empty_like(self)``'s), where the meta function says another layout (hardtanh's backward takes ``self``'s
    channels-last strides where CPU's TensorIterator follows a contiguous gradient): a reduction or convolution
    backward reading it then sums in eager's order."""
    value = value_of(node)
    if maths.layout is None or not is_tpu_node(node) or not all(
            isinstance(m, torch.Tensor) and all(type(n) is int for n in (*m.shape, *m.stride()))
            for m in metas if isinstance(m, torch.Tensor)):
        return
    strides = maths.layout(metas) or _tensor.contiguous_strides(tuple(value.shape))
    if _relayable(value, strides):
        _relaid([(node, tuple(strides))])


def _propagate_after(retyped, fake_mode, previous=None):
    """The values of the nodes after the ``retyped`` ones that read their results, directly or not, traced again
    from their inputs' values (an op on a bf16 statistic computes in bf16, as eager does, not in the traced
    float32); the walk goes no further than a value that comes out as it was traced (the fetch of a result left as
    it was). ``previous``: a layout change's record of the values it replaced, which each value traced again joins;
    there a node that cannot be traced again raises (a refusal is never what eager does with a layout), where after
    a dtype change it is marked REFUSED."""
    changed = set(retyped)
    for node in retyped[0].graph.nodes:
        if node.op != "call_function" or node in retyped or not any(a in changed for a in node.all_input_nodes):
            continue
        args, kwargs = torch.fx.node.map_arg((node.args, node.kwargs), value_of)
        try:
            with fake_mode:
                value = node.target(*args, **kwargs)
        except RuntimeError as error:  # a dtype mix eager refuses (a bf16 mean into a float32 bmm): the eager
            if previous is not None:  # kernel raises CPU's error when the program runs
                raise
            node.meta[REFUSED] = str(error).splitlines()[0]
            continue
        if _layout(value) != _layout(value_of(node)):
            if previous is not None:
                previous.setdefault(node, node.meta["val"])
            node.meta["val"] = value
            changed.add(node)


def _layout(value):
    """Dtypes, sizes and strides of a value or tuple of values (symbolic sizes by name: comparing adds no guard)."""
    return tuple((v.dtype, str(v.shape), str(v.stride())) if isinstance(v, torch.Tensor) else repr(v)
                 for v in (value if isinstance(value, (tuple, list)) else (value,)))


def _filled(out, value, compute, fill):
    """A result like ``value`` filled by ``fill(destination)`` in the ``compute`` dtype (eager's compute_into): into
    its home ``out`` directly when the dtypes agree and it is contiguous, else through a scratch array converted
    into it. ``fill`` writes through a reshape of its destination, which copies a home laid out otherwise (layer
    norm's input gradient takes the input's permuted strides in the traced graph) and would lose the writes."""
    if out is not None and out.dtype == compute and out.flags.c_contiguous:
        fill(out)
        return
    scratch = np.empty(tuple(value.shape), compute)
    fill(scratch)
    if out is not None:
        _C.dtypes.cast_into(out, scratch, DTYPE_NAME[value.dtype])


def _tensor_results(value):
    """The positions of a multi-output node's tpu tensor results: those the kernel writes into planned homes."""
    return tuple(i for i, v in enumerate(value) if isinstance(v, torch.Tensor) and v.device.type == "tpu")


def _optional_rows(supply, present, compute):
    return next(supply).astype(compute, copy=False).reshape(-1) if present else None


@lowers(aten.native_layer_norm.default)
def lower_layer_norm(node):
    input, normalized_shape, weight, bias, eps = node.args
    source = value_of(input)
    inputs = tuple(a for a in (input, weight, bias) if isinstance(a, torch.fx.Node))
    parameters = [value_of(p) if isinstance(p, torch.fx.Node) else None for p in (weight, bias)]
    if nn.layer_norm_dtypes_refused(source, *parameters):
        return Lowered(EAGER, inputs=inputs, reason="CPU refuses the call: the eager kernel raises its error")
    axis = source.dim() - len(normalized_shape)
    rows, size = math.prod(source.shape[:axis]), math.prod(source.shape[axis:])
    compute = opmath_dtype(source.dtype)
    # eager's (CPU's) statistics dtype: a bf16 or fp16 input's own unless its parameters are float32, where
    # the meta function (CUDA's rule) says float32; the backward then reads the statistics eager saves
    stats = nn.statistics_dtype(source, *(value_of(p) for p in (weight, bias) if isinstance(p, torch.fx.Node)))
    result, mean_value, rstd_value = _retyped_results(node, (None, stats, stats))
    store_mean, store_rstd = _storer(mean_value), _storer(rstd_value)

    def run(outs, x, *params):
        supply = iter(params)
        weight_rows, bias_rows = _optional_rows(supply, weight is not None, compute), _optional_rows(supply, bias is not None, compute)
        normalize, mean, rstd = nn.layer_norm_arrays(x.astype(compute, copy=False).reshape(rows, size),
                                                     weight_rows, bias_rows, eps)
        _filled(outs[0], result, compute, normalize)
        store_mean(outs[1], mean)
        store_rstd(outs[2], rstd)
        return outs

    return Lowered(OPAQUE, run, inputs, multi=True, rowwise=True, results=_tensor_results(value_of(node)))


@lowers(aten.native_dropout.default)
def lower_dropout(node):
    """Dropout through eager's maths (``nn.dropout_arrays``): its keep mask drawn from the chip's RNG when the
    program runs, as the eager kernel draws it."""
    input, p, train = node.args
    if nn.dropout_refused(value_of(input), p, train):
        return Lowered(EAGER, inputs=(input,), reason="CPU refuses the call: the eager kernel raises its error")
    compute, results = opmath_dtype(value_of(input).dtype), value_of(node)
    store_result, store_mask = _storer(results[0]), _storer(results[1])

    def run(outs, x):
        result, keep = nn.dropout_arrays(x.astype(compute, copy=False), p, train)
        store_result(outs[0], result)
        store_mask(outs[1], keep)
        return outs

    return Lowered(OPAQUE, run, (input,), multi=True, results=_tensor_results(results))


@lowers(aten.native_dropout_backward.default)
def lower_dropout_backward(node):
    """``grad * mask * scale`` through eager's maths (``nn.dropout_backward_arrays``)."""
    grad_output, mask, scale = node.args
    dtype = value_of(node).dtype
    grad_compute, compute, name = opmath_dtype(value_of(grad_output).dtype), opmath_dtype(dtype), DTYPE_NAME[dtype]

    def run(out, grad, keep):
        _C.dtypes.cast_into(out, nn.dropout_backward_arrays(grad.astype(grad_compute, copy=False), keep, scale,
                                                            compute), name)

    return Lowered(POINTWISE, run, (grad_output, mask))


@lowers(aten.nll_loss_forward.default)
def lower_nll_loss(node):
    """NLL loss through eager's maths (``nn.nll_forward_maths``), its CPU-order cascade sum included."""
    input, target, weight, reduction, ignore_index = node.args
    inputs = tuple(a for a in (input, target, weight) if isinstance(a, torch.fx.Node))
    source, (loss, total_weight) = value_of(input), value_of(node)
    if nn.nll_loss_dtypes_refused(source, value_of(target), value_of(weight)):
        return Lowered(EAGER, inputs=inputs, reason="CPU refuses the call: the eager kernel raises its error")
    compute, dtype = opmath_dtype(source.dtype), numpy_dtype(source.dtype)
    store_loss, store_weight = _storer(loss), _storer(total_weight)

    def run(outs, x, target_array, *weight_array):
        loss_array, weight_sum = nn.nll_forward_maths(nn.class_last(x.astype(compute, copy=False), 0), target_array,
                                                      *(weight_array or (None,)), reduction, ignore_index, dtype)
        store_loss(outs[0], np.asarray(loss_array))
        store_weight(outs[1], np.asarray(weight_sum))
        return outs

    return Lowered(OPAQUE, run, inputs, multi=True, results=_tensor_results(value_of(node)))


@lowers(aten.nll_loss_backward.default)
def lower_nll_loss_backward(node):
    """NLL loss's input gradient through eager's maths (``nn.nll_backward_maths``)."""
    grad_output, input, target, weight, reduction, ignore_index, total_weight = node.args
    inputs = tuple(a for a in (grad_output, input, target, weight, total_weight) if isinstance(a, torch.fx.Node))
    if nn.nll_loss_dtypes_refused(*map(value_of, (input, target, grad_output, weight, total_weight))):
        return Lowered(EAGER, inputs=inputs, reason="CPU refuses the call: the eager kernel raises its error")
    compute = opmath_dtype(value_of(input).dtype)
    name = DTYPE_NAME[value_of(node).dtype]

    def run(out, grad, x, target_array, *rest):
        weight_array, total = rest if weight is not None else (None, *rest)
        gradient = nn.nll_backward_maths(grad.astype(compute, copy=False), x.astype(compute, copy=False), target_array,
                                         weight_array, reduction, ignore_index, total.astype(compute, copy=False), 0)
        _C.dtypes.cast_into(out, gradient, name)

    return Lowered(OPAQUE, run, inputs)


@lowers(aten.convolution.default, aten.convolution_backward.default)
def lower_convolution(node):
    """A convolution runs its eager kernel, whose result (and input gradient) is channels-last where CPU's is
    (``conv.channels_last_result``); the meta function lays a tpu tensor's out contiguously. Traced again in eager's
    layout, the nodes after it are too, so that a fused kernel's values, and the reductions and convolution
    backwards reading them, go in eager's order (a channels_last ResNet's gradients were 5e-6 off)."""
    backward = node.target is aten.convolution_backward.default
    input, weight = map(value_of, node.args[1:3] if backward else node.args[:2])
    if conv.channels_last_result(input, weight):
        memory_format = torch.channels_last if input.dim() == 4 else torch.channels_last_3d
        _retyped_results(node, (None, None, None) if backward else (None,), {0: memory_format})
    return Lowered(EAGER, inputs=tuple(tensor_inputs((node.args, node.kwargs))), reason="no NumPy lowering")


@lowers(aten.native_layer_norm_backward.default)
def lower_layer_norm_backward(node):
    grad_out, input, normalized_shape, mean, rstd, weight, bias, output_mask = node.args
    source = value_of(input)
    # eager's input gradient is contiguous; the meta function lays it out as the input (a permuted one: ConvNeXt)
    results = _retyped_results(node, (None, None, None), {0: torch.contiguous_format})
    axis = source.dim() - len(normalized_shape)
    rows, size = math.prod(source.shape[:axis]), math.prod(source.shape[axis:])
    compute = opmath_dtype(source.dtype)
    store_weight, store_bias = _storer(results[1]), _storer(results[2])
    wanted = [bool(m) and r is not None for m, r in zip(output_mask, results)]

    def run(outs, dy, x, mean_array, rstd_array, *params):
        weight_rows = _optional_rows(iter(params), weight is not None, compute)
        input_gradient, weight_sums, bias_sums = nn.layer_norm_backward_arrays(
            x.astype(compute, copy=False).reshape(rows, size), dy.astype(compute, copy=False).reshape(rows, size),
            mean_array.astype(compute, copy=False).reshape(-1, 1), rstd_array.astype(compute, copy=False).reshape(-1, 1),
            weight_rows, numpy_dtype(source.dtype))
        if wanted[0]:
            _filled(outs[0], results[0], compute, input_gradient)
        if wanted[1]:
            store_weight(outs[1], weight_sums())
        if wanted[2]:
            store_bias(outs[2], bias_sums())
        return outs

    inputs = (grad_out, input, mean, rstd) + ((weight,) if isinstance(weight, torch.fx.Node) else ())
    return Lowered(OPAQUE, run, inputs, multi=True, results=_tensor_results(results))


# --- fused attention: eager's maths, its results laid out as Meta lays them out --------------------


def _argument(node, position, name, default):
    return node.args[position] if len(node.args) > position else node.kwargs.get(name, default)


@lowers(aten._scaled_dot_product_fused_attention_overrideable.default)
def lower_attention(node):
    """``attention.attention_forward`` on the arrays; dropout draws its stream from the chip's RNG at run time,
    as the eager kernel does."""
    query, key, value = node.args[:3]
    bias, dropout_p = _argument(node, 3, "attn_bias", None), _argument(node, 4, "dropout_p", 0.0)
    is_causal = _argument(node, 5, "is_causal", False)
    q, k, v = value_of(query), value_of(key), value_of(value)
    scale = attention.softmax_scale(q, node.kwargs.get("scale"))
    results = value_of(node)
    store_output, store_lse = _storer(results[0]), _storer(results[1])
    lengths = (q.shape[-2], k.shape[-2])

    def run(outs, q_array, k_array, v_array, *bias_array):
        dropout, seed, offset = attention.dropout_state(dropout_p)
        output, lse = attention.attention_forward(q_array, k_array, v_array, *(bias_array or (None,)), scale=scale,
                                                  is_causal=is_causal, dropout=dropout,
                                                  precision_passes=linalg.float32_passes())
        store_output(outs[0], output)
        store_lse(outs[1], lse)
        return outs[0], outs[1], None, None, *lengths, seed, offset, None

    flops = {DTYPE_NAME[q.dtype]: attention.forward_flops(q.shape, k.shape, v.shape, is_causal)}
    inputs = (query, key, value) + ((bias,) if isinstance(bias, torch.fx.Node) else ())
    return Lowered(OPAQUE, run, inputs, flops, multi=True, results=(0, 1))


@lowers(aten._scaled_dot_product_fused_attention_overrideable_backward.default)
def lower_attention_backward(node):
    """``attention.attention_backward`` on the arrays, dropout-free (with dropout the philox seed and offset are
    host values the graph passes as device ones: that backward runs as an eager node)."""
    grad_out, query, key, value, bias, grad_input_mask, out, logsumexp = node.args[:8]
    dropout_p, is_causal = _argument(node, 12, "dropout_p", 0.0), _argument(node, 13, "is_causal", False)
    if dropout_p:
        return Lowered(EAGER, inputs=tuple(tensor_inputs((node.args, node.kwargs))),
                       reason="dropout's seed and offset are host values")
    q, k, v = value_of(query), value_of(key), value_of(value)
    scale = attention.softmax_scale(q, node.kwargs.get("scale"))
    results = value_of(node)
    stores = [_storer(r if isinstance(r, torch.Tensor) else None) for r in results]
    rows, bias_shape = tuple(q.shape[:-1]), tuple(value_of(bias).shape) if isinstance(bias, torch.fx.Node) else None
    wants_bias = bias_shape is not None and isinstance(results[3], torch.Tensor)

    def run(outs, dout, q_array, k_array, v_array, out_array, lse_array, *bias_array):
        grads = attention.attention_backward(dout, q_array, k_array, v_array, out_array, lse_array.reshape(rows),
                                             *(bias_array or (None,)), scale=scale, is_causal=is_causal,
                                             bias_grad=wants_bias, precision_passes=linalg.float32_passes())
        bias_grad = attention.reduce_to_shape(grads[3], bias_shape) if wants_bias else None
        for store, out, array in zip(stores, outs, (*grads[:3], bias_grad)):
            store(out, array)
        return outs

    flops = {DTYPE_NAME[q.dtype]: int(attention.BACKWARD_FLOPS_RATIO * attention.forward_flops(
        q.shape, k.shape, v.shape, is_causal))}
    inputs = (grad_out, query, key, value, out, logsumexp) + ((bias,) if bias_shape is not None else ())
    return Lowered(OPAQUE, run, inputs, flops, multi=True, results=_tensor_results(results))
