"""Pointwise kernels: unary, binary and ternary ops with PyTorch broadcasting and type promotion.

Most ops are tables: an aten overload, the NumPy (or scipy.special) function that computes it, and
the rule that turns the operands' promoted dtype into the dtype it is computed in. One kernel factory
turns each row into a kernel. Structured ops are registered as their ``.out`` overload, where
PyTorch's meta function has already checked devices, resized ``out`` and picked its dtype, so the
functional, in-place and ``out=`` forms all work; their functional form also gets a kernel of its own
that skips PyTorch's structured wrapper in the common case (``functional_launch``). Non-structured
ops get all three forms here.

Semantics follow PyTorch, not NumPy, wherever the two differ: integer division by zero raises,
``remainder`` takes the divisor's sign, integers to negative powers give 0, NaN has no sign, shifts
past the bit width saturate. Reduced-precision floats compute in float32 and round once on store (a few ops
round every step, as CPU's loops do); a number or an operand of another dtype reaches them as CPU's
TensorIterator hands it over, rounded to the 16-bit format first unless CPU's kernel reads it as given
(``READS_ORIGINAL_SCALAR``, ``SCALARS_IN_DTYPE``).
"""

import dataclasses
import functools
import math

import ml_dtypes
import numpy as np
import scipy.special as special
import torch
from torch._prims_common import ELEMENTWISE_TYPE_PROMOTION_KIND, elementwise_dtypes

from .. import _C, _tensor
from .._C import cpu_loops
from .._C import special as vpu_special
from .._errors import (cpp_type_name, device_mismatch, found_dtype, not_implemented_for, numbers_as_tensors,
                       scalar_type_name, shape_mismatch, tensor_slots, value_overflow)
from .._tensor import numpy_dtype
from ._common import (all_contiguous, as_numpy, broadcast_shapes, castable, check_scalar_fits, empty, empty_with_array,
                      iterator_strides, operand, opmath_dtype, opmath_scalar_type, prepare_out, store, through_math_bits,
                      write)
from ._overlap import check_no_internal_overlap, check_no_partial_overlap
from .._cost import charged
from ._registry import KERNELS, default_kernel, register

aten = torch.ops.aten
vpu = _C.vpu

# The transcendental ufuncs, float32 computed in float64 and rounded once (``vpu.rounded_once``): NumPy's own float32
# loops are chosen by the host (SVML on AVX-512), so their bits were the host's. docs/numerics.md says how close the
# correctly rounded value is to CPU's MKL and Sleef results.
(exp, exp2, expm1, log, log2, log10, real_log1p, sin, cos, tan, arcsin, arccos, arctan, arctan2, sinh, cosh, tanh,
 arcsinh, arccosh, arctanh, float_power) = map(vpu.rounded_once, (
    np.exp, np.exp2, np.expm1, np.log, np.log2, np.log10, np.log1p, np.sin, np.cos, np.tan, np.arcsin, np.arccos,
    np.arctan, np.arctan2, np.sinh, np.cosh, np.tanh, np.arcsinh, np.arccosh, np.arctanh, np.power))

# --------------------------------------------------------------------------------------------------
# Dtype rules


def keep(dtype):
    return dtype


def to_float(dtype):
    """Integer and bool operands compute in the default float dtype (PyTorch's "float ops")."""
    return dtype if dtype.is_floating_point or dtype.is_complex else torch.get_default_dtype()


def to_bool(dtype):
    return torch.bool


def common_dtype(*operands):
    """PyTorch's promoted dtype of tensors and Python scalars (scalars are "weak")."""
    operands = [o for o in operands if o is not None]
    if len(operands) == 1:
        only = operands[0]
        return only.dtype if isinstance(only, torch.Tensor) else torch.result_type(torch.tensor(0), only)
    if len(operands) == 2:
        return torch.result_type(*operands)
    return elementwise_dtypes(*operands, type_promotion_kind=ELEMENTWISE_TYPE_PROMOTION_KIND.DEFAULT)[1]


def broadcast_shape(*operands, **options):
    shapes = [tuple(o.shape) for o in operands if isinstance(o, torch.Tensor)]
    if len(shapes) == 1 or (len(shapes) == 2 and shapes[0] == shapes[1]):  # nothing to broadcast
        return shapes[0]
    return broadcast_shapes(*shapes)


def iterator_layout(operands):
    """The strides TensorIterator gives the elementwise result of ``operands`` (None: contiguous)."""
    return None if all_contiguous(operands) else iterator_strides(broadcast_shape(*operands), operands)


def new_output(operands, dtype):
    """A new tensor for the elementwise result of ``operands``, laid out as TensorIterator lays it out."""
    return empty(broadcast_shape(*operands), dtype, iterator_layout(operands))


def like_self_layout(operands):
    """The strides of ``empty_like(self)`` (ops whose CPU kernel allocates that way before computing into it, as
    hardtanh does): ``self``'s own strides even where TensorIterator's fast setup would have chosen contiguous
    ones (a one-pixel channels-last tensor)."""
    self = operands[0]
    return None if self.stride() == _tensor.contiguous_strides(self.shape) else iterator_strides(self.shape, (self,))


def complex_to_real_layout(operands):
    """CPU computes a complex-to-real op (angle) into a complex temporary and copies the real parts into a
    contiguous result; a real input's result is laid out as any elementwise one."""
    return None if operands[0].is_complex() else iterator_layout(operands)


def check_inplace(self, dtype, shape):
    """What the structured meta function checks before an in-place op writes into ``self``."""
    castable(dtype, self.dtype)
    if tuple(shape) != tuple(self.shape):
        raise shape_mismatch(self.shape, shape)


def require(condition, dtype, kernel_name):
    """PyTorch's AT_DISPATCH error for a dtype a kernel has no loop for."""
    if not condition:
        raise not_implemented_for(kernel_name, dtype)


def is_integral(dtype):
    return not (dtype.is_floating_point or dtype.is_complex)


# --------------------------------------------------------------------------------------------------
# Operands and results


def as_compute(value, dtype):
    """A tensor or scalar operand as a NumPy array of the compute dtype (no copy when it already is)."""
    return widened(operand(value), dtype)


def widened(array, dtype):
    """An array or number as an array of ``dtype`` (no copy when it already is)."""
    if isinstance(array, np.ndarray):
        return array if array.dtype == dtype else array.astype(dtype)
    return np.array(array).astype(dtype)  # wraps out-of-range integers as C++ static_cast does


# CPU's TensorIterator converts every input operand to the common dtype before the kernel runs, so a number
# (a Python scalar, a 0-dim tensor) or a tensor of another dtype that meets a bf16/fp16 tensor is rounded to
# 16 bits before the float32 (opmath) arithmetic: x_fp16 + 0.3 adds fp16(0.3) = 0.2998... Only the kernels
# that read a lone operand back from before that conversion (iter.original_scalar_value: mul and the
# divisions, on reduced floats) keep it in opmath. Operator -> the position of that operand (CPU's input 2).
READS_ORIGINAL_SCALAR = {"mul": 1, "div": 1, "floor_divide": 1}

# Scalar arguments (not operands) CPU's kernel converts to the tensors' dtype (``alpha.to<scalar_t>()`` in the
# generated add kernel, ``lambd.to<scalar_t>()`` in the shrink kernels) rather than to opmath: rounded like the
# operands above. Operator -> the argument's name. (softshrink's own forward keeps its lambd in opmath.)
SCALARS_IN_DTYPE = {"add": "alpha", "sub": "alpha", "hardshrink": "lambd", "hardshrink_backward": "lambd",
                    "softshrink_backward": "lambd", "logit": "eps"}

# Scalar arguments CPU's kernel converts with c10's checked ``Scalar::to<T>()``, which refuses a value out of T's
# range ("value cannot be converted to type c10::Half without overflow"): T is the compute dtype itself (SCALAR_T:
# ``alpha.to<scalar_t>()``) or its opmath type (OPMATH: float for bf16/fp16). Operator -> {argument: T}.
SCALAR_T, OPMATH = "scalar_t", "opmath"
CHECKED_SCALARS = {
    "add": {"alpha": SCALAR_T}, "sub": {"alpha": SCALAR_T}, "rsub": {"alpha": SCALAR_T},
    "clamp": {"min": SCALAR_T, "max": SCALAR_T}, "clamp_min": {"min": SCALAR_T}, "clamp_max": {"max": SCALAR_T},
    "threshold": {"threshold": OPMATH, "value": SCALAR_T}, "threshold_backward": {"threshold": OPMATH},
    "hardtanh_backward": {"min_val": OPMATH, "max_val": OPMATH},
    "hardshrink": {"lambd": SCALAR_T}, "hardshrink_backward": {"lambd": SCALAR_T},
    "softshrink_backward": {"lambd": SCALAR_T}, "logit": {"eps": SCALAR_T},
    "elu": {"alpha": OPMATH, "scale": OPMATH, "input_scale": OPMATH},
    "elu_backward": {"alpha": OPMATH, "scale": OPMATH, "input_scale": OPMATH},
    "leaky_relu": {"negative_slope": OPMATH}, "leaky_relu_backward": {"negative_slope": OPMATH},
    "softplus": {"beta": OPMATH, "threshold": OPMATH}, "softplus_backward": {"beta": OPMATH, "threshold": OPMATH},
    "addcmul": {"value": OPMATH}, "addcdiv": {"value": OPMATH}, "lerp": {"weight": OPMATH},
}

_ROUNDED_FIRST = frozenset({torch.bfloat16, torch.float16, torch.float8_e4m3fn, torch.float8_e5m2})
# formats a single non-NaN number reaches as c10 converts it, through float32 to the nearest even value, which
# NumPy's and ml_dtypes' own casts also do (fp8 saturates on CPU, and NaN payloads are c10's: cast_into)
# (the largest finite value: past it c10 gives inf, which cast_into replays without NumPy's overflow warning)
_PLAIN_NUMBER_LIMIT = {torch.bfloat16: float(ml_dtypes.finfo(ml_dtypes.bfloat16).max),
                       torch.float16: float(np.finfo(np.float16).max)}


def is_lone_value(value):
    """A number, or a tensor whose one value is broadcast everywhere (TensorIterator's ``is_scalar``)."""
    return not isinstance(value, torch.Tensor) or all(
        stride == 0 for size, stride in zip(value.shape, value.stride()) if size != 1)


def read_as_given(name, promoted):
    """The position of the operand of ``name`` (an operator) that CPU's kernel reads as given, before the
    conversion to the common dtype, or None: the slot READS_ORIGINAL_SCALAR names, holding a lone value."""
    position = READS_ORIGINAL_SCALAR.get(name)
    if position is None or position >= len(promoted) or not is_lone_value(promoted[position]):
        return None
    return position


def keeps_number(name, position):
    """Whether CPU's kernel of ``name`` reads a number in operand slot ``position`` as given (not rounded)."""
    return READS_ORIGINAL_SCALAR.get(name) == position


def as_converted(array, dtype, compute, as_given=False):
    """An operand (array or number) converted to ``dtype`` as CPU converts its inputs, then widened to the
    ``compute`` dtype: a reduced float rounds a value of another dtype first (c10's casts, double through
    float), and widening it back is exact. An operand the kernel reads ``as_given`` is only widened."""
    if dtype in _ROUNDED_FIRST and not as_given:
        array = np.asarray(array)
        narrow = numpy_dtype(dtype)
        if array.dtype != narrow:
            if array.ndim == 0 and dtype in _PLAIN_NUMBER_LIMIT and array.dtype.kind in "biuf" and \
                    abs(float(array)) <= _PLAIN_NUMBER_LIMIT[dtype]:  # neither NaN nor past the format's range
                array = np.asarray(np.float32(array)).astype(narrow)  # a number: 50 us less than cast_into
            else:
                rounded = np.empty(array.shape, narrow)
                _C.dtypes.cast_into(rounded, array, _tensor.DTYPE_NAME[dtype])
                array = rounded
    return widened(array, compute)


def scalar_in_dtype(value, dtype):
    """A Scalar argument CPU converts to ``dtype`` (SCALARS_IN_DTYPE), as a Python number."""
    if dtype not in _ROUNDED_FIRST or isinstance(value, bool) or not isinstance(value, (int, float)):
        return value  # bools and complex numbers keep their own rules; a symbolic value is not known yet
    return as_converted(value, dtype, np.dtype(np.float64)).item()


def with_scalars_in_dtype(schema, args, kwargs, dtype):
    """``args`` and ``kwargs`` of a call to ``schema``'s op with the Scalar argument SCALARS_IN_DTYPE names for it
    converted to ``dtype`` as CPU's kernel converts it (rounded, for a reduced float)."""
    name = SCALARS_IN_DTYPE.get(schema.name.removeprefix("aten::"))
    if name is None or dtype not in _ROUNDED_FIRST:
        return args, kwargs
    if name in kwargs:
        return args, {**kwargs, name: scalar_in_dtype(kwargs[name], dtype)}
    position = [argument.name for argument in schema.arguments].index(name)
    if position < len(args):
        args = (*args[:position], scalar_in_dtype(args[position], dtype), *args[position + 1:])
    return args, kwargs


def checked_scalars(schema):
    """(position, name, target) of the arguments of ``schema``'s op that CHECKED_SCALARS names."""
    targets = CHECKED_SCALARS.get(schema.name.removeprefix("aten::"), {})
    return tuple((position, argument.name, targets[argument.name])
                 for position, argument in enumerate(schema.arguments) if argument.name in targets)


def check_scalar_conversions(checked, args, kwargs, dtype):
    """c10's overflow check on each Scalar argument ``checked`` (from ``checked_scalars``) names, converted to
    ``dtype`` or to its opmath type; Tensor arguments in those places (lerp's weight) are not Scalars."""
    for position, name, target in checked:
        check_scalar_value(kwargs[name] if name in kwargs else args[position] if position < len(args) else None,
                           target, dtype)


def check_scalar_value(value, target, dtype):
    """c10's overflow check of one Scalar argument converted as CHECKED_SCALARS' ``target`` says for ``dtype``."""
    if isinstance(value, (int, float, complex)):
        check_scalar_fits(value, opmath_scalar_type(dtype) if target == OPMATH else dtype)


def scalar(value, like):
    """A Scalar argument (alpha, beta, threshold, ...) in the compute dtype of ``like``; one already converted
    (foreach converts a list's alpha once) as it is."""
    if value.__class__ is np.ndarray and value.dtype == like.dtype:
        return value
    return np.array(value).astype(like.dtype)


def zero_where(condition, values, out=None):
    """``np.where(condition, 0, values)`` bit for bit (+0.0 where dropped, NaN and inf kept elsewhere), as a
    bit mask: np.where branches per element and is several times slower on an irregular mask, which is
    what activation backwards (ReLU's above all) see."""
    values = np.asarray(values)
    bits = np.dtype(f"i{values.dtype.itemsize}")
    keep = np.array(condition, dtype=bits)  # an array even for 0-d operands
    keep -= 1  # all ones where the values are kept, zeros where dropped: one pass, no logical_not
    if out is not None:
        np.bitwise_and(values.view(bits), keep, out=out.view(bits))
        return out
    return np.asarray(np.bitwise_and(values.view(bits), keep)).view(values.dtype)


def select_bits(condition, if_true, if_false, out=None):
    """``np.where(condition, if_true, if_false)`` bit for bit, for arrays of one dtype whose broadcast shape is
    ``if_true``'s, as bit masks (``if_false ^ ((if_true ^ if_false) & mask)``): np.where branches per element.
    Written into ``out`` when given (which may be ``if_true``: each element is read before it is written)."""
    if_true, if_false = np.asarray(if_true), np.asarray(if_false)
    bits = np.dtype(f"i{if_true.dtype.itemsize}")
    mask = np.asarray(condition, dtype=bits)
    np.negative(mask, out=mask)  # all ones where the condition holds
    false_bits = if_false.view(bits)
    blended = np.asarray(np.bitwise_xor(if_true.view(bits), false_bits, out=None if out is None else out.view(bits)))
    blended &= mask
    blended ^= false_bits
    return blended.view(if_true.dtype)


def own_16_bit_maths(function):
    """Marks maths that take bf16/fp16 arrays as they are, widening and rounding as CPU's loops store them (clamp's
    NaNs, lane by lane): their kernels and foreach pass 16-bit operands as they are, not widened to float32."""
    function.own_16_bit_maths = True
    return function


