"""The _foreach_* kernels the optimizers use.

PyTorch's own (CompositeExplicitAutograd) foreach kernels loop over the list
and dispatch one aten op per tensor. Here a list whose tensors are all tpu,
of one floating dtype and one shape per position runs as a single Python loop
of NumPy ufuncs: computed in opmath (float32 for bf16/fp16), rounded once on
store, written straight into the tensor's memory when it is stored in opmath.
Where the maths is CPU's fused multiply-add (add/sub with an alpha, addcmul,
lerp: a dozen NumPy passes a call), the list's small tensors are computed
together as one flat array and written back.
Any other list (integer or mixed dtypes, complex values, broadcasting) takes
the per-tensor route PyTorch's composite kernel takes, so type promotion and
errors stay PyTorch's.
"""

import math

import numpy as np
import torch

from .. import _C, _tensor
from .._tensor import is_tpu
from ._common import as_numpy, opmath_dtype, opmath_operand, scalar_value, store, write
from . import pointwise
from .copy import copy_from
from ._overlap import check_no_internal_overlap, check_no_partial_overlap
from ._registry import register

_FAST_DTYPES = frozenset({torch.float32, torch.float64, torch.bfloat16, torch.float16})
_aten = torch.ops.aten


# --- argument checks (worded as PyTorch's check_foreach_api_restrictions) --------------------------------------


def _check(condition, message):
    if not condition:
        raise RuntimeError(message)


def _check_lists(self, *others):
    _check(len(self) > 0, "Tensor list must have at least one tensor.")
    for other in others:
        if other and isinstance(other[0], torch.Tensor):
            _check(len(other) == len(self),
                   f"Tensor lists must have the same number of tensors, got {len(self)} and {len(other)}")
        else:
            _check(len(other) == len(self), "Tensor list must have same number of elements as scalar list.")


def _scalar_from_tensor(scalar):
    _check(scalar.dim() == 0, f"scalar tensor expected to be 0 dim but it has {scalar.dim()} dimensions and "
                              f"{scalar.numel()} elements.")
    return scalar


def _scalars_from_tensor(scalars, length):
    """The per-tensor scalars packed in a 1-d tensor, as Python numbers."""
    _check(scalars.dim() == 1, f"Expected packed scalar Tensor to be of dimension 1. Got {scalars.dim()} instead.")
    _check(scalars.numel() == length,
           f"Expected length of scalars to match input of length {length} but got {scalars.numel()} instead.")
    values = as_numpy(scalars) if scalars.device.type == "tpu" else scalars.detach().numpy()
    return values.tolist()


# --- the fast path ---------------------------------------------------------------------------------------------


def _is_real_scalar(value):
    if isinstance(value, torch.Tensor):
        return value.dim() == 0 and not value.is_complex() and value.device.type in ("tpu", "cpu")
    return not isinstance(value, complex)


def _is_bool(value):
    return isinstance(value, bool) or (isinstance(value, torch.Tensor) and value.dtype == torch.bool)


def _plain_real_number(value):
    """A number the fast path applies as it is; others (a bool or complex alpha) go per tensor, to the op's checks."""
    return _is_real_scalar(value) and not _is_bool(value)


def _keeps_dtype(t, scalar):
    """A real scalar leaves a floating tensor's dtype alone, except a 0-dim tensor meeting another 0-dim tensor.
    A bool takes the per-tensor route, whose op may refuse it (sub does)."""
    if not _plain_real_number(scalar):
        return False
    if isinstance(scalar, torch.Tensor) and t.dim() == 0 and scalar.is_floating_point():
        return scalar.dtype == t.dtype
    return True


def _fast_path(self, tensor_columns, scalar_columns):
    """Every tensor is a tpu tensor of self's floating dtype and shape (and no negated view), and no scalar
    changes that dtype."""
    dtype = self[0].dtype
    if dtype not in _FAST_DTYPES:
        return False
    for t in self:
        if t.dtype != dtype or not is_tpu(t) or t.is_neg():
            return False
    for column in tensor_columns:
        for t, other in zip(self, column):
            if other.dtype != dtype or not is_tpu(other) or other.shape != t.shape or other.is_neg():
                return False
    return _numbers_keep_dtype(self, scalar_columns)