def writes_out(function):
    """Marks maths that take ``out=`` and write their result there in their last step, after every read of
    their operands (so ``out`` may be one of them): kernels then skip a temporary and its copy."""
    function.writes_out = True
    return function


def writes_into(function):
    """Whether ``function`` can write its result into a given array: a ufunc (called alone, with no other
    arguments) or maths that take ``out=``."""
    return isinstance(function, np.ufunc) or getattr(function, "writes_out", False)


def write_into(target, function, arrays, extras, options):
    """``function`` of ``arrays`` written straight into the NumPy ``target`` (of the compute dtype): the common case
    of ``compute_into``. False where it must go through a temporary (a ufunc given other arguments)."""
    if isinstance(function, np.ufunc):
        if extras or options:
            return False
        vpu.apply(function, *arrays, out=target)  # overlapping inputs stay on one thread
        return True
    with vpu.ignoring_fp_errors():
        function(*arrays, *extras, **(options or {}), out=target)
    return True


def compute_into(out, function, operands, dtype, extras=(), options=None, opmath=True, name=None):
    """Run ``function`` on the operands converted to ``dtype``'s opmath type and store into ``out``.

    ``name`` is the operator (``add``) whose CPU rules for numbers apply: each operand is converted to ``dtype``
    first (rounded, for a reduced float) but the one READS_ORIGINAL_SCALAR keeps. Absent optional operands
    (None) stay None.
    """
    compute = opmath_dtype(dtype) if opmath else numpy_dtype(dtype)
    given = read_as_given(name, operands)
    arrays = [None if value is None else as_converted(operand(value), dtype, compute, i == given)
              for i, value in enumerate(operands)]
    if out.dtype == dtype and writes_into(function):
        target = as_numpy(out)
        if target.dtype == compute and write_into(target, function, arrays, extras, options):
            return out
    with vpu.ignoring_fp_errors():
        result = function(*arrays, *extras, **(options or {}))
    if out.dtype != dtype and np.asarray(result).dtype == compute != numpy_dtype(dtype):
        result = _rounded_to(result, dtype)
    if out.dtype == torch.bfloat16:
        inputs = [operand(value) for value in operands if isinstance(value, torch.Tensor)]
        return write_rounded(out, result, inputs, name)
    return write(out, result)


# Which elements CPU's bf16 kernels convert in vectors, where it is not cpu_kernel_vec's AVX2 loop (VECTOR_BYTES),
# measured against torch 2.13 from where a float32 NaN comes out 0xFFFF (vectors) or 0x7FC0 (c10's scalar rounding):
# - the at::vml kernels (IMPLEMENT_FLOAT_KERNEL in UnaryOpsKernel.cpp): vec::map converts every element in vectors,
#   its last partial vector too, a strided input through a contiguous buffer;
VML_KERNELS = frozenset({
    "exp", "expm1", "log", "log2", "log10", "log1p", "sqrt", "sin", "cos", "tan", "asin", "acos", "atan", "tanh",
    "erf", "erfc", "erfinv", "lgamma", "i0", "ceil", "floor", "round", "trunc"})
# - kernels with an AVX-512 build (ALSO_REGISTER_AVX512_DISPATCH), whose vectors are 64 bytes on an AVX-512 CPU;
AVX512_KERNELS = frozenset({
    "exp2", "reciprocal", "sigmoid", "sinh", "cosh", "atanh", "silu", "elu", "hardswish", "hardswish_backward",
    "mish", "softplus"})
# - kernels with no vector loop (cpu_kernel), every element rounded by c10.
SCALAR_KERNELS = frozenset({"asinh", "acosh", "sinc", "special_i1", "special_i1e", "special_entr", "gelu"})


def kernel_vector_bytes(name):
    """The bytes of the vectors in which the CPU kernel of the op ``name`` converts its bf16 results: None where it
    converts every element in vectors (VML_KERNELS), 0 where none."""
    if name in VML_KERNELS:
        return None
    if name in SCALAR_KERNELS:
        return 0
    return AVX512_VECTOR_BYTES if name in AVX512_KERNELS else cpu_loops.VECTOR_BYTES


def write_rounded(out, result, inputs, name=None):
    """``write`` of the result of the op ``name``'s kernel, through ``store_result``."""
    store_result(as_numpy(out), result, _tensor.DTYPE_NAME[out.dtype], inputs, name)
    return out


def store_result(target, result, target_name, inputs, name=None):
    """A kernel's ``result`` converted into the array ``target`` (of dtype ``target_name``) as cast_into converts it;
    a float32 result into bf16 with its NaNs as the CPU kernel of the op ``name`` stores them for the input arrays
    ``inputs`` (``round_with_tail_nans``)."""
    result = np.asarray(result)
    if target_name != "bfloat16" or result.dtype != np.float32:
        _C.dtypes.cast_into(target, result, target_name)
    else:
        round_with_tail_nans(target, result, inputs, target, kernel_vector_bytes(name))


def _rounded_to(array, dtype):
    """``array`` (computed in ``dtype``'s wider opmath type) rounded to ``dtype``: TensorIterator stores a
    result in the common dtype before an ``out`` of another dtype receives it (half 33000 + 33000 is inf
    in a float64 ``out`` too)."""
    rounded = np.empty(np.shape(array), numpy_dtype(dtype))
    _C.dtypes.cast_into(rounded, array, _tensor.DTYPE_NAME[dtype])
    return rounded


# --------------------------------------------------------------------------------------------------
# The kernel factory


@dataclasses.dataclass(frozen=True)
class Maths:
    """What a pointwise overload computes, for callers that hold NumPy arrays (compiled programs): the
    first ``operands`` arguments promote to ``rule(common dtype)``, computed in its opmath type when
    ``opmath(*promoted)`` says so, by ``function(*arrays, *extras, **options)``; ``name`` is the operator
    whose CPU rules for numbers apply (``compute_into``); ``check(promoted, extras, kwargs)`` raises the error
    CPU gives for these arguments (alpha's type, a bool subtraction, a Scalar out of range); ``layout(promoted)``
    the strides of the new result the eager kernel makes (None: contiguous) where no meta function decides them
    (the ops registered by ``unstructured``)."""

    function: object
    operands: int
    rule: object
    opmath: object
    name: str
    check: object
    layout: object = None


MATHS = {}  # overload name -> Maths, filled by the two factories below


def _is_complex(dtype):
    return dtype.is_complex


def _is_bool(dtype):
    return dtype == torch.bool


# Inputs that structured ops' meta functions refuse, in their words, before the out's dtype or the kernel's dtype
# dispatch is looked at: overload -> (refused input dtypes, error class, message).
META_REFUSALS = {
    **{f"{name}.out": (_is_complex, NotImplementedError, f"{name} is not supported for complex inputs")
       for name in ("floor", "ceil", "trunc")},
    "sign.out": (_is_complex, NotImplementedError, "Unlike NumPy, torch.sign is not intended to support complex "
                 "numbers. Please use torch.sgn instead."),
    "signbit.out": (_is_complex, NotImplementedError, "signbit is not implemented for complex tensors."),
    **{f"{name}.out": (_is_complex, RuntimeError, f"{name} does not support complex inputs.")
       for name in ("isposinf", "isneginf")},
    **{f"{name}.out": (_is_complex, NotImplementedError, "clamp is not supported for complex types")
       for name in ("clamp", "clamp_min", "clamp_max")},  # with number bounds; tensor bounds meet maximum's dispatch
    "neg.out": (_is_bool, RuntimeError, "Negation, the `-` operator, on a bool tensor is not supported. If you are "
                "trying to invert a mask, use the `~` or `logical_not()` operator instead."),
}


# clamp's meta functions with number bounds promote an integer input by a floating bound, and refuse to write that
# back into the input itself (``clamp_min(x_int32, 1.37, out=x_int32)``) before the out's dtype check
PROMOTED_NOT_INTO_SELF = frozenset({"clamp.out", "clamp_min.out", "clamp_max.out"})


def refuse_complex_bounds(overload, self, bounds):
    """clamp's meta functions with number bounds and a complex number among them: ``clamp`` keeps a floating input's
    dtype and converts each bound to double, checked (an imaginary part overflows); an integral input that a
    complex bound promotes, and ``clamp_min``/``clamp_max`` (which promote by their bound), are refused as
    complex."""
    complex_bounds = [bound for bound in bounds if isinstance(bound, complex)]
    if not complex_bounds:
        return
    if overload != "clamp.out" or not self.dtype.is_floating_point:
        raise NotImplementedError("clamp is not supported for complex types")
    if any(bound.imag for bound in complex_bounds):
        raise value_overflow(torch.float64)


def real_clamp_bounds(overload, promoted):
    """The operands as clamp's meta function passes them on: a floating input's dtype is the result's, and a complex
    bound (its imaginary part zero, ``refuse_complex_bounds`` refused the others) is its real part."""
    if overload != "clamp.out":
        return promoted
    return tuple(bound.real if isinstance(bound, complex) else bound for bound in promoted)


def refuse_in_meta(overload, promoted, out=None):
    """Raise the meta function's refusal of ``promoted`` (the op's operands; its first is ``self``) written into
    ``out``, if ``overload``'s meta refuses them."""
    self = promoted[0]
    refusal = META_REFUSALS.get(overload)
    if refusal is not None and isinstance(self, torch.Tensor) and refusal[0](self.dtype):
        raise refusal[1](refusal[2])
    if overload in PROMOTED_NOT_INTO_SELF:
        refuse_complex_bounds(overload, self, promoted[1:])
    if out is self and overload in PROMOTED_NOT_INTO_SELF and not self.dtype.is_floating_point:
        bounds = [bound for bound in promoted[1:] if bound is not None]
        if not bounds:  # clamp's own check names the missing bounds, as CPU's does
            return
        promoted_dtype = functools.reduce(torch.promote_types, (torch.result_type(self, bound) for bound in bounds))
        if promoted_dtype != self.dtype:
            raise RuntimeError(f"result type {scalar_type_name(promoted_dtype)} can't be cast to the desired output "
                               f"type {cpp_type_name(self.dtype)}")


def structured(overload, function, operands=1, rule=keep, check=None, opmath=True, result=None,
               shape=None, exact_out=False, check_out=None, may_alias=False, check_in_meta=False):
    """Register ``function`` as the kernel of a structured op's ``.out`` overload.

    The first ``operands`` arguments take part in type promotion; the remaining positional and keyword
    arguments (other than the output) are passed to ``function`` as they are. ``out=`` calls reach the
    kernel directly, without the meta function, so it resizes and checks ``out`` itself (``check_out(out,
    *operands)``: a meta function's own checks of its output; ``may_alias``: an expanded output is
    accepted, for idempotent ops whose iterator skips the overlap check); ``exact_out``
    ops (PyTorch's plain unary ops) accept only an ``out`` of the result dtype, which CPU's meta function
    checks before its kernel's dispatch checks the input's (``check``), unless ``check_in_meta`` (the meta
    function itself makes ``check``: softshrink's); before both, the meta function's refusals of the input
    (``META_REFUSALS``), which ``out=`` calls reaching the kernel directly would otherwise skip.
    """
    result = result or rule
    opmath = opmath and not getattr(function, "own_16_bit_maths", False)  # the maths widen 16-bit values themselves
    schema = resolve(overload)._schema
    out_name = schema.arguments[-1].name
    scalars_in_dtype = schema.name.removeprefix("aten::") in SCALARS_IN_DTYPE
    scalar_checks = checked_scalars(schema)

    def check_arguments(dtype, promoted, extras, kwargs):
        """The op's dtype check and its Scalars' conversions to the compute ``dtype``."""
        if check is not None:
            check(dtype, *promoted, *extras, **kwargs)
        if scalar_checks:
            check_scalar_conversions(scalar_checks, (*promoted, *extras), kwargs, dtype)

    def checked_dtypes(promoted, extras, kwargs):
        """(compute dtype, result dtype), once the op's dtype check and its Scalars' conversions have passed."""
        common = common_dtype(*promoted)
        dtype = rule(common)
        check_arguments(dtype, promoted, extras, kwargs)
        return dtype, result(common)

    def check_exact_out(out, promoted):
        """The meta function's checks of ``out``: a predicate's bool dtype, the iterator's overlap check, the dtype."""
        result_dtype = result(common_dtype(*promoted))
        if result is to_bool and out.dtype != torch.bool:  # the predicates' meta functions say so in their words
            raise RuntimeError(f"{overload.partition('.')[0]} does not support non-boolean outputs.")
        if not may_alias:
            check_no_internal_overlap(out)
        if out.dtype != result_dtype:
            raise found_dtype(out.dtype, result_dtype)

    def kernel(*args, **kwargs):
        out = kwargs.pop(out_name)
        promoted, extras = args[:operands], args[operands:]
        refuse_in_meta(overload, promoted, out)
        promoted = real_clamp_bounds(overload, promoted)
        if exact_out and not check_in_meta:
            check_exact_out(out, promoted)
        dtype, result_dtype = checked_dtypes(promoted, extras, kwargs)
        if check_out is not None:
            check_out(out, *promoted)
        if exact_out and check_in_meta:
            check_exact_out(out, promoted)
        prepare_out(out, (shape or broadcast_shape)(*promoted, *extras, **kwargs), result_dtype, promoted,
                    may_alias=may_alias, layout_from=promoted)
        if scalars_in_dtype:
            args, kwargs = with_scalars_in_dtype(schema, args, kwargs, dtype)
        return compute_into(out, function, promoted, dtype, args[operands:], kwargs, opmath, name)

    # tensors of one float32 or float64 dtype (each its own opmath type) computed in it, into a result of it: nothing
    # to promote, refuse (the meta refusals are of complex and bool inputs), round or convert, so maths that can
    # write their result into an array write it into the new tensor's (exp, neg, sigmoid, gelu and their backwards)
    direct = result is rule and rule in (keep, to_float) and not scalars_in_dtype and writes_into(function)

    def into_new(*args, **kwargs):
        """A functional call whose tensor operands all have one shape: its result in a new contiguous tensor
        of that shape, with no ``out`` to check."""
        promoted, extras = args[:operands], args[operands:]
        if direct and native_floats_alike(promoted):
            dtype = promoted[0].dtype
            check_arguments(dtype, promoted, extras, kwargs)
            tensor, target = empty_with_array(promoted[0].shape, dtype)
            if write_into(target, function, [as_numpy(value) for value in promoted], extras, kwargs):
                return tensor
            return compute_into(tensor, function, promoted, dtype, extras, kwargs, opmath, name)
        refuse_in_meta(overload, promoted)
        promoted = real_clamp_bounds(overload, promoted)
        dtype, result_dtype = checked_dtypes(promoted, extras, kwargs)
        output_shape = next(value.shape for value in promoted if isinstance(value, torch.Tensor))
        if scalars_in_dtype:
            args, kwargs = with_scalars_in_dtype(schema, args, kwargs, dtype)
        return compute_into(empty(output_shape, result_dtype), function, promoted, dtype, args[operands:], kwargs,
                            opmath, name)

    name = overload.partition(".")[0]
    # the layout of a structured op's result is its meta function's, which AOTAutograd traced
    MATHS[overload] = Maths(function, operands, rule, lambda *promoted: opmath, name, checked_dtypes)
    register(overload)(kernel)
    twin = functional_twin(overload)
    wrapper = default_kernel(twin) if twin is not None and shape is None else None
    if wrapper is not None:
        slow = general_functional(resolve(twin), wrapper)
        register(twin, charge=False)(functional_launch(into_new, twin, operands, slow))
    return kernel


# Hot ops whose functional overloads have kernels of their own (``hot_binary`` below).
HOT_BINARY = {"add": (np.add, keep), "sub": (np.subtract, keep), "mul": (np.multiply, keep),
              "div": (np.true_divide, to_float)}


def functional_twin(out_overload):
    """The functional overload PyTorch computes through the structured ``out_overload`` ('sigmoid' for
    'sigmoid.out', 'pow.Tensor_Scalar' for 'pow.Tensor_Scalar_out'), when it takes the same arguments
    less ``out``; None for the hot ops and wherever the names do not pair up."""
    packet, _, name = out_overload.partition(".")
    if packet in HOT_BINARY:
        return None
    twin_name = "default" if name in ("out", "grad_input") else name.removesuffix("_out")
    if twin_name == name or not hasattr(getattr(aten, packet), twin_name):
        return None
    out_schema, twin_schema = resolve(out_overload)._schema, getattr(getattr(aten, packet), twin_name)._schema
    if [a.name for a in twin_schema.arguments] != [a.name for a in out_schema.arguments if not a.is_out]:
        return None
    return packet if twin_name == "default" else f"{packet}.{twin_name}"


def general_functional(functional_op, structured_wrapper):
    """A functional call outside the fast path, through PyTorch's structured wrapper. The dispatcher hands
    wrapped numbers to Python kernels as Python numbers, and the wrapper takes only tensors: such a number
    goes back in as a 0-d CPU tensor, which beside a tensor with dims promotes as the number does (by category,
    never by its dtype); beside 0-d tensors only it would not, and ``functional_launch`` keeps those calls."""
    slots = tensor_slots(functional_op)

    def call(*args, **kwargs):
        return structured_wrapper(*numbers_as_tensors(args, slots), **kwargs)

    return call


_FAST_FLOATS = frozenset({torch.float32, torch.float64, torch.bfloat16, torch.float16})


def numbers_beside_scalars(operands):
    """Whether ``operands`` hold Python numbers and, beside them, only 0-d tensors (at least one)."""
    tensors = [value for value in operands if isinstance(value, torch.Tensor)]
    return 0 < len(tensors) < len(operands) and all(value.dim() == 0 for value in tensors)


def functional_launch(into_new, name, operands, structured_wrapper):
    """The functional overload of a structured op without PyTorch's structured wrapper (its meta function,
    then an ``empty`` and the ``.out`` kernel through the dispatcher: several microseconds a launch).

    The commonest call (floating tpu tensors of one shape, contiguous) is one charged launch of ``name``
    that computes into a new contiguous tensor (``into_new``); any other call (broadcasting, strided
    layouts, integer or bool dtypes, CPU operands) keeps the structured wrapper, whose meta function picks
    the output's strides and raises PyTorch's errors. Numbers beside 0-d tensors of any dtype take the launch too:
    the wrapper would see each number as a 0-d tensor of its own dtype (``general_functional``), which among 0-d
    tensors promotes by its dtype, where a number promotes by its category only (a 0-d int8 tensor ``& 1`` is
    int8, not int64); with nothing to lay out or broadcast, ``into_new`` promotes them as CPU does."""

    launch = charged(into_new, name)

    def other(args, kwargs):
        """A call the one-shape float tensors' test refused: numbers beside 0-d tensors launch, the rest is wrapped."""
        if numbers_beside_scalars(args[:operands]):
            return launch(*args, **kwargs)
        return structured_wrapper(*args, **kwargs)

    def functional(*args, **kwargs):
        # tensors alone take the launch or the wrapper by this test; only a call with numbers asks whether its
        # tensors are all 0-d (``numbers_beside_scalars``), which takes the launch whatever they are
        shape, numbers = None, False
        for value in args[:operands]:
            if isinstance(value, torch.Tensor):
                if (value.dtype not in _FAST_FLOATS or value.is_cpu or not value.is_contiguous()
                        or (shape is not None and value.shape != shape)):
                    return other(args, kwargs)
                shape = value.shape
            else:
                numbers = True
        # beside a number, a tensor contiguous only by its size-1 dims keeps its strides (all_contiguous)
        if shape is None or (numbers and not all_contiguous(args[:operands])):
            return other(args, kwargs)
        return launch(*args, **kwargs)

    return functional


def _check_unary_out(input_dtype, result_dtype, out):
    """A plain unary op's ``out`` has the result's dtype, except where a complex input gives a real result
    (abs): then CPU takes any real ``out`` that result casts to, or a complex one of the input's own dtype.
    The iterator's overlap check of ``out`` comes before its dtype check (after abs's cast check)."""
    if input_dtype.is_complex and not result_dtype.is_complex:
        if out.dtype.is_complex:
            if out.dtype == input_dtype:
                return
        else:
            castable(result_dtype, out.dtype)
            return
    check_no_internal_overlap(out)
    raise found_dtype(out.dtype, result_dtype)


def native_floats_alike(operands):
    """Whether ``operands`` are tensors of one float32 or float64 dtype (each its own opmath type) and one shape,
    none on the CPU nor a negative view: nothing to promote, broadcast or convert."""
    first = operands[0]
    return isinstance(first, torch.Tensor) and first.dtype in _NATIVE_SAME and all(
        isinstance(t, torch.Tensor) and t.dtype is first.dtype and t.shape == first.shape and not t.is_cpu
        and not t.is_neg() for t in operands)


def unstructured(function, *overloads, operands=1, rule=keep, result=None, check=None, exact_out=False,
                 opmath=lambda *promoted: True, layout=iterator_layout, check_before_out=False, result_like=None):
    """Register the given functional, in-place and ``out=`` overloads of a non-structured op.

    Their schemas tell them apart; each one does what the structured meta function would have done
    (dtype, broadcast shape, in-place castability) and then runs ``function`` like ``structured``,
    in opmath unless ``opmath(*promoted operands)`` says otherwise. The functional overload's result
    is laid out with the strides ``layout(promoted operands)`` gives. An ``exact_out`` op's ``out=`` overload checks
    the out's dtype before ``check`` (TensorIterator's unary_op, then the kernel's dispatch), unless
    ``check_before_out`` (the op's own checks come before it builds its iterator, so before the out's dtype and
    overlap checks: hardtanh's legacy rules). With ``result_like`` (an operand's index) the functional result has
    that operand's dtype, the common dtype's result cast to it: a backward CPU allocates with ``input.options()``.
    """
    result = result or rule
    name = overloads[0].partition(".")[0]
    schema = resolve(overloads[0])._schema  # the overloads' arguments before ``out`` are alike
    scalars_in_dtype = schema.name.removeprefix("aten::") in SCALARS_IN_DTYPE
    scalar_checks = checked_scalars(schema)
    out_name = next((argument.name for overload in overloads for argument in resolve(overload)._schema.arguments
                     if argument.is_out), None)  # "out", or a backward's "grad_input"

    def check_arguments(dtype, args, kwargs):
        if check is not None:
            check(dtype, *args, **kwargs)
        if scalar_checks:
            check_scalar_conversions(scalar_checks, args, kwargs, dtype)

    def run(out, args, kwargs):
        promoted = args[:operands]
        dtype = rule(common_dtype(*promoted))
        check_arguments(dtype, args, kwargs)
        if scalars_in_dtype:
            args, kwargs = with_scalars_in_dtype(schema, args, kwargs, dtype)
        return compute_into(out, function, promoted, dtype, args[operands:], kwargs, opmath(*promoted), name)

    # maths that keep their operands' dtype and write their result in place: operands of one float32/float64
    # dtype and shape (ReLU, ReLU6 and their backwards in every step) need none of ``run``'s promotion,
    # conversion or temporaries, so the functional overload writes them straight into its new tensor
    direct = rule is keep and result is keep and getattr(function, "writes_out", False)

    def functional(*args, **kwargs):
        promoted = args[:operands]
        if direct and native_floats_alike(promoted):
            dtype = promoted[0].dtype
            check_arguments(dtype, args, kwargs)  # no scalar to round: float32 and float64 are not reduced floats
            out = empty(broadcast_shape(*promoted), dtype, layout(promoted))
            with vpu.ignoring_fp_errors():
                function(*map(as_numpy, promoted), *args[operands:], **kwargs, out=as_numpy(out))
            return out
        result_dtype = result(common_dtype(*promoted)) if result_like is None else promoted[result_like].dtype
        return run(empty(broadcast_shape(*promoted), result_dtype, layout(promoted)), args, kwargs)

    def inplace(self, *args, **kwargs):
        promoted = (self, *args[:operands - 1])
        check_inplace(self, result(common_dtype(*promoted)), broadcast_shape(*promoted))
        check_no_internal_overlap(self)
        for value in promoted[1:]:  # TensorIterator's build, before the kernel looks at dtypes
            check_no_partial_overlap(self, value)
        return run(self, (self, *args), kwargs)

    def out_variant(*args, **kwargs):
        out = kwargs.pop(out_name)
        common = common_dtype(*args[:operands])
        expected = result(common)
        if check_before_out:  # before the out's dtype and its overlap (an expanded out), both the iterator's
            check_arguments(rule(common), args, kwargs)
        if exact_out and out.dtype != expected:
            _check_unary_out(common, expected, out)
        prepare_out(out, broadcast_shape(*args[:operands]), expected, args[:operands], layout_from=args[:operands])
        return run(out, args, kwargs)

    for overload in overloads:
        MATHS[overload] = Maths(function, operands, rule, opmath, name, lambda promoted, extras, kwargs: check_arguments(
            rule(common_dtype(*promoted)), (*promoted, *extras), kwargs), layout)
        schema = resolve(overload)._schema
        if any(argument.is_out for argument in schema.arguments):
            register(overload)(out_variant)
        elif schema.arguments[0].alias_info is not None and schema.arguments[0].alias_info.is_write:
            register(overload)(inplace)  # add_, __ilshift__, ...: self is written
        else:
            register(overload)(functional)


def resolve(overload):
    name, _, overload_name = overload.partition(".")
    return getattr(getattr(aten, name), overload_name or "default")


# --------------------------------------------------------------------------------------------------
# NumPy formulas where PyTorch's semantics differ from NumPy's


def sign(x):
    if x.dtype == np.bool_:
        return x.copy()
    return (x > 0).astype(x.dtype) - (x < 0).astype(x.dtype)  # NaN -> 0, -0.0 -> 0


@writes_out
def absolute(x, out=None):
    """|x|; a complex magnitude as CPU's std::abs gives it, hypot's (NumPy's complex absolute rounds otherwise)."""
    if x.dtype.kind == "c":
        return np.hypot(x.real, x.imag, out=out)
    return np.absolute(x, out=out)


def sgn(x):
    if x.dtype.kind != "c":
        return sign(x)
    magnitude = absolute(x)
    return np.where(magnitude == 0, 0, x / np.where(magnitude == 0, 1, magnitude))


def rsqrt(x):
    return np.reciprocal(np.sqrt(x))


@writes_out
def sigmoid(x, out=None):
    return np.reciprocal(1 + exp(-x), out=out)


def frac(x):
    return x - np.trunc(x)


def round_decimals(x, decimals=0):
    if decimals == 0:
        return np.rint(x)
    ten_pow = scalar(10.0 ** abs(decimals), x)
    if decimals < 0:
        return np.rint(x / ten_pow) * ten_pow
    return np.rint(x * ten_pow) / ten_pow


def integer_identity(function):
    """Rounding ops leave integers untouched."""

    def rounded(x):
        return x.copy() if x.dtype.kind in "biu" else function(x)

    rounded.__name__ = function.__name__
    return rounded


def signbit(x):
    return np.signbit(x) if x.dtype.kind == "f" else x < 0


def isnan(x):
    return np.isnan(x) if x.dtype.kind in "fc" else np.zeros(x.shape, np.bool_)


def bitwise_not(x):
    return np.invert(x)


def logical_not(x):
    return x == 0


def angle(x):
    if x.dtype.kind == "c":
        return arctan2(x.imag, x.real)  # np.angle's own float32 arctan2 depends on the host (see arctan2)
    return np.where(np.isnan(x), x, np.where(x < 0, scalar(math.pi, x), scalar(0, x)))


def sinc(x):
    product = x * scalar(math.pi, x)
    return np.where(x == 0, scalar(1, x), sin(product) / np.where(x == 0, 1, product))


@writes_out
def logit(x, eps=None, out=None):
    """bf16 NaNs as CPU stores them: 0xFFFF where its kernel runs the contiguous path (one contiguous row, ``out``
    as laid out when given), c10's 0x7FC0 from its element-by-element loop."""
    given = x
    if eps is not None and not math.isnan(eps):  # a NaN eps clamps nothing, as on CPU
        low = scalar(eps, x)  # CPU's bounds: eps and 1 - eps in x's dtype (np.clip would widen bf16)
        x = clamp(x, low, np.ones((), x.dtype) - low)
    result = np.asarray(log(x / (1 - x)))
    if x.dtype == ml_dtypes.bfloat16:
        nans = np.isnan(result)
        if nans.any():
            result.view(np.uint16)[nans] = (BFLOAT16_VECTOR_NAN if cpu_loops.is_one_contiguous_row(out, (given,))
                                            else _C.dtypes.BFLOAT16_SCALAR_NAN)
    if out is None:
        return result
    out[...] = result
    return out


def digamma(x):
    # PyTorch: digamma(+-0) = -+inf, as the limit from the other side of the pole
    return np.where(x == 0, np.copysign(scalar(np.inf, x), -x), special.psi(x))


def lgamma(x):
    return np.where(np.isneginf(x), -x, special.gammaln(x))  # PyTorch: lgamma(-inf) = inf


def polygamma(x, n):
    return digamma(x) if n == 0 else special.polygamma(n, x).astype(x.dtype)


def nan_to_num(x, nan, posinf, neginf):
    if x.dtype.kind not in "fc":
        return x.copy()
    return np.nan_to_num(x, nan=nan, posinf=posinf, neginf=neginf)


def nan_to_num_defaults(dtype, nan, posinf, neginf):
    """Infinities become the largest finite value of the tensor's own dtype (bf16's, not float32's);
    complex tensors replace in each part, with the limits of their real dtype."""
    if not (dtype.is_floating_point or dtype.is_complex):
        return nan, posinf, neginf
    info = ml_dtypes.finfo(numpy_dtype(dtype.to_real()))
    return (0.0 if nan is None else nan, float(info.max) if posinf is None else posinf,
            float(info.min) if neginf is None else neginf)


# Binary


def _scaled(b, alpha):
    """``alpha * b`` as CPU's add/sub kernel computes it: a complex ``b`` is multiplied even by 1, which
    turns an infinite part into NaN as CPU does ((1+0j) * (nan-infj) is nan+nanj)."""
    return b if alpha == 1 and not np.iscomplexobj(b) else np.multiply(scalar(alpha, b), b)


@functools.cache
def cpu_fuses_multiply_add():
    """Whether CPU's build contracts a product and a sum into one FMA: its AVX2/AVX512 kernels do (``vec::fmadd``,
    and the compiler in their loops); under ATEN_CPU_CAPABILITY=default they round twice."""
    return torch.backends.cpu.get_cpu_capability() != "DEFAULT"


def _fused(dtype, alpha=1):
    """Whether CPU's fused ``alpha * b + a`` (vec::fmadd) can differ from a rounded product and sum, for ``b`` of
    the NumPy ``dtype``: float32 and float64 (16-bit operands' products are exact in float32) by a finite
    ``alpha`` other than 0 and +-1 (a power of two's product is exact too, until it overflows or underflows).
    ``alpha`` is a Python number, or a 0-d array foreach converted once for its list."""
    if not _fuses_by_dtype(dtype):
        return False
    if alpha.__class__ is np.ndarray:
        alpha = alpha.item()
    return isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha not in (0, 1, -1)


_FUSED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _negated(alpha):
    """c10's ``-alpha`` of sub: the number is negated, then converted, so a complex alpha made from a real number
    keeps a +0 imaginary part (foreach's alpha arrives converted: 0 - alpha gives that +0, -alpha would not)."""
    if alpha.__class__ is np.ndarray and alpha.dtype.kind == "c":
        return 0 - alpha
    return -alpha


@writes_out
def add(a, b, alpha=1, out=None):
    """``a + alpha * b``, with one rounding as CPU's kernel fuses it."""
    if _fused(np.asarray(b).dtype, alpha):
        return vpu.fused_multiply_add(scalar(alpha, np.asarray(b)), np.asarray(b), np.asarray(a), out)
    return np.add(a, _scaled(b, alpha), out=out)


@writes_out
def sub(a, b, alpha=1, out=None):
    """CPU's sub is add with ``-alpha``: for complex numbers that is not ``a - alpha * b`` where a part is zero
    (-0 + 0 is +0, -0 - 0 is -0)."""
    if _fused(np.asarray(b).dtype, alpha):
        return vpu.fused_multiply_add(scalar(-alpha, np.asarray(b)), np.asarray(b), np.asarray(a), out)
    if np.iscomplexobj(b):
        return np.add(a, np.multiply(scalar(_negated(alpha), b), b), out=out)
    return np.subtract(a, _scaled(b, alpha), out=out)