def _numbers_keep_dtype(self, scalar_columns):
    """No number of the columns changes the dtype of the tensor it meets."""
    for column in scalar_columns:
        if _repeated(column) and not isinstance(column[0], torch.Tensor):  # a number keeps any tensor's dtype or none
            if not _plain_real_number(column[0]):
                return False
        elif not all(_keeps_dtype(t, value) for t, value in zip(self, column)):
            return False
    return True


# In place, lists of these dtypes are computed in their own memory (their opmath type is their own)
_WHOLE_BUFFER_DTYPES = frozenset({torch.float32, torch.float64})


def _whole_buffers(self, tensor_columns):
    """For an in-place update, each list's tensors as flat NumPy arrays when every one is a tpu tensor of self's
    float32/float64 dtype filling its own HBM buffer (``_tensor.whole_buffer_array``: an optimizer's parameters,
    gradients and states), of its row's shape and no negated view; else None. Such tensors cannot overlap
    themselves or partly overlap another, so TensorIterator's overlap checks have nothing to refuse; the flat
    views cost a third of ``as_numpy``'s shaped ones, and the elementwise maths need only the elements' order."""
    dtype = self[0].dtype
    if dtype not in _WHOLE_BUFFER_DTYPES:
        return None
    elements = _tensor.numpy_dtype(dtype)
    columns = []
    for column in (self, *tensor_columns):
        arrays = []
        for t, row in zip(column, self):
            if t.dtype != dtype:
                return None
            array = _tensor.whole_buffer_array(t, elements)
            if array is None or t.is_neg() or (t is not row and t.shape != row.shape):
                return None
            arrays.append(array)
        columns.append(arrays)
    return columns


def _repeated(column):
    """Whether a column of numbers is one number repeated (a Scalar overload's), to be looked at once: one object
    (``is``, not ``==``: 1 and 1.0 are two numbers), told by their ids in C, not by a Python loop per tensor."""
    return len(set(map(id, column))) == 1


def _each_number(function, column):
    """``function`` of each number of a column, called once for one number repeated."""
    if _repeated(column):
        return [function(column[0])] * len(column)
    return [function(value) for value in column]


def _as_number(value):
    if isinstance(value, torch.Tensor):
        return scalar_value(value)
    return value


def _map_numpy(fn, self, tensor_columns, scalar_columns, inplace, keywords, kernel=None, arrays=None):
    """fn(self[i], *tensor_columns[i], *scalar_columns[i], out=) for each i, on NumPy arrays and numbers.

    Every operand is viewed once up front (the fast path has checked what ``operand`` would), unless ``arrays``
    holds the columns' views already (``_whole_buffers``); when
    the dtype is its own opmath type (float32, float64) each result is written straight into its
    target, else it is rounded on store, a bf16 NaN as the per-tensor kernel's lanes store it
    (pointwise.write_rounded, for the per-tensor op ``kernel``: None, cpu_kernel_vec's AVX2 loop). Small tensors share
    calls of a fused multiply-add (_flat_groups).
    """
    targets = self if inplace else [pointwise.new_output((t, *(column[i] for column in tensor_columns)), t.dtype)
                                    for i, t in enumerate(self)]  # laid out as CPU's per-tensor op lays it out
    own_dtype = _tensor.numpy_dtype(self[0].dtype)
    compute = own_dtype if getattr(fn, "own_16_bit_maths", False) else opmath_dtype(self[0].dtype)
    direct = compute == own_dtype
    if arrays is None:
        arrays = [[as_numpy(t) for t in column] for column in (self, *tensor_columns)]
    if getattr(fn, "numbers_in_compute_dtype", False):  # converted here once, not by fn for every tensor
        numbers = [_in_compute_dtype(column, compute) for column in scalar_columns]
        keywords = {name: _in_compute_dtype([value], compute)[0] for name, value in keywords.items()}
    else:
        numbers = [_each_number(_as_number, column) for column in scalar_columns]
    outs = (arrays[0] if inplace else [as_numpy(t) for t in targets]) if direct else [None] * len(self)
    plain = getattr(fn, "plain_ufunc", None)
    if plain is not None and plain(compute, **keywords) is not None:
        fn, keywords = plain(compute, **keywords), {}
    fuses = getattr(fn, "fuses_multiply_add", None)
    computed = set()
    with _C.vpu.ignoring_fp_errors():
        if fuses is not None and fuses(compute, **keywords):
            rows = list(zip(targets, outs, zip(*arrays)))
            for group in _flat_groups(rows, numbers, inplace):
                _apply_flat(fn, [rows[index] for index in group], [column[0] for column in numbers], keywords, compute,
                            direct)
                computed.update(group)
        for index, (target, out, operands) in enumerate(zip(targets, outs, zip(*arrays, *numbers))):
            if index in computed:
                continue
            if not direct:  # converted when its turn comes: an earlier tensor's update may have written it
                operands = [*(array.astype(compute) for array in operands[:len(arrays)]), *operands[len(arrays):]]
            result = fn(*operands, out=out, **keywords)
            if not direct:
                pointwise.write_rounded(target, result, [column[index] for column in arrays], kernel)
            elif result is not out:
                out[...] = result
    return None if inplace else targets