def _fuses_by_dtype(dtype):
    return dtype in _FUSED_DTYPES and cpu_fuses_multiply_add()


# Whether the maths computes through vpu.fused_multiply_add for operands of a NumPy dtype (and add/sub's alpha):
# about a dozen NumPy passes a call, where foreach computes a list's small tensors together
add.fuses_multiply_add = sub.fuses_multiply_add = _fused


def _plain_ufunc(ufunc):
    """``plain_ufunc(dtype, alpha=1)``: the ufunc add/sub come down to for real floats of the NumPy ``dtype`` with an
    alpha of 1 (nothing scaled, nothing fused), else None. Foreach applies it to each tensor of a list without the
    maths' per-call questions (an SGD momentum's ``add_`` asks them for every parameter)."""
    def plain(dtype, alpha=1):
        return ufunc if dtype.kind == "f" and alpha == 1 else None

    return plain


add.plain_ufunc, sub.plain_ufunc = _plain_ufunc(np.add), _plain_ufunc(np.subtract)


def check_alpha(dtype, a, b, alpha=1):
    if isinstance(alpha, bool) and dtype != torch.bool:
        raise RuntimeError("Boolean alpha only supported for Boolean results.")
    if is_integral(dtype) and not isinstance(alpha, int):
        raise RuntimeError("For integral input tensors, argument alpha must not be a floating point number.")
    if not dtype.is_complex and isinstance(alpha, complex):
        raise RuntimeError("For non-complex input tensors, argument alpha must not be a complex number.")


def check_sub(dtype, a, b, alpha=1):
    bools = [isinstance(x, bool) or (isinstance(x, torch.Tensor) and x.dtype == torch.bool) for x in (a, b)]
    if all(bools):
        raise RuntimeError("Subtraction, the `-` operator, with two bool tensors is not supported. "
                           "Use the `^` or `logical_xor()` operator instead.")
    if any(bools):
        raise RuntimeError("Subtraction, the `-` operator, with a bool tensor is not supported. "
                           "If you are trying to invert a mask, use the `~` or `logical_not()` operator instead.")
    check_alpha(dtype, a, b, alpha)


def check_nonzero_divisor(a, b):
    """Integer division by zero fails on CPU only when some element is divided (not when ``a`` is empty)."""
    if b.dtype.kind in "biu" and np.size(a) and not np.all(b):
        raise RuntimeError("ZeroDivisionError")


def trunc_divide(a, b):
    if a.dtype.kind not in "biu":
        return np.trunc(a / b)
    check_nonzero_divisor(a, b)
    quotient = np.floor_divide(a, b)
    return quotient + ((quotient < 0) & (quotient * b != a)).astype(quotient.dtype)


def divides_in_opmath(dividend, divisor):
    """CPU's rounding divisions compute reduced floats in opmath (rounding once) only when the divisor is
    a lone value (``is_lone_value``). Otherwise their loops run in the tensors' own format, rounding every
    step."""
    return is_lone_value(divisor)


def floor_divide(a, b):
    if a.dtype.kind in "biu":
        check_nonzero_divisor(a, b)
    if a.dtype.kind in "biu" or a.dtype in (np.float32, np.float64):
        return np.floor_divide(a, b)  # NumPy's float floor division is c10's div_floor_floating
    return floor_divide_floating(a, b)


def floor_divide_floating(a, b):
    """c10's div_floor_floating step by step in the arrays' own format, so that a reduced-float format
    rounds every intermediate, as CPU's loops over them do (NumPy's own rounds once)."""
    mod = np.fmod(a, b)
    quotient = (a - mod) / b
    quotient = np.where((mod != 0) & ((b < 0) != (mod < 0)), quotient - np.ones((), a.dtype), quotient)
    floored = np.floor(quotient)
    floored = np.where(quotient - floored > np.asarray(0.5, a.dtype), floored + np.ones((), a.dtype), floored)
    floored = np.where(quotient == 0, np.copysign(np.zeros((), a.dtype), a / b), floored)
    return np.where(b == 0, a / b, floored)


def rounds_divisions(dtype):
    """CPU's div_floor and div_trunc loops: every real dtype but bool."""
    return dtype != torch.bool and not dtype.is_complex


def divide(a, b, rounding_mode=None):
    return {None: np.true_divide, "trunc": trunc_divide, "floor": floor_divide}[rounding_mode](a, b)


def remainder(a, b):
    if a.dtype.kind in "biu":
        check_nonzero_divisor(a, b)
        return np.remainder(a, b)
    mod = np.fmod(a, b)
    return np.where((mod != 0) & ((b < 0) != (mod < 0)), mod + b, mod)  # a -0.0 remainder stays -0.0, as on CPU


def fmod(a, b):
    check_nonzero_divisor(a, b)
    return np.fmod(a, b)


def power(base, exponent):
    if base.dtype.kind == "f":
        return real_power(base, exponent)
    if base.dtype.kind not in "iu":
        return float_power(base, exponent)
    negative = exponent < 0
    # a negative power leaves only a base of +-1 (its sign by the power's parity): the parity, not -exponent,
    # which for the dtype's most negative value overflows back to itself
    result = np.power(base, np.where(negative, exponent & 1, exponent))
    # PyTorch: integers to negative powers truncate 1/base**n toward zero
    return np.where(negative & (np.abs(base) != 1), 0, result).astype(base.dtype)


def real_power(base, exponent, out=None):
    """C's pow, which CPU's kernels compute (std::pow, Sleef's powf). NumPy's power loop takes an exponent of +-0.5
    read with stride 0 (a number, a 0-dim or broadcast tensor) as a square root, which gives -0.0 and NaN for a base
    of -0.0 and -inf where pow gives +0.0 and +inf (+inf and +0.0 for -0.5): those elements take |base|. Called
    like a ufunc (``out=`` may be an operand: every operand is read before it is written)."""
    halves = np.abs(exponent) == 0.5
    signed = halves & (np.signbit(base) & ((base == 0) | np.isinf(base))) if np.any(halves) else None
    fixed = float_power(np.abs(base), exponent) if signed is not None and np.any(signed) else None
    result = float_power(base, exponent, out=out)
    if fixed is not None and out is None:
        return np.where(signed, fixed, result)
    if fixed is not None:
        np.copyto(out, fixed, where=signed)
    return result


# pow(tensor, scalar) takes these shortcuts on CPU for float32, float64 and bf16 (its fp16 loop calls pow); they
# differ from pow() at -0.0 and -inf. bf16's 3 and -2 multiply in bf16, each product rounded (c10's BFloat16
# arithmetic, which ml_dtypes' shares); the rest compute in float32 (bf16 -0.5 is lane-dependent on CPU: its scalar
# loop rounds the square root to bf16 first, its vector loop does not; tpu computes as the vector loop).
_POW_SHORTCUTS = {
    0.5: np.sqrt,
    2: np.square,
    3: lambda x: x * x * x,
    -0.5: rsqrt,
    -1: np.reciprocal,
    -2: lambda x: np.reciprocal(in_float(x * x)),
}
_POW_IN_BFLOAT16 = frozenset({3, -2})
_SIXTEEN_BIT_FLOATS = frozenset({np.dtype(ml_dtypes.bfloat16), np.dtype(np.float16)})


@own_16_bit_maths
def power_scalar(base, exponent):
    value = exponent.item()
    shortcut = None if isinstance(value, complex) else _POW_SHORTCUTS.get(value)
    if base.dtype == ml_dtypes.bfloat16 and value in _POW_IN_BFLOAT16:
        return shortcut(base)
    if base.dtype in _SIXTEEN_BIT_FLOATS:
        shortcut = shortcut if base.dtype == ml_dtypes.bfloat16 else None
        base, exponent = base.astype(np.float32), exponent.astype(np.float32)
    if base.dtype.kind == "f" and shortcut is not None:
        return shortcut(base)
    return power(base, exponent)


def check_integer_power(dtype, base, exponent):
    if is_integral(dtype) and not isinstance(exponent, torch.Tensor) and exponent < 0:
        raise RuntimeError("Integers to negative integer powers are not allowed.")
    if dtype not in _POW_EXPONENT_AS_DOUBLE and not isinstance(exponent, torch.Tensor):
        check_scalar_fits(exponent, dtype)  # ``exp_scalar.to<scalar_t>()``, checked


# CPU's pow with a number exponent reads it as a double for these (any other dtype converts it to its own, checked)
_POW_EXPONENT_AS_DOUBLE = frozenset({torch.float32, torch.float64, torch.complex64, torch.complex128})


def xlogy(x, y):
    return np.where(np.isnan(y), y, np.where(x == 0, scalar(0, x), x * log(y)))


def xlog1py(x, y):
    return np.where(np.isnan(y), y, np.where(x == 0, scalar(0, x), x * real_log1p(y)))


def nextafter(a, b):
    if a.dtype.kind == "f" and a.dtype.itemsize >= 2 and a.dtype in (np.float16, np.float32, np.float64):
        return np.nextafter(a, b)
    # formats NumPy has no nextafter for: step the bit pattern, as c10's nextafter does
    bits_type = np.dtype(f"uint{a.dtype.itemsize * 8}")
    a, b = np.broadcast_arrays(a, b)
    bits = a.view(bits_type).astype(np.int64)
    away_from_zero = (a < b) == (a > 0)
    stepped = np.where(away_from_zero, bits + 1, bits - 1).astype(bits_type).view(a.dtype)
    smallest = np.array(1, bits_type).view(a.dtype)
    from_zero = np.where(b > 0, smallest, -smallest)
    return np.where(np.isnan(a) | np.isnan(b), a + b, np.where(a == b, b, np.where(a == 0, from_zero, stepped)))


def regularized_gamma(lower):
    """CPU's calc_igamma (``lower``) and calc_igammac: their special cases first, in their order, so that a NaN
    beside a zero or infinite argument gives 0 or 1 as on CPU (SciPy gives NaN); SciPy's function elsewhere."""
    function = special.gammainc if lower else special.gammaincc

    def incomplete_gamma(a, x):
        zero, one, nan = scalar(0, a), scalar(1, a), scalar(np.nan, a)
        at_zero_x, at_infinite_x = (zero, one) if lower else (one, zero)
        return np.select(
            [(x < 0) | (a < 0), a == 0, x == 0, np.isinf(a), np.isinf(x)],
            [nan, np.where(x > 0, at_infinite_x, nan), at_zero_x, np.where(np.isinf(x), nan, at_zero_x), at_infinite_x],
            function(a, x))

    return incomplete_gamma


def zeta(x, q):
    return np.where(np.isposinf(q) & (x > 1), scalar(np.nan, x), special.zeta(x, q))  # PyTorch: NaN at q=inf


def log1p(x):
    return complex_log1p(x) if x.dtype.kind == "c" else real_log1p(x)


def complex_log1p(z):
    """c10's CPU log1p for complex numbers: log(u) * z / (u - 1) with u = 1 + z restores the digits of ``z``
    that rounding 1 + z drops (NumPy's log(1 + z) loses them all for small ``z``)."""
    u = z + scalar(1, z)
    u_minus_one = u - scalar(1, z)
    log_u = log(u)
    with np.errstate(divide="ignore", invalid="ignore"):  # the u == 1 elements, dropped below
        corrected = log_u * (z / u_minus_one)
    return np.where(u == 1, z, np.where(u_minus_one == z, log_u, corrected))


def complex_isnan(z):
    return np.isnan(z.real) | np.isnan(z.imag)


def complex_logaddexp(x, y):
    """CPU's complex log-add-exp step (``_log_add_exp_helper``, also logcumsumexp's): a NaN in either part
    of either operand gives NaN + NaNj; operands are ordered by real part, ``y`` counting as the lower on a
    tie; when both real parts are the same infinity, -inf keeps the lower operand and +inf sums plainly."""
    x_lower = x.real < y.real
    lower, upper = np.where(x_lower, x, y), np.where(x_lower, y, x)
    with np.errstate(all="ignore"):
        plain = log(exp(lower) + exp(upper))
        shifted = log1p(exp(lower - upper)) + upper
    same_infinity = ~np.isfinite(lower.real) & (lower.real == upper.real)
    result = np.where(same_infinity, np.where(lower.real < 0, lower, plain), shifted)
    return np.where(complex_isnan(x) | complex_isnan(y), scalar(complex(math.nan, math.nan), result), result)


def logaddexp(a, b):
    if a.dtype.kind == "c":
        return complex_logaddexp(a, b)
    biggest = np.maximum(a, b)
    return np.where(np.isinf(a) & (a == b), a, biggest + real_log1p(exp(-np.abs(a - b))))


def logaddexp2(a, b):
    biggest = np.maximum(a, b)
    return np.where(np.isinf(a) & (a == b), a, biggest + real_log1p(exp2(-np.abs(a - b))) / np.log(2).astype(a.dtype))


def heaviside(x, values):
    return np.where(x == 0, values, (x > 0).astype(x.dtype))


def check_heaviside(dtype, *operands):
    """heaviside's meta function: no complex tensor and one dtype among the operands (and the output, for out=)."""
    if any(t.is_complex() for t in operands):
        raise RuntimeError("heaviside is not yet implemented for complex tensors.")
    if len({t.dtype for t in operands}) > 1:
        raise RuntimeError("heaviside is not yet implemented for tensors with different dtypes.")


def check_heaviside_out(out, x, values):
    check_heaviside(None, x, values, out)


def left_shift(a, b):
    out_of_range = (b < 0) | (b >= a.dtype.itemsize * 8)
    return np.where(out_of_range, 0, np.left_shift(a, np.where(out_of_range, 0, b))).astype(a.dtype)


def right_shift(a, b):
    bits = a.dtype.itemsize * 8
    out_of_range = (b < 0) | (b >= bits)
    if a.dtype.kind == "u":
        return np.where(out_of_range, 0, np.right_shift(a, np.where(out_of_range, 0, b))).astype(a.dtype)
    return np.right_shift(a, np.where(out_of_range, bits - 1, b))  # signed: fill with the sign bit


def logical(function):
    def combine(a, b):
        return function(a != 0, b != 0)

    combine.__name__ = function.__name__
    return combine


def supports(predicate, kernel_name):
    """A check that raises PyTorch's "not implemented for" error for dtypes the CPU kernel lacks."""

    def check(dtype, *args, **kwargs):
        require(predicate(dtype), dtype, kernel_name)

    return check


def lerp_check(kernel_name):
    """lerp's meta function: ``end``, and a ``weight`` tensor with dims, must have ``start``'s dtype (no
    promotion; a 0-dim weight of any dtype is taken as a number), then the kernel's dtype check."""
    has_kernel = supports(floating_or_complex, kernel_name)

    def check(dtype, start, end, weight, *args, **kwargs):
        for name, value in (("end", end), ("weight", weight)):
            if isinstance(value, torch.Tensor) and value.dtype != start.dtype and (name == "end" or value.dim()):
                raise RuntimeError(f"expected dtype {cpp_type_name(start.dtype)} for `{name}` but got dtype "
                                   f"{cpp_type_name(value.dtype)}")
        has_kernel(dtype)

    return check


def floating(dtype):
    return dtype.is_floating_point


def single_or_double(dtype):
    return dtype in (torch.float32, torch.float64)


def real(dtype):
    return not dtype.is_complex


def not_bool(dtype):
    return dtype != torch.bool


def not_complex_half(dtype):
    """CPU's floating kernels with complex loops have none for complex32 (ComplexHalf)."""
    return dtype != torch.complex32


def not_bool_or_complex_half(dtype):
    return dtype not in (torch.bool, torch.complex32)


def integer(dtype):
    return is_integral(dtype) and dtype != torch.bool


def real_not_bool(dtype):
    return real(dtype) and not_bool(dtype)


def floating_or_complex(dtype):
    return dtype.is_floating_point or dtype.is_complex


def floating_or_wide_complex(dtype):
    """CPU's complex loops of the log-sum-exp family have no complex32 (ComplexHalf) instance."""
    return dtype.is_floating_point or dtype in (torch.complex64, torch.complex128)