# Where fn computes a fused multiply-add (a dozen NumPy passes a call), tensors up to this many elements are computed
# together, concatenated into flat arrays of at most as many: one NumPy call per step for them all instead of one per
# tensor (an optimizer's list of biases and small weights costs its calls' overhead, not its elements). A plain
# ufunc's call costs less than concatenating and writing back (measured: _foreach_mul_ 20% slower flat). The float64
# temporaries stay under glibc's mmap threshold (128 KiB, less a page for malloc's and NumPy's headers): larger ones
# were mapped and unmapped, page-faulting on every call (3x the time). Half that (8192) cut the zoo LSTM's SGD list
# into four groups where this makes two (its update 17% slower).
_MMAP_THRESHOLD_BYTES = 128 * 1024
_FLAT_ELEMENTS = (_MMAP_THRESHOLD_BYTES - 4096) // np.dtype(np.float64).itemsize


def _flat_groups(rows, numbers, inplace):
    """Lists of row indices whose tensors fn may compute as one flat array: the elementwise maths give each element
    the same bits either way, so only what the loop's order means has to hold. Every number column is one number
    repeated (a flat array has one per step), and, in place, no target's memory is read or written at another
    index, where the loop would let one tensor's update reach another's operands."""
    if not all(map(_repeated, numbers)):
        return []
    if inplace and not _targets_apart(rows):
        return []
    groups, group, size = [], [], 0
    for index, row in enumerate(rows):
        elements = row[2][0].size
        if elements > _FLAT_ELEMENTS:
            continue
        if size + elements > _FLAT_ELEMENTS and group:
            groups.append(group)
            group, size = [], 0
        group.append(index)
        size += elements
    groups.append(group)
    return [group for group in groups if len(group) > 1]


def _targets_apart(rows):
    """Whether each in-place target's storage appears at its own index only (an empty view, which holds no
    elements, may have no buffer to compare and cannot meet another)."""
    owner = {}
    for index, (_, _, operands) in enumerate(rows):
        base = operands[0].base
        if base is not None and owner.setdefault(id(base), index) != index:
            return False
    return all(array.base is None or owner.get(id(array.base), index) == index
               for index, (_, _, operands) in enumerate(rows) for array in operands[1:])


def _apply_flat(fn, rows, numbers, keywords, compute, direct):
    """fn once over the rows' tensors concatenated, each piece of the result written back to its target."""
    flat = [np.concatenate(column, axis=None) for column in zip(*(operands for _, _, operands in rows))]
    if not direct:
        flat = [array.astype(compute) for array in flat]
    result = fn(*flat, *numbers, out=None, **keywords)
    start = 0
    for target, out, (array, *_) in rows:
        stop = start + array.size
        piece = result[start:stop]
        if array.ndim != 1:  # whole buffers' flat views (an optimizer's lists) need no reshape: 1 us a tensor
            piece = piece.reshape(array.shape)
        start = stop
        if direct:
            out[...] = piece
        else:
            write(target, piece)


def _in_compute_dtype(column, dtype):
    """A column of numbers as the 0-d arrays of the compute dtype that the pointwise maths make of them; one
    Scalar repeated down the column (a Scalar overload's) is converted once. A number past a 16-bit or float32
    range becomes inf silently, as CPU's conversion makes it (no NumPy overflow warning)."""
    with _C.vpu.ignoring_fp_errors():
        return _each_number(lambda value: np.asarray(_as_number(value)).astype(dtype), column)


def _foreach(fn, method, self, tensor_columns, scalar_columns, inplace, keywords=None, as_cpu_reads=None,
             checked_as=None, kernel=None):
    """The fast NumPy loop when the lists allow it, else PyTorch's composite route: one aten op per tensor.

    ``as_cpu_reads(dtype, scalar_columns, keywords)`` gives the numbers as CPU's per-tensor op reads them for
    tensors of ``dtype`` (the route taken per tensor applies the pointwise kernels' own rules); ``checked_as``
    names that op, whose Scalar arguments c10 converts checked (pointwise.CHECKED_SCALARS)."""
    keywords = keywords or {}
    _check_lists(self, *tensor_columns, *scalar_columns)
    arrays = _whole_buffers(self, tensor_columns) if inplace else None
    if arrays is not None:
        fast = _numbers_keep_dtype(self, scalar_columns)
    else:
        if inplace:  # CPU's per-tensor ops check each target against its own row's operands (TensorIterator's build)
            for i, t in enumerate(self):
                check_no_internal_overlap(t)
                for column in tensor_columns:
                    check_no_partial_overlap(t, column[i])
        fast = _fast_path(self, tensor_columns, scalar_columns)
    if fast and all(map(_plain_real_number, keywords.values())):
        _check_numbers(checked_as, self[0].dtype, scalar_columns, keywords)
        if as_cpu_reads is not None:
            scalar_columns, keywords = as_cpu_reads(self[0].dtype, scalar_columns, keywords)
        return _map_numpy(fn, self, tensor_columns, scalar_columns, inplace, keywords, kernel, arrays)
    columns = (*tensor_columns, *scalar_columns)
    results = [method(t, *(column[i] for column in columns), **keywords) for i, t in enumerate(self)]
    return None if inplace else results


def _check_numbers(op_name, dtype, scalar_columns, keywords):
    """The overflow checks CPU's per-tensor op ``op_name`` makes of its Scalar arguments: the keywords (alpha) by
    name, a column of numbers as the op's one other checked argument (clamp_min's min, lerp's weight, ...)."""
    targets = pointwise.CHECKED_SCALARS.get(op_name, {})
    for name, value in keywords.items():
        if name in targets:
            pointwise.check_scalar_value(value, targets[name], dtype)
    positional = [target for name, target in targets.items() if name not in keywords and name != "alpha"]
    if len(positional) == 1:
        for column in scalar_columns:
            _each_number(lambda value: pointwise.check_scalar_value(value, positional[0], dtype), column)
    number_check = _NUMBER_CHECKS.get(op_name)
    if number_check is not None:
        for column in scalar_columns:
            _each_number(lambda value: number_check(dtype, None, _as_number(value)), column)


# Per-tensor ops whose kernels check a number operand themselves (pow converts its exponent to a 16-bit dtype,
# checked: "value cannot be converted to type c10::Half without overflow")
_NUMBER_CHECKS = {"pow": pointwise.check_integer_power}


def _overloads(name):
    """The overload names (Scalar, List, ...) aten has for _foreach_<name>, without out variants."""
    packet = getattr(_aten, f"_foreach_{name}", None)
    return [] if packet is None else [o for o in packet.overloads() if not o.endswith("out")]


def _scalar_column(kind, self, scalar):
    """A Scalar, a 0-dim Tensor or a ScalarList argument as one scalar per tensor."""
    if kind == "Scalar":
        return [scalar] * len(self)
    if kind == "Tensor":
        return [_scalar_from_tensor(scalar)] * len(self)
    return scalar


# --- unary -----------------------------------------------------------------------------------------------------


def _pointwise_maths(overload):
    """The pointwise kernel's maths of ``overload`` (one formula for eager, foreach and compiled code),
    callable with ``out=`` as the fast path calls it."""
    function = pointwise.MATHS[overload].function
    if isinstance(function, np.ufunc):
        return function
    writes_out = getattr(function, "writes_out", False)  # add, sub: no copy of the result into out

    def apply(first, *others, out=None, **keywords):
        # numbers become arrays of the compute type, as the pointwise kernels' as_compute makes them
        others = [o if isinstance(o, np.ndarray) else np.asarray(o).astype(first.dtype) for o in others]
        if writes_out:
            return function(first, *others, out=out, **keywords)
        result = function(first, *others, **keywords)
        if out is None:
            return result
        out[...] = result
        return out

    apply.numbers_in_compute_dtype = True  # as apply makes them: _map_numpy converts a list's numbers once
    for question in ("fuses_multiply_add", "plain_ufunc", "own_16_bit_maths"):
        if hasattr(function, question):
            setattr(apply, question, getattr(function, question))
    return apply