def shiftable(dtype):
    """CPU's shift kernels have loops for the integer types PyTorch had before uint16/32/64."""
    return dtype in (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


# Ternary


@own_16_bit_maths
@writes_out
def clamp_min(x, low, out=None):
    return clamp(x, low, out=out, one_bound=True)


@own_16_bit_maths
@writes_out
def clamp_max(x, high, out=None):
    return clamp(x, high=high, out=out, one_bound=True)


@own_16_bit_maths
@writes_out
def clamp(x, low=None, high=None, out=None, one_bound=False):
    """Number bounds. NaN in x propagates; when low > high every element becomes high; where x equals a bound (-0.0
    against 0.0) CPU's loops keep x (NumPy's maximum and minimum give their second operand). A NaN bound fills the
    result: clamp_out fills c10's quiet NaN whichever bounds are given, clamp_min_out/clamp_max_out (``one_bound``)
    fill the bound itself, whose sign every format but bf16 keeps (c10 makes every bf16 NaN 0x7FC0)."""
    nan_bound = next((bound for bound in (low, high) if bound is not None and bound != bound), None)
    if nan_bound is not None and (x.dtype.kind == "f" or x.dtype == ml_dtypes.bfloat16):
        fill = nan_bound if one_bound and x.dtype != ml_dtypes.bfloat16 else np.nan
        result = np.full(np.shape(x), fill, x.dtype)
        return result if out is None else np.copyto(out, result) or out
    if x.dtype in (ml_dtypes.bfloat16, np.float16):  # the kernels pass 16-bit floats as they are (opmath=False)
        return _clamp_16_bit(x, low, high, out)
    if low is not None and high is not None:
        return np.minimum(high, np.maximum(low, x), out=out)
    if low is not None:
        return np.maximum(low, x, out=out)
    if high is not None:
        return np.minimum(high, x, out=out)
    return x if out is None else np.copyto(out, x) or out


def _clamp_16_bit(x, low, high, out):
    """bf16/fp16 ``clamp`` as CPU's loops store it: computed in float32, a bf16 NaN stored as its vector lanes (0xFFFF)
    or its scalar tail (0x7FC0) store it."""
    bounds = [None if bound is None else np.float32(bound) for bound in (low, high)]
    result = with_scalar_tail_nans(clamp(in_float(x), *bounds), x, out)
    if result.dtype != x.dtype:  # fp16: rounded as CPU stores float32
        result = _rounded_to(result, torch.float16)
    if out is None:
        return result
    out[...] = result
    return out


def clamp_by_tensors(x, low=None, high=None):
    """Tensor bounds: where x equals a bound, CPU's vector loop gives the bound, as maximum and minimum do (its scalar
    tail keeps x: a signed zero's sign, not replayed)."""
    if low is not None:
        x = np.maximum(x, low)
    if high is not None:
        x = np.minimum(x, high)
    return x


def clamping_check(op_name, bool_message):
    """relu and hardtanh clamp: CPU refuses complex numbers (which have no order) and bools, each in its words."""

    def check(dtype, *args, **kwargs):
        if dtype.is_complex:
            raise NotImplementedError("clamp is not supported for complex types")
        if dtype == torch.bool:
            raise RuntimeError(f"{bool_message} {op_name}")

    return check


def check_hardtanh(dtype, x, min_val=-1, max_val=1):
    """CPU's hardtanh is clamp with a legacy rule first: an integral tensor's bounds are truncated to integers,
    and an unsigned one refuses negative bounds; clamp then converts each bound to the tensor's dtype, checked."""
    clamping_check("hardtanh", "Bool inputs not supported for")(dtype)
    if is_integral(dtype):
        check_scalar_fits(min_val, torch.int64)  # Scalar::toLong
        check_scalar_fits(max_val, torch.int64)
        min_val, max_val = int(min_val), int(max_val)
        if dtype == torch.uint8 and (min_val < 0 or max_val < 0):
            raise RuntimeError("cannot do hardtanh on an unsigned type with negative limits")
    check_scalar_fits(min_val, dtype)
    check_scalar_fits(max_val, dtype)


def check_clamp_bounds(dtype, x, low=None, high=None):
    if low is None and high is None:
        raise RuntimeError("torch.clamp: At least one of 'min' or 'max' must not be None")


@writes_out
def addcmul(x, a, b, value=1, out=None):
    return _scaled_product_added(np.multiply, x, a, b, scalar(value, x), out)


@writes_out
def addcdiv(x, a, b, value=1, out=None):
    return _scaled_product_added(np.divide, x, a, b, scalar(value, x), out)  # CPU's order: the value scales the dividend


def _scaled_product_added(combine, x, a, b, value, out):
    """``x + combine(value * a, b)``, each step rounded in the operands' dtype. With a floating ``out`` of the
    dtype of ``value``, ``a`` and ``b`` that none of the operands overlap, the steps run in ``out``'s memory (the
    same operations in the same order: the same bits, without two temporaries of the full size)."""
    if combine is np.multiply and _fuses_by_dtype(x.dtype):
        # CPU's compiler contracts addcmul's last product and sum (self + value * t1 * t2) into one FMA; a value
        # of 1 (a compiled lerp's) scales nothing: 1 * a is a, but for a signalling NaN, which the FMA's float64
        # product quiets all the same
        scaled = a if value == 1 and a.dtype == value.dtype else value * a
        return vpu.fused_multiply_add(scaled, b, x, out)
    if (out is None or out.dtype.kind not in "fc" or not out.dtype == value.dtype == a.dtype == b.dtype
            or np.may_share_memory(out, x) or np.may_share_memory(out, a) or np.may_share_memory(out, b)):
        return np.add(x, combine(value * a, b), out=out)
    np.multiply(value, a, out=out)
    combine(out, b, out=out)
    return np.add(x, out, out=out)


addcmul.fuses_multiply_add = _fuses_by_dtype


def check_addcdiv(dtype, x, a, b, value=1):
    if is_integral(a.dtype) and is_integral(b.dtype):
        raise RuntimeError(
            "Integer division with addcdiv is no longer supported, and in a future release addcdiv will "
            "perform a true division of tensor1 and tensor2. The historic addcdiv behavior can be implemented "
            "as (input + value * torch.trunc(tensor1 / tensor2)).to(input.dtype) for integer inputs and as "
            "(input + value * tensor1 / tensor2) for float inputs. The future addcdiv behavior is just the "
            "latter implementation: (input + value * tensor1 / tensor2), for all dtypes.")
    require(not_complex_half(dtype), dtype, "addcdiv_cpu_out")


@writes_out
def lerp(start, end, weight, out=None):
    """CPU's two-sided formula, exact at both ends: ``start + weight * (end - start)`` for a weight under 0.5 in
    magnitude, else ``end - (end - start) * (1 - weight)``. Its AVX2 build rounds each side's product and sum once
    (``vec::fmadd(coefficient, end - start, base)``, with ``weight - 1`` as the large side's coefficient)."""
    weight = weight if isinstance(weight, np.ndarray) else scalar(weight, start)
    difference = np.subtract(end, start)
    small = np.abs(weight) < 0.5
    if _fuses_by_dtype(difference.dtype):
        if np.ndim(weight) == 0:  # one side for every element: no full-size selection of start or end
            coefficient, base = (weight, start) if small else (weight - 1, end)
        else:
            coefficient, base = np.where(small, weight, weight - 1), np.where(small, start, end)
        return vpu.fused_multiply_add(coefficient, difference, base, out)
    result = np.where(small, start + weight * difference, end - difference * (1 - weight))
    if out is None:
        return result
    np.copyto(out, result)
    return out


lerp.fuses_multiply_add = _fuses_by_dtype


def where(condition, x, y):
    return np.where(condition, x, y)


# --------------------------------------------------------------------------------------------------
# Activations and the backward ops autograd calls


@writes_out
def relu(x, out=None):
    return np.maximum(scalar(0, x), x, out=out)  # keeps NaN, and -0.0 as CPU's clamp_min does


def threshold(x, threshold_value, value):
    return np.where(x <= scalar(threshold_value, x), scalar(value, x), x)


@writes_out
def threshold_backward(grad, x, threshold_value, out=None):
    return zero_where(x <= scalar(threshold_value, x), grad, out)


@writes_out
def gelu(x, approximate="none", out=None):
    if approximate == "tanh":
        inner = scalar(math.sqrt(2 / math.pi), x) * (x + scalar(0.044715, x) * x * x * x)
        return np.multiply(scalar(0.5, x) * x, 1 + tanh(inner), out=out)
    return gelu_of_cdf(x, gaussian_cdf(x), out=out)


def gelu_of_cdf(x, cdf, out):
    """GELU (approximate="none") from ``cdf``, the ``gaussian_cdf`` of ``x``: into ``out``, or into ``cdf``
    when ``out`` is None. Compiled programs keep the forward's ``cdf`` for the backward (one erf fewer)."""
    # x * 0.5 * (1 + erf): the 0.5 is exact in either place; gelu(+inf) is +inf (CPU's AVX-512 float32
    # kernel gives NaN there, its AVX2 and float64 kernels +inf)
    return np.multiply(cdf, x, out=cdf if out is None else out)


def gaussian_cdf(x):
    """0.5 * (1 + erf(x / sqrt(2))), in a fresh array (also for a 0-d ``x``, whose products NumPy makes scalars)."""
    result = np.multiply(x, scalar(math.sqrt(0.5), x), out=np.empty(np.shape(x), x.dtype))  # contiguous: erf's fast path
    vpu_special.erf(result, out=result)
    result += 1
    result *= scalar(0.5, x)
    return result


def check_softshrink(dtype, x, lambd=0.5):
    """softshrink's meta function: a floating input, and a threshold the input's dtype can hold."""
    require(dtype.is_floating_point, dtype, "softshrink_check")
    limit = torch.finfo(dtype).max
    if not 0 <= lambd <= limit:
        raise RuntimeError(f"lambda must be in range [0, {limit:g}] for input dtype {scalar_type_name(dtype)}, "
                           f"but found {lambd:g}")


def gelu_check(kernel_name):
    """gelu's meta function checks ``approximate``, then its kernel's dispatch the dtype."""
    def check(dtype, *operands, approximate="none"):
        if approximate not in ("none", "tanh"):
            raise RuntimeError("approximate argument must be either none or tanh.")
        require(dtype.is_floating_point, dtype, kernel_name)

    return check


def gelu_backward(grad, x, approximate="none"):
    if approximate == "tanh":
        beta, kappa = scalar(math.sqrt(2 / math.pi), x), scalar(0.044715, x)
        inner = beta * (x + kappa * x * x * x)
        tanh_inner = tanh(inner)
        left_derivative = scalar(0.5, x) * (1 + tanh_inner)
        tanh_derivative = 1 - tanh_inner * tanh_inner
        inner_derivative = beta * (1 + 3 * kappa * x * x)
        return grad * (left_derivative + scalar(0.5, x) * x * tanh_derivative * inner_derivative)
    return gelu_backward_of_cdf(grad, x, gaussian_cdf(x))


def gelu_backward_of_cdf(grad, x, cdf):
    """GELU's backward (approximate="none") from ``cdf``, the ``gaussian_cdf`` of ``x``, computed into ``cdf``."""
    x_pdf = np.multiply(x, x, out=np.empty_like(cdf))  # an array even for a 0-d x, for the in-place steps
    x_pdf *= scalar(-0.5, x)
    exp(x_pdf, out=x_pdf)
    x_pdf *= scalar(1 / math.sqrt(2 * math.pi), x)
    x_pdf *= x
    cdf += x_pdf
    cdf *= grad
    return cdf


@writes_out
def silu(x, out=None):
    return np.divide(x, 1 + exp(-x), out=out)


def conj_if_complex(derivative):
    """PyTorch's complex backward formulas multiply the gradient by the conjugate derivative."""
    return np.conj(derivative) if np.iscomplexobj(derivative) else derivative


@writes_out
def silu_backward(grad, x, out=None):
    """grad * sig * (1 + x * (1 - sig)), each step as that expression rounds it, in two temporaries."""
    sig = sigmoid(x)
    slope = np.subtract(1, sig)
    slope *= x
    slope += 1
    result = np.multiply(grad, sig, out=out)
    result *= slope  # CPU's complex loop takes no conjugate here
    return result


@own_16_bit_maths
def sigmoid_backward(grad, y):
    """CPU's real loops compute ``grad * (1 - y) * y`` left to right (a third of float32 elements differed when the
    derivative was formed first), bf16 in float32 and fp16 in fp16, every step rounded (c10's Half arithmetic,
    which NumPy's float16 shares); its complex loop multiplies by the conjugate derivative."""
    if np.iscomplexobj(y):
        return grad * np.conj((1 - y) * y)
    grad, y = (array.astype(np.float32) if array.dtype == ml_dtypes.bfloat16 else array for array in (grad, y))
    result = grad * (1 - y)
    result *= y
    return result


def tanh_backward(grad, y):
    """``grad * (1 - y * y)``, where CPU's float32/float64 loops contract ``1 - y * y`` into one FMA (a third of the
    elements differed rounded twice), except the vector loop over a row along which ``y`` is broadcast, which
    computes ``y * y`` once for the row and subtracts it rounded."""
    if not _fuses_by_dtype(y.dtype):
        return grad * conj_if_complex(1 - y * y)
    one = scalar(1, y)
    result = grad * vpu.fused_multiply_add(np.negative(y), y, one)
    shape = np.shape(result)
    if shape and cpu_loops.broadcast_along_rows(None, (grad, y), 1):
        rounded = np.broadcast_to(grad * (one - y * y), shape)
        result = np.where(in_vector_lanes(np.ones(shape, bool), (grad, y)), rounded, result)
    return result


@own_16_bit_maths
def logit_backward(grad, x, eps=None):
    """CPU's loops in the tensors' own dtype (bf16/fp16 round every operation); the bounds are 0 and 1, or ``eps``
    and ``1 - eps`` formed in that dtype. Its vector lanes (64-byte vectors of its AVX-512 build) divide wherever x
    passes the bounds test, which a NaN fails; its scalar tail tests the bounds' outside instead, returning
    ``grad * inf`` at 0 and 1 and a NaN x's NaN. They differ at -0.0 (dividing by ``-0.0 * 1`` flips the
    infinity's sign) and, with ``eps``, at a NaN (0 in the lanes)."""
    one = scalar(1, x)
    lower, upper = (scalar(0, x), one) if eps is None else (scalar(eps, x), one - scalar(eps, x))
    derivative = grad / (x * (one - x))
    inside = (x >= lower) & (x <= upper)
    result = np.where(inside, derivative, scalar(np.nan if eps is None else 0, x))
    differs = (inside & (x == 0) & np.signbit(x)) | np.isnan(x)
    if differs.any():
        shape = np.shape(result)
        differs = np.broadcast_to(differs, shape)
        tail = differs & ~in_vector_lanes(differs, (grad, x), vector_bytes=AVX512_VECTOR_BYTES)
        result = np.where(tail, np.where(inside, grad * scalar(np.inf, x), derivative), result)
    return result


def softplus(x, beta=1, threshold_value=20):
    scaled = x * scalar(beta, x)
    return np.where(scaled > scalar(threshold_value, x), x, real_log1p(exp(scaled)) / scalar(beta, x))


def softplus_backward(grad, x, beta, threshold_value):
    scaled = x * scalar(beta, x)
    z = exp(scaled)
    return np.where(scaled > scalar(threshold_value, x), grad, grad * z / (z + 1))


def elu(x, alpha=1, scale=1, input_scale=1):
    negative = expm1(x * scalar(input_scale, x)) * scalar(alpha * scale, x)
    return np.where(x <= 0, negative, x * scalar(scale, x))


def elu_backward(grad, x, alpha, scale, input_scale, is_result):
    negcoef, poscoef, negiptcoef = scalar(alpha * scale, x), scalar(scale, x), scalar(input_scale, x)
    if is_result:
        negative = grad * negiptcoef * (x + negcoef)
    else:
        negative = grad * negiptcoef * negcoef * exp(x * negiptcoef)
    return np.where(x <= 0, negative, grad * poscoef)


def leaky_relu(x, negative_slope=0.01):
    return np.where(x > 0, x, x * scalar(negative_slope, x))


def leaky_relu_backward(grad, x, negative_slope, self_is_result):
    if self_is_result and negative_slope < 0:  # x is the output then: its sign no longer says which branch ran
        raise RuntimeError(
            "In-place leakyReLu backward calculation is triggered with a negative slope which is not supported. This "
            "is caused by calling in-place forward function with a negative slope, please call out-of-place version "
            "instead. File an issue at https://github.com/pytorch/pytorch if you do require supporting in-place "
            "leakRelu backward calculation with negative slope")
    return np.where(x > 0, grad, grad * scalar(negative_slope, x))


@writes_out
def hardtanh(x, min_value=-1, max_value=1, out=None):
    # NumPy's clip is CPU's clamp bit for bit (a -0.0 kept against a bound of +0.0, NaN's sign kept, the upper
    # bound winning when the bounds cross), in one pass where np.maximum and np.minimum made two and gave +0.0
    return np.clip(x, scalar(min_value, x), scalar(max_value, x), out=out)


@writes_out
def hardtanh_backward(grad, x, min_value, max_value, out=None):
    """Computed in the operands' own dtype (registered without opmath) so that the SIMD lanes follow it; bf16/fp16
    compare in float32 as CPU's loops do."""
    wide = in_float(x)
    outside = (wide <= scalar(min_value, wide)) | (wide >= scalar(max_value, wide))
    nans = np.isnan(wide)
    if nans.any():  # CPU's vector loop keeps (min < x < max), false for NaN: 0; its scalar tail passes the gradient
        nans = np.broadcast_to(nans, np.broadcast_shapes(np.shape(grad), np.shape(x)))  # x may be the broadcast one
        outside = outside | (nans & in_vector_lanes(nans, (grad, x), out))
    result = zero_where(outside, grad, out)
    if grad.dtype == ml_dtypes.bfloat16:  # CPU's vector loop passes the gradient through float32 and back
        nans = np.isnan(result)
        if nans.any():
            result.view(np.uint16)[nans & in_vector_lanes(nans, (grad, x), out)] = BFLOAT16_VECTOR_NAN
    return result


@writes_out
def hardsigmoid(x, out=None):
    return np.divide(np.minimum(np.maximum(x + 3, scalar(0, x)), scalar(6, x)), scalar(6, x), out=out)


# CPU's hardsigmoid backward multiplies by a float 1/6 (``scalar_t one_sixth(1.0f / 6.0f)``), in double too
ONE_SIXTH = np.float32(1) / np.float32(6)


@writes_out
def hardsigmoid_backward(grad, x, out=None):
    return zero_where(~((x > -3) & (x < 3)), grad * scalar(ONE_SIXTH, x), out)


@writes_out
def hardswish(x, out=None):
    return np.divide(x * np.minimum(np.maximum(x + 3, scalar(0, x)), scalar(6, x)), scalar(6, x), out=out)


def hardswish_backward(grad, x):
    """CPU's pieces: 0 up to -3, the gradient itself from 3 on. A NaN input gives NaN in CPU's vector loop (its
    blends fall through to the middle piece) and the gradient in its scalar tail (its if/else chain ends there);
    registered without opmath so that the lanes, in the 64-byte vectors of its AVX-512 build, follow the operands'
    own layout and dtype. bf16/fp16 compute in float32."""
    lanes_of = (grad, x)
    grad, x = in_float(grad), in_float(x)
    result = select_bits(x >= 3, grad, zero_where(x <= -3, grad * (x / scalar(3, x) + scalar(0.5, x))))
    nans = np.isnan(x)
    if nans.any():
        shape = np.shape(result)
        nans = np.broadcast_to(nans, shape)
        tail = nans & ~in_vector_lanes(nans, lanes_of, vector_bytes=AVX512_VECTOR_BYTES)
        result = select_bits(tail, np.broadcast_to(grad, shape), result)
    return result


def mish(x):
    return x * tanh(real_log1p(exp(x)))


def mish_backward(grad, x):
    """CPU's one loop (in float for bf16/fp16); without a kernel, PyTorch's composite would run five ops, each
    rounding a 16-bit result."""
    sig = sigmoid(x)
    tanh_softplus = tanh(real_log1p(exp(x)))
    return grad * (tanh_softplus + x * sig * (1 - tanh_softplus * tanh_softplus))


@writes_out
def softshrink(x, lambd=0.5, out=None):
    """A NaN stays NaN, as CPU's kernel keeps it (both comparisons are false for it, which would give 0). In the
    operand's own dtype (bf16/fp16 computed in float32 here) so that the SIMD lanes follow it (and ``out``'s
    layout, which decides them): CPU's vector loop gives +0.0 between the thresholds, its scalar tail ``x * 0``,
    -0.0 for a negative x."""
    wide = in_float(x)
    lambd = scalar(lambd, wide)
    result = np.where(wide > lambd, wide - lambd,
                      np.where(wide < -lambd, wide + lambd, np.where(np.isnan(wide), wide, scalar(0, wide))))
    negative_zeros = np.signbit(wide) & (wide >= -lambd)  # -0.0 too: the tail's -0.0 * 0; a NaN compares false
    if negative_zeros.any():
        result = np.asarray(result)
        tail = negative_zeros & ~in_vector_lanes(negative_zeros, (x,), out)
        result[tail] = -result.dtype.type(0)
    result = with_scalar_tail_nans(result, x, out)
    if out is None:
        return result
    _C.dtypes.cast_into(out, result, out.dtype.name)  # an fp16 result from float32, rounded as CPU stores it
    return out


def with_scalar_tail_nans(result, x, out=None):
    """A float32 ``result`` of a bf16 ``x`` rounded to bf16 as a CPU loop for reduced floats (writing into ``out``,
    or a new output) stores it (``round_with_tail_nans``). Other dtypes as they are."""
    if x.dtype != ml_dtypes.bfloat16:
        return result
    rounded = np.empty(np.shape(result), x.dtype)
    round_with_tail_nans(rounded, result, (x,), out)
    return rounded


def round_with_tail_nans(destination, result, inputs, out=None, vector_bytes=cpu_loops.VECTOR_BYTES):
    """A float32 ``result`` rounded into the bf16 array ``destination`` as cpu_kernel_vec, in vectors of
    ``vector_bytes`` (``kernel_vector_bytes``), stores it for the bf16 ``inputs`` (written into ``out``; None: a new
    output): 0xFFFF for a NaN its vector loop converts (cvtfp32_bf16), c10's 0x7FC0 for one its scalar tail rounds
    (round_to_nearest_even's NaN, whatever the payload)."""
    _C.dtypes.cast_into(destination, result, "bfloat16")
    nans = np.isnan(result)
    if nans.any():
        nans = np.broadcast_to(nans, destination.shape)
        if vector_bytes is None or vector_bytes == 0:
            lanes = np.full(nans.shape, vector_bytes is None)
        else:
            lanes = in_vector_lanes(nans, inputs or (destination,), out, itemsize=2, vector_bytes=vector_bytes)
        destination.view(np.uint16)[nans] = np.where(lanes[nans], BFLOAT16_VECTOR_NAN, _C.dtypes.BFLOAT16_SCALAR_NAN)


BFLOAT16_VECTOR_NAN = 0xFFFF  # ATen's vectorised float -> bf16 conversion (cvtfp32_bf16) writes every NaN as this


# The vectors of a kernel registered with ALSO_REGISTER_AVX512_DISPATCH (hardswish_backward's): 64 bytes on an AVX-512
# CPU, where that build runs, else AVX2's 32. ATen picks its capability once, at startup.
AVX512_VECTOR_BYTES = 64 if torch.backends.cpu.get_cpu_capability() == "AVX512" else cpu_loops.VECTOR_BYTES


def in_float(array):
    """A bf16/fp16 array in float32, as CPU's loops for reduced floats compute; others as they are."""
    return array.astype(np.float32) if array.dtype.itemsize < 4 and array.dtype.kind != "c" else array


def in_vector_lanes(selected, operands, destination=None, itemsize=None, vector_bytes=cpu_loops.VECTOR_BYTES):
    """A mask of ``selected``'s shape: which of the selected elements CPU's cpu_kernel_vec computes in its
    vectorised loop (the rest go through its scalar tail), for input operands laid out as ``operands`` (the first
    one's dtype sets the vector width, unless ``itemsize`` does) written into ``destination`` (an ``out=`` array;
    None: a new output laid out as CPU's TensorIterator allocates it); ``vector_bytes``: the kernel's vector
    (``AVX512_VECTOR_BYTES`` for a kernel that has an AVX-512 build). The replay: csrc_py/cpu_loops.py."""
    mask = np.zeros(np.shape(selected), bool)
    indices = np.nonzero(selected) if np.ndim(selected) else ()
    width = cpu_loops.kernel_vec_width(itemsize or operands[0].dtype.itemsize, vector_bytes)
    lanes = cpu_loops.kernel_vec_lanes(destination, operands, indices, width, torch.get_num_threads())
    if indices:
        mask[indices] = lanes
    else:
        mask[()] = lanes[0]
    return mask


@writes_out
def multiply(a, b, out=None):
    """``a * b``; complex products as CPU's mul kernel rounds them (``complex_product``)."""
    if np.iscomplexobj(a) or np.iscomplexobj(b):
        return complex_product(np.asarray(a), np.asarray(b), out)
    return np.multiply(a, b, out=out)


def complex_product(a, b, out=None):
    """CPU's complex ``a * b``: its vector lanes (AVX2's Vectorized operator*) round the four products and then
    add them; its scalar tail, compiled with fused multiply-adds, rounds ``fma(ar, br, -(ai * bi))`` and
    ``fma(ar, bi, ai * br)`` once each (complex64's tail two elements at a time, an odd last one unfused).
    NumPy's own loop fuses every element."""
    dtype = np.result_type(a, b)
    a, b = a.astype(dtype, copy=False), b.astype(dtype, copy=False)
    ar, ai, br, bi = a.real, a.imag, b.real, b.imag
    result = np.empty(np.broadcast_shapes(a.shape, b.shape), dtype)  # out may be one of the operands
    with vpu.ignoring_fp_errors():
        result.real = ar * br - ai * bi
        result.imag = ar * bi + ai * br
        fused = fused_scalar_tail(result, (a, b), out)
        if fused is not None:
            ar, ai, br, bi = (np.broadcast_to(part, result.shape)[fused] for part in (ar, ai, br, bi))
            result[fused] = (vpu.fused_multiply_add(ar, br, -(ai * bi))
                             + 1j * vpu.fused_multiply_add(ar, bi, ai * br))
    if out is None:
        return result
    out[...] = result
    return out


def fused_scalar_tail(result, operands, destination=None):
    """The index of a complex cpu_kernel_vec result's elements (written into ``destination``, None: a new
    output) its scalar loop computes with fused multiply-adds (None: none): all of complex128's; complex64's in
    pairs, not an odd last one (the compiler pairs them where the row is contiguous or the destination is a new
    array: its loop over strided elements written into an operand fuses none)."""
    indices, offset, length, contiguous = cpu_loops.kernel_vec_scalar_loop(
        destination, operands, cpu_loops.kernel_vec_width(result.itemsize), torch.get_num_threads())
    if result.dtype == np.complex64:
        if contiguous and any(cpu_loops.broadcast_along_rows(destination, operands, i) for i in (0, 1)):
            # a value broadcast along the rows: the compiled loop peels one element, fuses a block of four, and
            # leaves the rest unfused (a tail is at most 7 long)
            keep = (offset >= 1) & (offset <= 4) & (length >= 5)
        else:
            paired = contiguous or destination is None or not any(np.may_share_memory(destination, o)
                                                                  for o in operands)
            keep = (offset < length - length % 2) & paired
        if not indices:  # a 0-d result: one call of the scalar loop
            return () if keep[0] else None
        indices = tuple(index[keep] for index in indices)
    return indices


@own_16_bit_maths
@writes_out
def maximum(a, b, out=None):
    return with_vector_lane_nans(np.maximum, a, b, out)


@own_16_bit_maths
@writes_out
def minimum(a, b, out=None):
    return with_vector_lane_nans(np.minimum, a, b, out)


# The NaN of maximum/minimum's scalar loop (std::numeric_limits<T>::quiet_NaN()), whatever the operand's payload
QUIET_NAN_BITS = {np.dtype(np.float16): 0x7E00, np.dtype(ml_dtypes.bfloat16): _C.dtypes.BFLOAT16_SCALAR_NAN,
                  np.dtype(np.float32): 0x7FC00000, np.dtype(np.float64): 0x7FF8000000000000}


def with_vector_lane_nans(compare, a, b, out=None):
    """``compare(a, b)`` (np.maximum or np.minimum) as CPU's floating maximum/minimum kernel gives it (written into
    ``out``; None: a new array): its vector lanes (AVX2's Vectorized maximum: max_ps or'ed with an unordered
    compare's mask; bf16/fp16 through float) give a NaN of every bit set, its scalar tail the dtype's quiet NaN
    whatever the operands' payloads. Lanes of the real output's layout and itemsize
    (foreach maximum/minimum of tensor lists run the same kernel)."""
    if a.dtype not in QUIET_NAN_BITS:
        return compare(a, b, out=out)
    if a.dtype.itemsize == 2:  # compared in float32: NumPy's own 16-bit loops are several times slower, as exact
        wide = compare(a.astype(np.float32), b.astype(np.float32))
        result = np.empty(wide.shape, a.dtype) if out is None else out
        result[...] = wide
    else:
        wide = result = np.asarray(compare(a, b, out=out))
    if not wide.size or not np.isnan(wide.min()):
        return result  # (one reduction to look for a NaN: far cheaper than isnan's mask)
    # (flat: NumPy's nonzero over several dims costs about 1 ms a million elements, flatnonzero a few us)
    nan_at = np.unravel_index(np.flatnonzero(np.isnan(wide)), wide.shape) if wide.ndim else ()
    lanes = cpu_loops.kernel_vec_lanes(out, (a, b), nan_at, cpu_loops.kernel_vec_width(a.dtype.itemsize),
                                       torch.get_num_threads())
    bits = result.view(f"u{a.dtype.itemsize}")
    bits[nan_at] = np.where(lanes.reshape(np.shape(bits[nan_at])), np.iinfo(bits.dtype).max, QUIET_NAN_BITS[a.dtype])
    return result


def softshrink_backward(grad, x, lambd):
    return np.where(np.abs(x) > scalar(lambd, x), grad, scalar(0, x))


@own_16_bit_maths
def hardshrink(x, lambd=0.5):
    """In the input's own dtype, bf16/fp16 too: CPU's loops compare with ``lambd`` in that dtype and return the
    input's own bits (a bf16 NaN keeps its payload in its vector lanes and its scalar tail alike)."""
    return np.where((x >= -scalar(lambd, x)) & (x <= scalar(lambd, x)), scalar(0, x), x)


@own_16_bit_maths
def hardshrink_backward(grad, x, lambd):
    """A NaN input gives 0 in CPU's vector loop (it keeps the gradient where ``x < -lambd | x > lambd``) and the
    gradient in its scalar tail (it zeroes where ``-lambd <= x <= lambd``). In the operands' own dtype, so that the
    lanes follow their layout; bf16/fp16 compare in float32 and pass the gradient's own bits."""
    wide = in_float(x)
    inside = (wide >= -scalar(lambd, wide)) & (wide <= scalar(lambd, wide))
    nans = np.isnan(wide)
    if nans.any():
        nans = np.broadcast_to(nans, np.broadcast_shapes(np.shape(grad), np.shape(x)))
        inside = inside | (nans & in_vector_lanes(nans, (grad, x)))
    return np.where(inside, scalar(0, grad), grad)


def conj_physical(x):
    """The conjugate; a real tensor's copy (NumPy's conjugate of bools is int8)."""
    return np.conj(x) if x.dtype.kind == "c" else x.copy()


def check_prelu(dtype, x, weight):
    """CPU's prelu kernel: a weight of the input's dtype (its iterator promotes nothing), then a floating input."""
    if weight.dtype != x.dtype:
        raise found_dtype(weight.dtype, x.dtype)
    require(floating(x.dtype), x.dtype, "prelu_cpu")


def prelu(x, weight):
    return np.where(x > 0, x, weight * x)


def glu(x, dim=-1):
    first, second = np.split(x, 2, axis=dim)
    return first * sigmoid(second)


def glu_shape(x, dim=-1):
    halved = list(x.shape)
    halved[dim] //= 2
    return tuple(halved)


def glu_backward(grad, x, dim, dtype):
    """CPU's order: sigmoid(b) is first stored in the input's ``dtype`` (in the gradient's first half), which
    then becomes ``sig * grad``; the second half is ``(1 - sig) * sig * a * grad`` in float."""
    first, second = np.split(x, 2, axis=dim)
    sig = sigmoid(second).astype(dtype).astype(x.dtype)
    return np.concatenate([sig * grad, (1 - sig) * sig * first * grad], axis=dim)


def glu_jvp(result, x, dx, dim):
    """Forward-mode derivative of a * sigmoid(b): da * sigmoid(b) + a * sigmoid(b) * (1 - sigmoid(b)) * db."""
    sig = sigmoid(np.split(x, 2, axis=dim)[1])
    d_first, d_second = np.split(dx, 2, axis=dim)
    return d_first * sig + result * (1 - sig) * d_second


def glu_backward_jvp(grad, x, d_grad, dx, dim):
    """Forward-mode derivative of ``glu_backward`` in both the incoming gradient and the input."""
    first, second = np.split(x, 2, axis=dim)
    d_first, d_second = np.split(dx, 2, axis=dim)
    sig = sigmoid(second)
    slope = sig * (1 - sig)
    return np.concatenate([
        d_grad * sig + grad * slope * d_second,
        (d_grad * first + grad * d_first) * slope + grad * first * slope * (1 - 2 * sig) * d_second,
    ], axis=dim)


def real_part_dtype(dtype):
    return dtype.to_real() if dtype.is_complex else dtype


# --------------------------------------------------------------------------------------------------
# Tables

UNARY_FLOAT = {  # integer and bool inputs compute in the default float dtype
    "exp": exp, "exp2": exp2, "expm1": expm1,
    "log": log, "log2": log2, "log10": log10, "log1p": log1p,
    "sqrt": np.sqrt, "rsqrt": rsqrt, "reciprocal": np.reciprocal, "sigmoid": sigmoid,
    "sin": sin, "cos": cos, "tan": tan, "asin": arcsin, "acos": arccos, "atan": arctan,
    "sinh": sinh, "cosh": cosh, "tanh": tanh,
    "asinh": arcsinh, "acosh": arccosh, "atanh": arctanh,
    "erf": vpu_special.erf, "erfc": special.erfc, "erfinv": special.erfinv,
    "lgamma": lgamma, "digamma": digamma, "i0": special.i0, "sinc": sinc,
    "special_i0e": special.i0e, "special_i1": special.i1, "special_i1e": special.i1e, "special_entr": special.entr,
}
UNARY_FLOAT_SINGLE_OR_DOUBLE = {  # CPU has no reduced-precision kernels for these
    "special_ndtri": special.ndtri, "special_log_ndtr": special.log_ndtr, "special_erfcx": special.erfcx,
}
UNARY_FLOAT_REAL = frozenset({"erf", "erfc"})  # CPU's loops of these have no complex instance
UNARY_SAME = {  # computed in the input's own dtype: (function, supported dtypes)
    "neg": (np.negative, None), "sign": (sign, None), "sgn": (sgn, None), "frac": (frac, floating),
    "floor": (integer_identity(np.floor), not_bool), "ceil": (integer_identity(np.ceil), not_bool),
    "trunc": (integer_identity(np.trunc), not_bool), "round": (integer_identity(np.rint), real_not_bool),
    "signbit": (signbit, real), "isposinf": (np.isposinf, real), "isneginf": (np.isneginf, real),
    "bitwise_not": (bitwise_not, is_integral),
}

BINARY = {  # overload: (function, dtype rule, supported dtypes)
    "mul.out": (multiply, keep, None),
    "div.out": (np.true_divide, to_float, not_complex_half),
    "remainder.Tensor_out": (remainder, keep, real_not_bool),
    "fmod.Tensor_out": (fmod, keep, real_not_bool),
    "pow.Tensor_Tensor_out": (power, keep, not_bool_or_complex_half),
    "pow.Scalar_out": (power, keep, not_bool_or_complex_half),
    "atan2.out": (arctan2, to_float, None),
    "hypot.out": (np.hypot, keep, floating),
    "maximum.out": (maximum, keep, real),
    "minimum.out": (minimum, keep, real),
    "fmax.out": (np.fmax, keep, real),
    "fmin.out": (np.fmin, keep, real),
    "copysign.out": (np.copysign, to_float, real),
    "logaddexp.out": (logaddexp, keep, floating_or_wide_complex),
    "logaddexp2.out": (logaddexp2, keep, floating),
    "xlogy.OutTensor": (xlogy, to_float, real),
    "special_xlog1py.out": (xlog1py, to_float, real),
    "special_zeta.out": (zeta, to_float, single_or_double),
    "igamma.out": (regularized_gamma(lower=True), keep, floating),
    "igammac.out": (regularized_gamma(lower=False), keep, floating),
    "gcd.out": (np.gcd, keep, integer),
    "lcm.out": (np.lcm, keep, integer),
    "bitwise_and.Tensor_out": (np.bitwise_and, keep, is_integral),
    "bitwise_or.Tensor_out": (np.bitwise_or, keep, is_integral),
    "bitwise_xor.Tensor_out": (np.bitwise_xor, keep, is_integral),
    "bitwise_left_shift.Tensor_out": (left_shift, keep, shiftable),
    "bitwise_right_shift.Tensor_out": (right_shift, keep, shiftable),
}
# CPU's scalar loops of these compute bf16/fp16 in the tensors' own format: c10's 16-bit log rounds, then
# the product rounds (x * log(y) twice rounded), so they do not widen to float32.
IN_OWN_DTYPE = frozenset({"xlogy.OutTensor", "special_xlog1py.out"})
COMPARISONS = {  # name: (function, supported dtypes); complex numbers have no order
    "eq": (np.equal, None), "ne": (np.not_equal, None), "lt": (np.less, real), "le": (np.less_equal, real),
    "gt": (np.greater, real), "ge": (np.greater_equal, real),
}
LOGICAL = {"logical_and": np.logical_and, "logical_or": np.logical_or, "logical_xor": np.logical_xor}

# overload: (function, number of promoted operands); floating-point only, except the few with complex loops
ACTIVATIONS = {
    "silu.out": (silu, 1),
    "silu_backward.grad_input": (silu_backward, 2),
    "sigmoid_backward.grad_input": (sigmoid_backward, 2),
    "tanh_backward.grad_input": (tanh_backward, 2),
    "logit_backward.grad_input": (logit_backward, 2),
    "softplus.out": (softplus, 1),
    "softplus_backward.grad_input": (softplus_backward, 2),
    "elu.out": (elu, 1),
    "leaky_relu.out": (leaky_relu, 1),
    "leaky_relu_backward.grad_input": (leaky_relu_backward, 2),
    "hardsigmoid.out": (hardsigmoid, 1),
    "hardsigmoid_backward.grad_input": (hardsigmoid_backward, 2),
    "mish.out": (mish, 1),
    "softshrink_backward.grad_input": (softshrink_backward, 2),
    "hardshrink.out": (hardshrink, 1),
    "hardshrink_backward.grad_input": (hardshrink_backward, 2),
}

COMPLEX_ACTIVATIONS = {"silu.out", "silu_backward.grad_input", "sigmoid_backward.grad_input",
                       "tanh_backward.grad_input"}


# CPU's dispatch names where they are not "<op>_cpu", as its "not implemented for" errors spell them
CPU_KERNEL_NAMES = {
    "erf": "erf_vml_cpu", "erfc": "erfc_vml_cpu", "floor": "floor_vml_cpu", "ceil": "ceil_vml_cpu",
    "trunc": "trunc_vml_cpu", "round": "round_vml_cpu", "special_ndtri": "ndtri_cpu",
    "special_log_ndtr": "log_ndtr_cpu", "special_erfcx": "erfcx_cpu", "pow": "pow", "addcmul": "addcmul_cpu_out",
    "hardshrink_backward": "shrink_backward_cpu", "softshrink_backward": "shrink_backward_cpu",
    "clamp": "clamp_scalar_cpu", "clamp_min": "clamp_min_scalar_cpu", "clamp_max": "clamp_max_scalar_cpu",
    "bitwise_left_shift": "lshift_cpu", "bitwise_right_shift": "rshift_cpu", "special_xlog1py": "xlog1py_cpu",
    "exp2": "exp2", "digamma": "digamma", "special_i0e": "i0e_cpu", "special_i1": "i1_cpu", "special_i1e": "i1e_cpu",
    "special_entr": "entr_cpu",
}


def unary_kernel_name(name):
    """CPU's dispatch name of a unary kernel: its at::vml kernels are ``<op>_vml_cpu``."""
    return CPU_KERNEL_NAMES.get(name) or (f"{name}_vml_cpu" if name in VML_KERNELS else f"{name}_cpu")


def checked(predicate, overload):
    name = overload.split(".")[0]
    return None if predicate is None else supports(predicate, CPU_KERNEL_NAMES.get(name, name + "_cpu"))


def check_clamp_numbers(dtype, x, low=None, high=None):
    """clamp with number bounds: CPU's clamp, clamp_min and clamp_max loops (one per bound given) have no
    bool instance."""
    check_clamp_bounds(dtype, x, low, high)
    kernel = "clamp" if low is not None and high is not None else "clamp_min" if low is not None else "clamp_max"
    require(not_bool(dtype), dtype, CPU_KERNEL_NAMES[kernel])


def check_clamp_tensors(dtype, x, low=None, high=None):
    """clamp with tensor bounds: both go through CPU's clamp loop, which has no bool instance; one alone
    through maximum or minimum, which have."""
    check_clamp_bounds(dtype, x, low, high)
    if low is not None and high is not None:
        require(not_bool(dtype) and real(dtype), dtype, "clamp_cpu")
    else:
        require(real(dtype), dtype, "maximum_cpu" if low is not None else "minimum_cpu")


def register_tables():
    for name, function in UNARY_FLOAT.items():
        structured(f"{name}.out", function, rule=to_float,
                   check=supports(real if name in UNARY_FLOAT_REAL else not_complex_half, unary_kernel_name(name)))
    for name, function in UNARY_FLOAT_SINGLE_OR_DOUBLE.items():
        structured(f"{name}.out", function, rule=to_float, check=checked(single_or_double, name))
    for name, (function, predicate) in UNARY_SAME.items():
        structured(f"{name}.out", function, check=checked(predicate, name), exact_out=True,
                   result=to_bool if name in ("signbit", "isposinf", "isneginf") else keep)
    structured("round.decimals_out", round_decimals, check=supports(floating, "round_cpu"), exact_out=True)
    for overload, (function, rule, predicate) in BINARY.items():
        structured(overload, function, operands=2, rule=rule, check=checked(predicate, overload),
                   opmath=overload not in IN_OWN_DTYPE)
    structured("heaviside.out", heaviside, operands=2, check=check_heaviside, check_out=check_heaviside_out)
    structured("add.out", add, operands=2, check=check_alpha)
    structured("sub.out", sub, operands=2, check=check_sub)
    structured("pow.Tensor_Scalar_out", power_scalar, operands=2, check=check_integer_power)
    # nextafter steps to the neighbour in the tensor's own format, so bf16 must not widen to float32
    structured("nextafter.out", nextafter, operands=2, check=checked(floating, "nextafter"), opmath=False)
    for name, (function, predicate) in COMPARISONS.items():
        structured(f"{name}.Tensor_out", function, operands=2, result=to_bool, check=checked(predicate, name))
        structured(f"{name}.Scalar_out", function, operands=2, result=to_bool, check=checked(predicate, name))
    for name, function in LOGICAL.items():
        unstructured(logical(function), name, f"{name}_", f"{name}.out", operands=2, result=to_bool)
    for overload, (function, operands) in ACTIVATIONS.items():
        predicate = floating_or_complex if overload in COMPLEX_ACTIVATIONS else floating
        # the forward ones are built as CPU's unary ops, which take an out of the input's dtype only
        structured(overload, function, operands=operands, check=checked(predicate, overload), exact_out=operands == 1)
    structured("softshrink.out", softshrink, check=check_softshrink, opmath=False, exact_out=True, check_in_meta=True)
    structured("gelu.out", gelu, check=gelu_check("GeluKernelImpl"), exact_out=True)
    structured("gelu_backward.grad_input", gelu_backward, operands=2, check=gelu_check("GeluBackwardKernelImpl"))
    # threshold has loops for every real dtype but bool; its backward shares its dispatch name
    structured("threshold.out", threshold, check=supports(real_not_bool, "threshold_cpu"), may_alias=True)
    structured("threshold_backward.grad_input", threshold_backward, operands=2,
               check=supports(real_not_bool, "threshold_cpu"))
    structured("glu.out", glu, check=checked(floating, "glu"), shape=glu_shape)
    structured("clamp.out", clamp, operands=3, check=check_clamp_numbers, exact_out=True)
    structured("clamp.Tensor_out", clamp_by_tensors, operands=3, check=check_clamp_tensors)
    # tensor bounds go through CPU's maximum/minimum kernels (their NaN lanes too), which have none for complex numbers
    structured("clamp_min.out", clamp_min, operands=2, check=checked(not_bool, "clamp_min"), exact_out=True)
    structured("clamp_min.Tensor_out", maximum, operands=2, check=checked(real, "maximum"))
    structured("clamp_max.out", clamp_max, operands=2, check=checked(not_bool, "clamp_max"), exact_out=True)
    structured("clamp_max.Tensor_out", minimum, operands=2, check=checked(real, "minimum"))
    structured("addcmul.out", addcmul, operands=3, check=checked(not_bool, "addcmul"))
    structured("addcdiv.out", addcdiv, operands=3, check=check_addcdiv)
    structured("lerp.Scalar_out", lerp, operands=2, check=lerp_check("lerp_kernel_scalar"))
    structured("lerp.Tensor_out", lerp, operands=3, check=lerp_check("lerp_kernel_tensor"))
    # CPU's logit computes bf16/fp16 step by step in their own format (each vector op rounds)
    unstructured(logit, "logit", "logit_", "logit.out", rule=to_float, check=checked(real, "logit"),
                 opmath=lambda *promoted: False)
    unstructured(angle, "angle", "angle.out", rule=to_float, result=lambda dtype: real_part_dtype(to_float(dtype)),
                 layout=complex_to_real_layout)
    unstructured(absolute, "abs.out", result=real_part_dtype, check=checked(not_bool, "abs"), exact_out=True)
    unstructured(conj_physical, "conj_physical.out", exact_out=True)
    unstructured(logical_not, "logical_not.out", result=to_bool)
    unstructured(isnan, "isnan", result=to_bool)
    unstructured(floor_divide, "floor_divide", "floor_divide_.Tensor", "floor_divide.out", operands=2,
                 check=supports(rounds_divisions, "div_floor_cpu"), opmath=divides_in_opmath)
    unstructured(remainder, "remainder.Scalar_Tensor", operands=2, check=checked(real_not_bool, "remainder"))
    unstructured(relu, "relu", "relu_", check=clamping_check("relu", "Boolean inputs not supported for"))
    # hardtanh.out is clamp.out on CPU, whose out has the input's own dtype
    unstructured(hardtanh, "hardtanh", "hardtanh_", "hardtanh.out", check=check_hardtanh, exact_out=True,
                 layout=like_self_layout, check_before_out=True)
    unstructured(hardtanh_backward, "hardtanh_backward", "hardtanh_backward.grad_input", operands=2,
                 check=supports(floating, "hardshrink_backward_cpu"), opmath=lambda *promoted: False)
    unstructured(hardswish, "hardswish", "hardswish_", "hardswish.out", check=checked(floating, "hardswish"),
                 exact_out=True)
    unstructured(hardswish_backward, "hardswish_backward", operands=2, check=checked(floating, "hardswish_backward"),
                 opmath=lambda *promoted: False)
    unstructured(prelu, "_prelu_kernel", operands=2, check=check_prelu)
    unstructured(mish_backward, "mish_backward", operands=2, check=checked(floating, "mish_backward"), result_like=1)
    # the Python operators <<, >>, <<= and >>= (bitwise_*_shift with a Scalar goes through these too)
    for function, kernel_name, names in ((left_shift, "lshift_cpu", ("__lshift__", "__ilshift__")),
                                         (right_shift, "rshift_cpu", ("__rshift__", "__irshift__"))):
        unstructured(function, *(f"{name}.{kind}" for name in names for kind in ("Tensor", "Scalar")), operands=2,
                     check=supports(shiftable, kernel_name))


register_tables()


# --------------------------------------------------------------------------------------------------
# Ops whose arguments do not fit the tables


@register("conj_physical_")
def conj_physical_(self):
    """A real tensor is its own conjugate, as on CPU. PyTorch's conjugate fallback lets conj_physical_
    through on a lazy conjugate too: the kernel writes through the bit (the stored values are conjugated
    either way)."""
    if not self.dtype.is_complex:
        return self
    check_no_internal_overlap(self)
    return through_math_bits(self, lambda target: compute_into(target, np.conj, (self,), self.dtype, name="conj_physical"))


ELU_BACKWARD_SCALARS = checked_scalars(aten.elu_backward.default._schema)


@register("elu_backward.grad_input")
def elu_backward_out(grad_output, alpha, scale, input_scale, is_result, self_or_result, *, grad_input):
    dtype = common_dtype(grad_output, self_or_result)
    require(dtype.is_floating_point, dtype, "elu_backward_cpu")
    check_scalar_conversions(ELU_BACKWARD_SCALARS, (grad_output, alpha, scale, input_scale), {}, dtype)
    prepare_out(grad_input, broadcast_shape(grad_output, self_or_result), dtype, (grad_output, self_or_result))
    return compute_into(grad_input, elu_backward, (grad_output, self_or_result), dtype,
                        (alpha, scale, input_scale, is_result))


@register("div.out_mode")
def div_out_mode(self, other, *, rounding_mode=None, out):
    """Division with an optional rounding mode.

    CPU divides reduced floats in their own format, rounding each step before the next (truncation sees
    the rounded quotient), unless the divisor is a lone value: that one it reads in opmath, where the
    whole division happens, rounding once.
    """
    dtype = common_dtype(self, other)
    if rounding_mode is None:
        dtype = to_float(dtype)
    else:
        require(rounds_divisions(dtype), dtype, f"div_{rounding_mode}_cpu")
    prepare_out(out, broadcast_shape(self, other), dtype, (self, other), layout_from=(self, other))
    return compute_into(out, divide, (self, other), dtype, options={"rounding_mode": rounding_mode},
                        opmath=divides_in_opmath(self, other), name="div")


@register("polygamma.out")
def polygamma_out(n, self, *, out):
    prepare_out(out, self.shape, to_float(self.dtype), (self,), layout_from=(self,))
    return compute_into(out, polygamma, (self,), to_float(self.dtype), (n,))


@register("nan_to_num.out")
def nan_to_num_out(self, nan=None, posinf=None, neginf=None, *, out):
    if out.dtype != self.dtype:
        raise RuntimeError(f"nan_to_num: dtype of out: {scalar_type_name(out.dtype)} should be same as input: "
                           f"{scalar_type_name(self.dtype)}")
    prepare_out(out, self.shape, inputs=(self,), layout_from=(self,))
    replacement = nan_to_num_defaults(self.dtype, nan, posinf, neginf)
    return compute_into(out, nan_to_num, (self,), self.dtype, replacement)


@register("where.self")
def where_self(condition, self, other):
    out = new_output((condition, self, other), common_dtype(self, other))
    return where_into(out, condition, self, other)


@register("where.self_out")
def where_self_out(condition, self, other, *, out):
    dtype = common_dtype(self, other)
    if out.dtype != dtype:
        raise RuntimeError(f"Expected out type to be {scalar_type_name(dtype)} but got {scalar_type_name(out.dtype)}")
    prepare_out(out, broadcast_shape(condition, self, other), inputs=(condition, self, other),
                layout_from=(condition, self, other))
    return where_into(out, condition, self, other)


def where_into(out, condition, self, other):
    if condition.dtype != torch.bool:
        raise RuntimeError(f"where expected condition to be a boolean tensor, but got a tensor with dtype "
                           f"{scalar_type_name(condition.dtype)}")
    compute = opmath_dtype(common_dtype(self, other))
    return write(out, where(operand(condition), as_compute(self, compute), as_compute(other, compute)))


def check_complex_parts(result_dtype, real, imag, out=None):
    """CPU's torch.complex takes two floating tensors of one dtype, and gives (or writes) its complex dtype."""
    if not all(t.dtype in (torch.float16, torch.float32, torch.float64) for t in (real, imag)):
        raise RuntimeError(f"Expected both inputs to be Half, Float or Double tensors but got "
                           f"{scalar_type_name(real.dtype)} and {scalar_type_name(imag.dtype)}")
    if real.dtype != imag.dtype:
        raise RuntimeError(f"Expected object of scalar type {scalar_type_name(real.dtype)} but got scalar type "
                           f"{scalar_type_name(imag.dtype)} for second argument")
    if out is not None and out.dtype != real.dtype.to_complex():
        raise RuntimeError(f"Expected object of scalar type {scalar_type_name(real.dtype.to_complex())} but got scalar "
                           f"type {scalar_type_name(out.dtype)} for argument 'out'")


def complex_from_parts(real, imag):
    result = np.empty(np.broadcast_shapes(real.shape, imag.shape), np.result_type(real.dtype, np.complex64))
    result.real, result.imag = real, imag  # each part exactly as given, NaN and -0.0 included
    return result


@register("complex")
def complex_(real, imag):
    check_complex_parts(None, real, imag)
    return store(complex_from_parts(operand(real), operand(imag)), real.dtype.to_complex())


@register("complex.out")
def complex_out(real, imag, *, out):
    check_complex_parts(None, real, imag, out)
    return store(complex_from_parts(operand(real), operand(imag)), out.dtype, out=out, inputs=(real, imag))


RSUB_SCALARS = checked_scalars(aten.rsub.Tensor._schema)


@register("rsub.Tensor")
def rsub(self, other, alpha=1):
    dtype = common_dtype(self, other)
    check_sub(dtype, other, self, alpha)
    check_scalar_conversions(RSUB_SCALARS, (self, other), {"alpha": alpha}, dtype)
    return compute_into(empty(broadcast_shape(self, other), dtype), sub, (other, self), dtype,
                        (scalar_in_dtype(alpha, dtype),), name="sub")  # alpha as sub's kernel reads it


@register("glu_backward")
def glu_backward_functional(grad_output, self, dim):
    return glu_backward_out(grad_output, self, dim, grad_input=empty(self.shape, self.dtype))


@register("glu_backward.grad_input")
def glu_backward_out(grad_output, self, dim, *, grad_input):
    require(self.dtype.is_floating_point, self.dtype, "glu_backward")
    prepare_out(grad_input, self.shape, inputs=(grad_output, self))
    compute = opmath_dtype(self.dtype)
    grad, x = as_compute(grad_output, compute), as_compute(self, compute)
    with np.errstate(all="ignore"):
        return write(grad_input, glu_backward(grad, x, dim, numpy_dtype(self.dtype)))


@register("glu_jvp")
def glu_jvp_kernel(glu_result, x, dx, dim):
    compute = opmath_dtype(x.dtype)
    with np.errstate(all="ignore"):
        tangent = glu_jvp(*(as_compute(t, compute) for t in (glu_result, x, dx)), dim)
    return store(tangent, glu_result.dtype)


@register("glu_backward_jvp")
def glu_backward_jvp_kernel(grad_x, grad_glu, x, dgrad_glu, dx, dim):
    compute = opmath_dtype(x.dtype)
    with np.errstate(all="ignore"):
        tangent = glu_backward_jvp(*(as_compute(t, compute) for t in (grad_glu, x, dgrad_glu, dx)), dim)
    return store(tangent, grad_x.dtype)


@register("log_sigmoid_forward")
def log_sigmoid_forward(self):
    return log_sigmoid_forward_out(self, output=empty(self.shape, self.dtype), buffer=empty((0,), self.dtype))


@register("log_sigmoid_forward.output")
def log_sigmoid_forward_out(self, *, output, buffer):
    require(self.dtype.is_floating_point, self.dtype, "log_sigmoid_forward")
    prepare_out(output, self.shape, self.dtype, (self,))
    x = as_compute(self, opmath_dtype(self.dtype))
    with np.errstate(all="ignore"):
        write(output, np.minimum(x, scalar(0, x)) - real_log1p(exp(-np.abs(x))))
    return output, buffer


@register("log_sigmoid_backward")
def log_sigmoid_backward(grad_output, self, buffer):
    out = empty(broadcast_shape(grad_output, self), common_dtype(grad_output, self))
    return log_sigmoid_backward_out(grad_output, self, buffer, grad_input=out)


@register("log_sigmoid_backward.grad_input")
def log_sigmoid_backward_out(grad_output, self, buffer, *, grad_input):
    prepare_out(grad_input, broadcast_shape(grad_output, self), common_dtype(grad_output, self), (grad_output, self))
    compute = opmath_dtype(common_dtype(grad_output, self))
    grad, x = as_compute(grad_output, compute), as_compute(self, compute)
    with np.errstate(all="ignore"):
        # CPU reads exp(-|x|) from the forward's buffer, stored in the input's dtype; tpu's buffer is empty, as
        # CUDA's, and the backward recomputes it, rounded as that buffer would hold it
        z = exp(-np.abs(x)).astype(numpy_dtype(self.dtype)).astype(compute)
        negative = x < 0
        derivative = np.where(negative, scalar(1, x), scalar(0, x)) - np.where(negative, 1, -1).astype(compute) * (z / (1 + z))
        return write(grad_input, grad * derivative)


@register("_prelu_kernel_backward")
def prelu_backward(grad_output, self, weight):
    compute = opmath_dtype(common_dtype(self, weight))
    grad, x, w = (as_compute(t, compute) for t in (grad_output, self, weight))
    positive = x > 0
    input_grad = store(np.where(positive, grad, w * grad), self.dtype)
    weight_grad = store(np.where(positive, scalar(0, x), x * grad), weight.dtype)
    return input_grad, weight_grad


# --------------------------------------------------------------------------------------------------
# The hot path: functional and in-place add/sub/mul/div registered directly, skipping the structured
# wrapper and its output allocation. The common case (tpu tensors, or a CPU float scalar, already of
# the result dtype) goes straight to one NumPy ufunc writing into the new tensor; anything else takes
# the general ``.out`` kernel above, which has every check.

# dtypes NumPy computes exactly as PyTorch does (no opmath widening, no bool-specific rules)
# dtypes whose binary ops NumPy computes exactly as PyTorch does, in the same dtype
_NATIVE_SAME = frozenset({torch.float32, torch.float64})
_NATIVE_REAL = frozenset({torch.float32, torch.float64, torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8})
_NATIVE = _NATIVE_REAL | {torch.complex64, torch.complex128}


def native_operand(value, dtype):
    """A NumPy view, Python float or NumPy integer usable as is for ``dtype``; None when conversion is needed."""
    if not isinstance(value, torch.Tensor):
        if isinstance(value, float):
            return value if dtype.is_floating_point else None
        if type(value) is not int:
            return None
        return floating_scalar(value) if dtype.is_floating_point else integer_scalar(value, dtype)
    if value.is_cpu:
        if value.dim():
            raise device_mismatch("tpu:0", value.device)
        if dtype.is_floating_point:
            return value.item() if value.dtype.is_floating_point else None
        if value.dtype.is_floating_point or value.dtype.is_complex or value.dtype is torch.bool:
            return None  # (sub refuses bool operands: the general path's checks say so)
        return integer_scalar(value.item(), dtype)
    if value.dtype != dtype or value.is_conj() or value.is_neg():
        return None
    return as_numpy(value)


def floating_scalar(value):
    """An integer number (a mean's backward divides by its count, ``mean_backward``'s ``grad / n``) as the Python
    float NumPy converts to a float tensor's dtype: exact in double up to 2**53, so that the one rounding to
    float32 is C++'s int64 -> float cast; None past it (double rounding)."""
    return float(value) if -2 ** 53 <= value <= 2 ** 53 else None


def integer_scalar(value, dtype):
    """An int64 number (batch norm's ``num_batches_tracked += 1``) for an integer ``dtype``, converted as C++'s
    cast converts it (wrapping); None for other dtypes and numbers past int64."""
    if dtype.is_floating_point or dtype.is_complex or not -2 ** 63 <= value < 2 ** 63:
        return None
    return np.asarray(value, np.int64).astype(numpy_dtype(dtype))


def result_shape(self, other):
    if not isinstance(self, torch.Tensor):  # a wrapped number, as rsub.Scalar passes sub.Tensor
        return other.shape
    if isinstance(other, torch.Tensor) and self.shape != other.shape:
        return broadcast_shapes(self.shape, other.shape)
    return self.shape


def hot_binary(ufunc, out_kernel, rule=keep, meta_check=None, native=_NATIVE):
    """``meta_check(dtype, self, other, **options)``: the op's meta function's checks, which CPU runs before
    TensorIterator's in-place castability check. ``native``: the dtypes ``ufunc`` alone computes as CPU does."""

    def functional(self, other, **options):
        if (isinstance(self, torch.Tensor) and isinstance(other, torch.Tensor) and self.dtype is other.dtype
                and self.dtype in _NATIVE_SAME
                and self.shape == other.shape and not options
                # a real tensor never has the conjugate bit; a negative view (torch._neg_view) it may
                and not (self.is_cpu or other.is_cpu or self.is_neg() or other.is_neg())
                and self.is_contiguous() and other.is_contiguous()):
            # the commonest call, two tpu tensors alike: no promotion, no broadcasting, and
            # every rule keeps a float32/float64 result type
            out, array = empty_with_array(self.shape, self.dtype)
            vpu.apply(ufunc, as_numpy(self), as_numpy(other), out=array)
            return out
        dtype = rule(torch.result_type(self, other))
        if not options and dtype in native:
            a, b = native_operand(self, dtype), native_operand(other, dtype)
            if a is not None and b is not None:
                if all_contiguous((self, other)):
                    out, array = empty_with_array(result_shape(self, other), dtype)
                else:  # strided operands (a transposed or permuted view): the out kernel's layout, without its checks
                    out = new_output((self, other), dtype)
                    array = as_numpy(out)
                vpu.apply(ufunc, a, b, out=array)
                return out
        return out_kernel(self, other, **options, out=new_output((self, other), rule(common_dtype(self, other))))

    def inplace(self, other, **options):
        dtype = rule(torch.result_type(self, other))
        check_no_internal_overlap(self)
        check_no_partial_overlap(self, other)
        if not options and dtype is self.dtype and dtype in native:
            b = native_operand(other, dtype)
            if b is not None and result_shape(self, other) == self.shape:
                target = as_numpy(self)
                vpu.apply(ufunc, target, b, out=target)
                return self
        if meta_check is not None:
            meta_check(dtype, self, other, **options)
        check_inplace(self, dtype, broadcast_shape(self, other))
        return out_kernel(self, other, **options, out=self)

    return functional, inplace


HOT_META_CHECKS = {"sub": check_sub}  # sub refuses bool operands before the in-place cast check
# complex add/sub multiply by alpha even when it is 1; complex mul rounds as CPU's lanes do (complex_product)
HOT_NATIVE = {"add": _NATIVE_REAL, "sub": _NATIVE_REAL, "mul": _NATIVE_REAL}


def register_hot_path():
    for name, (ufunc, rule) in HOT_BINARY.items():
        functional, inplace = hot_binary(ufunc, KERNELS[f"{name}.out"], rule, HOT_META_CHECKS.get(name),
                                         HOT_NATIVE.get(name, _NATIVE))
        register(f"{name}.Tensor")(functional)
        register(f"{name}_.Tensor")(inplace)


register_hot_path()


@register("frexp.Tensor_out")
def frexp_out(self, *, mantissa, exponent):
    """``self = mantissa * 2 ** exponent`` with 0.5 <= |mantissa| < 1; bfloat16 splits exactly in float32."""
    if not self.dtype.is_floating_point:
        raise RuntimeError("torch.frexp() only supports floating-point dtypes")
    if mantissa.dtype != self.dtype:
        raise RuntimeError(f"torch.frexp() expects mantissa to have dtype {self.dtype} but got {mantissa.dtype}")
    if exponent.dtype != torch.int32:
        raise RuntimeError(f"torch.frexp() expects exponent to have int dtype but got {exponent.dtype}")
    fraction, power = np.frexp(operand(self, "frexp").astype(opmath_dtype(self.dtype), copy=False))
    write(prepare_out(mantissa, self.shape, inputs=(self,)), fraction)
    write(prepare_out(exponent, self.shape, inputs=(self,)), power)
    return mantissa, exponent