_UNARY = {name: _pointwise_maths(f"{name}.out") for name in (
    "abs", "neg", "sqrt", "rsqrt", "reciprocal", "exp", "expm1", "log", "log1p", "log2", "log10", "sin", "cos", "tan",
    "asin", "acos", "atan", "sinh", "cosh", "tanh", "sigmoid", "sign", "ceil", "floor", "trunc", "round", "frac", "erf",
    "erfc", "lgamma")}


def _unary_kernel(name, fn, inplace):
    method = _per_tensor_method(name, inplace)

    def kernel(self):
        return _foreach(fn, method, self, [], [], inplace, kernel=name)

    return kernel


# --- binary: add, sub, mul, div, maximum, minimum, clamp_min, clamp_max, pow -----------------------------------


_BINARY = {
    "add": _pointwise_maths("add.out"), "sub": _pointwise_maths("sub.out"), "mul": _pointwise_maths("mul.out"),
    "div": _pointwise_maths("div.out"), "maximum": _pointwise_maths("maximum.out"),
    "minimum": _pointwise_maths("minimum.out"), "clamp_min": np.maximum, "clamp_max": np.minimum,
    "pow": _pointwise_maths("pow.Tensor_Tensor_out"),
}
# The maths CPU's per-tensor op takes with a number (its Scalar overload), where it is not the tensors' one: clamp_min/
# clamp_max keep x where it equals the bound (-0.0 against 0.0; with tensors its vector loop gives the bound, as
# np.maximum/np.minimum do); pow.Tensor_Scalar takes its shortcuts (x * x * x for 3, sqrt for 0.5, ...)
_NUMBER_MATHS = {"maximum": pointwise.clamp_min, "clamp_min": pointwise.clamp_min, "minimum": pointwise.clamp_max,
                 "clamp_max": pointwise.clamp_max, "pow": _pointwise_maths("pow.Tensor_Scalar_out")}
# CPU's foreach maximum/minimum kernels run clamp_min/clamp_max per tensor, for numbers and tensor lists alike
# (so a complex list meets clamp's kernel: '"maximum_cpu" not implemented', not maximum's meta check).
_PER_TENSOR_OP = {"maximum": "clamp_min", "minimum": "clamp_max"}
# CPU's foreach kernels run the pointwise op per tensor, so a number meets each tensor under the pointwise rules
# (rounded to a bf16/fp16 list's dtype unless the op reads it as given: pointwise.READS_ORIGINAL_SCALAR). In
# place, CPU runs ``t.mul_(number)`` as aten mul_.Scalar, whose composite calls mul_out(self, number, self):
# the number takes the first slot, which mul's kernel rounds (``_foreach_mul_([bf16], 0.3)`` multiplies by
# bf16(0.3), ``_foreach_mul`` by 0.3).
_NUMBER_FIRST_IN_PLACE = {"mul": torch.ops.aten.mul_.Scalar}


def _per_tensor_method(name, inplace):
    """The aten op the composite kernel runs per tensor."""
    return getattr(torch.Tensor, f"{name}_" if inplace else name)


def _numbers_as_cpu_reads(name, number_first):
    """``_foreach``'s ``as_cpu_reads`` for op ``name``, its number in the first operand slot or the second."""
    rounded = not pointwise.keeps_number(name, 0 if number_first else 1)

    def as_cpu_reads(dtype, scalar_columns, keywords):
        if rounded:
            scalar_columns = [_each_number(lambda value: pointwise.scalar_in_dtype(_as_number(value), dtype), column)
                              for column in scalar_columns]
        scalar_name = pointwise.SCALARS_IN_DTYPE.get(name)
        if scalar_name in keywords:
            keywords = {**keywords, scalar_name: pointwise.scalar_in_dtype(keywords[scalar_name], dtype)}
        return scalar_columns, keywords

    return as_cpu_reads


def _binary_kernel(name, fn, kind, inplace):
    number_first = inplace and kind in ("Scalar", "ScalarList") and name in _NUMBER_FIRST_IN_PLACE
    per_tensor_op = _PER_TENSOR_OP.get(name, name)
    method = _NUMBER_FIRST_IN_PLACE[name] if number_first else _per_tensor_method(per_tensor_op, inplace)
    as_cpu_reads = _numbers_as_cpu_reads(name, number_first)

    def kernel(self, other, **keywords):  # keywords: alpha, for add and sub
        if kind == "List":
            return _foreach(fn, method, self, [other], [], inplace, keywords, as_cpu_reads, per_tensor_op)
        scalars = _scalar_column(kind, self, other)
        return _foreach(fn, method, self, [], [scalars], inplace, keywords, as_cpu_reads, per_tensor_op)

    return kernel


# --- addcmul, addcdiv: pointwise's maths (self + value * (t1 op t2), addcmul's last step fused as CPU fuses it) -----


_TERNARY = {"addcmul": pointwise.addcmul, "addcdiv": pointwise.addcdiv}


def _ternary_kernel(name, fn, kind, inplace):
    method = _per_tensor_method(name, inplace)

    def per_tensor(t, t1, t2, value):
        return method(t, t1, t2, value=value)

    def kernel(self, tensor1, tensor2, scalars=1):
        if kind == "Tensor":  # one scalar per tensor, packed in a 1-d tensor
            scalars = _scalars_from_tensor(scalars, len(self))
        values = [scalars] * len(self) if kind == "Scalar" else scalars
        return _foreach(fn, per_tensor, self, [tensor1, tensor2], [values], inplace, checked_as=name)

    return kernel


# --- lerp: pointwise.lerp's maths (CPU's two-sided formula, fused as CPU fuses it) ---------------------------------


def _lerp_kernel(kind, inplace):
    method = _per_tensor_method("lerp", inplace)

    def kernel(self, tensors1, weight):
        if kind == "List":
            return _foreach(pointwise.lerp, method, self, [tensors1, weight], [], inplace)
        return _foreach(pointwise.lerp, method, self, [tensors1], [_scalar_column(kind, self, weight)], inplace,
                        checked_as="lerp")

    return kernel


# --- zero_, copy_, norm ----------------------------------------------------------------------------------------


@register("_foreach_zero_")
def foreach_zero_(self):
    _check_lists(self)
    for t in self:
        if t.device.type == "tpu":
            as_numpy(t)[...] = 0
        else:
            t.zero_()


@register("_foreach_copy_")
def foreach_copy_(self, src, non_blocking=False):
    """Every pair through ``_copy_from``'s maths, undispatched: this launch is the one charged, and a
    dispatched ``copy_`` would charge each pair again (FSDP's fp32-to-bf16 all-gather inputs did)."""
    _check_lists(self, src)
    for destination, source in zip(self, src):
        if is_tpu(destination) or is_tpu(source):
            copy_from(source, destination, non_blocking)
        else:
            destination.copy_(source, non_blocking)


def _norm(x, ord):
    """A vector norm accumulated in float64, so the stored result is correctly rounded."""
    x = np.abs(x.astype(np.float64, copy=False)).reshape(-1)
    if ord == 2:
        return math.sqrt(np.dot(x, x))
    if ord == 1:
        return float(x.sum())
    return float(x.max())


@register("_foreach_norm.Scalar")
def foreach_norm(self, ord=2, dtype=None):
    _check_lists(self)
    fast = (ord in (1, 2, math.inf) and dtype is None and _fast_path(self, [], [])
            and (ord != math.inf or all(t.numel() for t in self)))
    if not fast:
        return [torch.linalg.vector_norm(t, ord, dtype=dtype) for t in self]
    with np.errstate(all="ignore"):
        return [store(np.asarray(_norm(opmath_operand(t), ord)), t.dtype) for t in self]


# --- registration ----------------------------------------------------------------------------------------------


def _register_both(name, make_kernel, kind):
    """Registers the functional and the in-place overload of one kind."""
    suffix = "" if kind == "default" else f".{kind}"
    register(f"_foreach_{name}{suffix}")(make_kernel(inplace=False))
    register(f"_foreach_{name}_{suffix}")(make_kernel(inplace=True))


def register_tables():
    for name, fn in _UNARY.items():
        _register_both(name, lambda inplace, name=name, fn=fn: _unary_kernel(name, fn, inplace), "default")
    for name, fn in _BINARY.items():
        for kind in _overloads(f"{name}_"):
            maths = _NUMBER_MATHS.get(name, fn) if kind in ("Scalar", "ScalarList") else fn
            _register_both(name, lambda inplace, n=name, f=maths, k=kind: _binary_kernel(n, f, k, inplace), kind)
    for name, fn in _TERNARY.items():
        for kind in _overloads(f"{name}_"):
            _register_both(name, lambda inplace, n=name, f=fn, k=kind: _ternary_kernel(n, f, k, inplace), kind)
    for kind in _overloads("lerp_"):
        _register_both("lerp", lambda inplace, k=kind: _lerp_kernel(k, inplace), kind)


register_tables()
