"""Linear algebra kernels: the matmul family through the MXU, and torch.linalg.

Every product goes through ``mxu_matmul``, which applies the user's
``torch.set_float32_matmul_precision`` (see ``torch_tpu._C.mxu`` for the numerics):
"highest" (PyTorch's default) is XLA's HIGHEST, 6 bf16 passes, computed as one float32
matmul (the two agree to float32 rounding: docs/numerics.md); "high" is 3 bf16 passes and
"medium" 1 bf16 pass, as XLA's HIGH and DEFAULT precisions on a real TPU.

The hot functional overloads (mm, bmm, addmm, ...) are registered next to their ``.out``
overloads so they skip the structured wrapper. ``.out`` overloads reach us unchecked, so
every kernel validates its arguments; an invalid call is re-run on CPU stand-ins
(``_errors.raise_cpu_error``) so the error is exactly PyTorch's own.
"""

import functools
import math
import warnings

import numpy as np
import scipy.linalg
import torch
from .._C import mxu, vpu
from .._errors import raise_cpu_error
from ._common import (as_numpy, check_scalar_fits, converted, empty, exact_dtype, operand, opmath_operand,
                      opmath_scalar_type, prepare_out, store, through_math_bits, write)
from ._registry import register


# What torch CPU multiplies; bool and the wide unsigned types have no CPU matmul either
# (addr, elementwise on CPU, alone takes bool).
MATMUL_DTYPES = frozenset({
    torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64,
    torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.complex64, torch.complex128,
    torch.float8_e4m3fn, torch.float8_e5m2,
})


# --- the way onto the MXU -------------------------------------------------------------------


@functools.cache
def _warn_float64():
    warnings.warn(
        "tpu: float64 matmul has no MXU support on a TPU; torch_tpu computes it in float64 on the "
        "host so the program runs, but a real TPU would emulate it slowly or reject it.",
        stacklevel=4,
    )


def float32_passes():
    """The bf16 passes the MXU computes a float32 matmul in, at the user's float32 matmul precision."""
    return mxu.FLOAT32_PRECISION[torch.get_float32_matmul_precision()][1]


def mxu_matmul(a, b, out=None):
    """``np.matmul`` on the emulated MXU at the user's float32 matmul precision."""
    if a.dtype == np.float64 or b.dtype == np.float64:
        _warn_float64()
    return mxu.matmul(a, b, out, precision_passes=float32_passes())


def mxu_multiplier(a_dtype, b):
    """``lambda a: mxu_matmul(a, b)`` for many ``a`` of ``a_dtype`` against one ``b``, checked and split once."""
    if a_dtype == np.float64 or b.dtype == np.float64:
        _warn_float64()
    return mxu.multiplier(a_dtype, b, precision_passes=float32_passes())


def scaled_sum(product, bias, beta, alpha):
    """``beta * bias + alpha * product`` in the accumulator's precision, in ``product``'s memory.

    Like BLAS, ``beta == 0`` ignores ``bias`` (NaN included) and ``alpha == 0`` the product.
    Integer results truncate the scalars to integers first, as CPU does.
    """
    if product.dtype.kind in "iu":
        beta, alpha = int(beta), int(alpha)
    if alpha == 0:
        product = np.zeros_like(product)
    elif alpha != 1:
        product *= alpha
    if beta != 0:
        bias = bias.astype(product.dtype, copy=False)
        product += bias if beta == 1 else beta * bias
    return product


def scaled_sum_into(out, product, bias, beta, alpha, target=None):
    """``out = beta * bias + alpha * product`` (``scaled_sum``), rounded once into ``out``; ``target``: out's
    NumPy view, when the product was computed there."""
    product = scaled_sum(product, bias, beta, alpha)
    if product is target if target is not None else (
            product.base is not None and np.may_share_memory(product, as_numpy(out))):
        return out  # the product was computed in out's own memory
    return write(out, product)


# --- argument checks ------------------------------------------------------------------------


def _check(valid, op, *args, **kwargs):
    if not valid:
        raise_cpu_error(op, *args, **kwargs)


def _same_dtype_of(allowed, *tensors):
    dtype = tensors[0].dtype
    return dtype in allowed and all(t.dtype == dtype for t in tensors)


def _broadcasts_to(tensor, shape):
    if tuple(tensor.shape) in (shape, shape[1:]):  # a bias of the result's shape or one row of it
        return True
    try:
        return np.broadcast_shapes(tuple(tensor.shape), shape) == shape
    except ValueError:
        return False


def checked_out(out, shape, dtype, out_overload, *args, **kwargs):
    """``out=`` must have the result's dtype; its shape is resized like PyTorch resizes it."""
    if out.dtype != dtype:
        raise_cpu_error(out_overload, *args, out=torch.empty(0, dtype=out.dtype), **kwargs)
    return prepare_out(out, shape)


def _castable_out(out, shape, dtype, out_overload, *args, **kwargs):
    """TensorIterator's ``out=`` (addr's): any dtype the result casts to."""
    return prepare_out(out, shape, dtype, inputs=args)


# --- the matmul family ----------------------------------------------------------------------
# Each op is a validating ``shape_of(op, *args) -> (shape, dtype)`` and a ``compute(out, *args)``;
# a product shape function returns None for operands that cannot be multiplied.


def _mm_shape(self, mat2):
    if self.dim() == 2 and mat2.dim() == 2 and self.shape[1] == mat2.shape[0]:
        return (self.shape[0], mat2.shape[1])
    return None


def _bmm_shape(self, mat2):
    if self.dim() == 3 and mat2.dim() == 3 and self.shape[0] == mat2.shape[0] and self.shape[2] == mat2.shape[1]:
        return (self.shape[0], self.shape[1], mat2.shape[2])
    return None


def _bmm_summed_shape(batch1, batch2):
    shape = _bmm_shape(batch1, batch2)
    return None if shape is None else shape[1:]


def _mv_shape(self, vec):
    if self.dim() == 2 and vec.dim() == 1 and self.shape[1] == vec.shape[0]:
        return (self.shape[0],)
    return None


def _dot_shape(self, tensor):
    return () if self.dim() == 1 and tensor.dim() == 1 and self.shape == tensor.shape else None


def _outer_shape(vec1, vec2):
    return (vec1.shape[0], vec2.shape[0]) if vec1.dim() == 1 and vec2.dim() == 1 else None


def _product(product_shape):
    """The checks of ``first @ second``."""

    def shape_of(op, first, second):
        shape = product_shape(first, second)
        _check(shape is not None and _same_dtype_of(MATMUL_DTYPES, first, second), op, first, second)
        return shape, first.dtype

    return shape_of


def _biased_product(product_shape, scalar_type=opmath_scalar_type):
    """The checks of ``beta * self + alpha * (first @ second)``; ``scalar_type(dtype)``: the type CPU converts beta
    and alpha to, checked (the gemm's opmath type; addmv's own dtype)."""

    def shape_of(op, self, first, second, *, beta=1, alpha=1):
        shape = product_shape(first, second)
        valid = shape is not None and _same_dtype_of(MATMUL_DTYPES, self, first, second) and _broadcasts_to(self, shape)
        _check(valid, op, self, first, second, beta=beta, alpha=alpha)
        for scalar in (beta, alpha):  # the gemm's ``alpha.to<opmath_t>()``, checked
            check_scalar_fits(scalar, scalar_type(self.dtype))
        return shape, self.dtype

    return shape_of


def _addr_scalar_fits(scalar, dtype):
    """CPU's addr takes a bool beta/alpha only for a bool result, and a whole number only for an integral one."""
    if isinstance(scalar, bool):
        return dtype == torch.bool
    if dtype.is_complex:
        return True
    if dtype.is_floating_point:
        return not isinstance(scalar, complex)
    return isinstance(scalar, int)


def _addr_dtype(self, vec1, vec2):
    """Unlike the matmuls, addr is elementwise on CPU (TensorIterator): its operands promote to one dtype."""
    return functools.reduce(torch.promote_types, (vec1.dtype, vec2.dtype), self.dtype)


def _addr_shape_of(op, self, vec1, vec2, *, beta=1, alpha=1):
    shape = _outer_shape(vec1, vec2)
    dtype = _addr_dtype(self, vec1, vec2)
    valid = (shape is not None and dtype in MATMUL_DTYPES | {torch.bool} and _broadcasts_to(self, shape)
             and _addr_scalar_fits(beta, dtype) and _addr_scalar_fits(alpha, dtype))
    _check(valid, op, self, vec1, vec2, beta=beta, alpha=alpha)
    for scalar in (beta, alpha):  # addr's elementwise kernel converts them to its dtype (``to<scalar_t>()``), checked
        check_scalar_fits(scalar, dtype)
    return shape, dtype


def _product_into(out, self, other):
    mxu_matmul(operand(self), operand(other), as_numpy(out))
    return out


def _conj_product_into(out, self, other):
    mxu_matmul(np.conj(operand(self)), operand(other), as_numpy(out))
    return out


def _addmm_into(out, self, first, second, *, beta=1, alpha=1):
    a, b, bias = operand(first), operand(second), operand(self)
    target = as_numpy(out)
    # The product may go straight into out's memory unless out holds an operand (addmm_ reads its self as the bias).
    direct = target.dtype == mxu.accumulator_dtype(a.dtype, b.dtype) and not any(
        np.may_share_memory(target, array) for array in (a, b, bias))
    if direct:
        return scaled_sum_into(out, mxu_matmul(a, b, target), bias, beta, alpha, target)
    return scaled_sum_into(out, mxu_matmul(a, b), bias, beta, alpha)


def _addr_into(out, self, vec1, vec2, *, beta=1, alpha=1):
    """The outer product is a depth-1 matmul, of the vectors converted to the promoted dtype."""
    dtype = _addr_dtype(self, vec1, vec2)
    if out.dtype != dtype:  # TensorIterator computes in the promoted dtype (bool: logically), then casts into out
        result = _addr_into(empty(tuple(out.shape), dtype), self, vec1, vec2, beta=beta, alpha=alpha)
        return write(out, as_numpy(result))
    first, second = (converted(operand(vec), dtype) for vec in (vec1, vec2))
    if dtype in _ADDR_ROUNDED_EACH_STEP:
        return write(out, _addr_in_16_bits(operand(self), first, second, beta, alpha))
    product = mxu_matmul(first[:, None], second[None, :])
    if alpha == 0 and product.dtype.kind in "fc":  # unlike addmm, CPU's addr scales by a zero alpha: NaN stays NaN
        product *= alpha
        alpha = 1
    return scaled_sum_into(out, product, operand(self), beta, alpha)


# CPU's addr is elementwise (TensorIterator), and c10's 16-bit arithmetic rounds after every operation, in its
# vector loop as in its scalar one (each Vectorized op converts to float and back)
_ADDR_ROUNDED_EACH_STEP = frozenset({torch.bfloat16, torch.float16})


def _addr_in_16_bits(bias, first, second, beta, alpha):
    """CPU's ``beta * self + alpha * vec1 * vec2`` for bf16/fp16, each product and the sum rounded to the
    16-bit format, left to right (``(alpha * vec1) * vec2``: an fp16 ``alpha * vec1`` overflows before a zero
    ``vec2`` makes it NaN); the numbers converted as ``Scalar::to<scalar_t>()`` does, through float."""
    narrow = first.dtype
    beta, alpha = (np.float32(value).astype(narrow) for value in (beta, alpha))
    with np.errstate(all="ignore"):
        product = (alpha * first)[:, None] * second[None, :]
        if beta == 0:  # self is ignored, NaN and inf included
            return product
        return beta * bias.astype(narrow, copy=False) + product


def _addbmm_into(out, self, batch1, batch2, *, beta=1, alpha=1):
    """The batch sum is one MXU accumulation over the batches laid side by side along k.

    When the output is narrower than the accumulator (bfloat16, float16), CPU runs one addmm_
    per batch instead, rounding the running sum to the output dtype each time: so do we.
    """
    b1, b2 = operand(batch1), operand(batch2)
    batches, rows, depth = b1.shape
    if as_numpy(out).dtype != mxu.accumulator_dtype(b1.dtype, b2.dtype) and batches:
        bias = operand(self)
        for first, second in zip(b1, b2):
            scaled_sum_into(out, mxu_matmul(first, second), bias, beta, alpha)
            bias, beta = as_numpy(out), 1
        return out
    side_by_side = b1.transpose(1, 0, 2).reshape(rows, batches * depth)
    product = mxu_matmul(side_by_side, b2.reshape(batches * depth, b2.shape[2]))
    return scaled_sum_into(out, product, operand(self), beta, alpha)


PRODUCTS = {
    # aten name: (validating shape function, compute)
    "mm": (_product(_mm_shape), _product_into),
    "bmm": (_product(_bmm_shape), _product_into),
    "dot": (_product(_dot_shape), _product_into),
    "vdot": (_product(_dot_shape), _conj_product_into),
    "addmm": (_biased_product(_mm_shape), _addmm_into),
    "baddbmm": (_biased_product(_bmm_shape), _addmm_into),
    "addmv": (_biased_product(_mv_shape, scalar_type=lambda dtype: dtype), _addmm_into),
    "addbmm": (_biased_product(_bmm_summed_shape), _addbmm_into),
    "addr": (_addr_shape_of, _addr_into),
}

OUT_CHECKS = {"addr": _castable_out}  # the rest are structured kernels: out= of the result's very dtype


def _register_product(name, shape_of, compute):
    packet = getattr(torch.ops.aten, name)

    @register(packet.default)
    def functional(*args, **kwargs):
        shape, dtype = shape_of(packet.default, *args, **kwargs)
        return compute(empty(shape, dtype), *args, **kwargs)

    @register(packet.out)
    def out_variant(*args, out, **kwargs):
        shape, dtype = shape_of(packet.default, *args, **kwargs)
        out = OUT_CHECKS.get(name, checked_out)(out, shape, dtype, packet.out, *args, **kwargs)
        return through_math_bits(out, lambda target: compute(target, *args, **kwargs))


for _name, (_shape_of, _compute) in PRODUCTS.items():
    _register_product(_name, _shape_of, _compute)


@register("addbmm_")
def addbmm_(self, batch1, batch2, *, beta=1, alpha=1):
    shape, _ = PRODUCTS["addbmm"][0](torch.ops.aten.addbmm_.default, self, batch1, batch2, beta=beta, alpha=alpha)
    _check(tuple(self.shape) == shape, torch.ops.aten.addbmm_.default, self, batch1, batch2, beta=beta, alpha=alpha)
    return _addbmm_into(self, self, batch1, batch2, beta=beta, alpha=alpha)


# --- torch.linalg through LAPACK (scipy) ----------------------------------------------------
# The structured linalg ops reach us as their out= overloads, outputs allocated (often
# column-major, as LAPACK writes them) by PyTorch's meta functions. LAPACK's ``info`` codes are
# returned unchanged, so ``_linalg_check_errors`` words failures exactly as on CPU.

LAPACK_DTYPES = frozenset({torch.float32, torch.float64, torch.complex64, torch.complex128})


def _lapack_function(name, array):
    return scipy.linalg.lapack.get_lapack_funcs(name, (array,))


def _lapack_operand(op, tensor, *args, **kwargs):
    """A batch of matrices LAPACK can take, or the CPU's error for this call."""
    _check(tensor.dtype in LAPACK_DTYPES and tensor.dim() >= 2, op, *args, **kwargs)
    return operand(tensor, str(op))


def _each_matrix(function, *operands, core_dims=None):
    """Apply ``function`` (matrices -> tuple of arrays) to each matrix of a non-empty batch; stack each output.

    Several operands have their batches broadcast; ``core_dims`` says how many trailing dimensions of each operand
    make one item (2, a matrix, by default; 1 for pivots or tau).
    """
    core_dims = core_dims or (2,) * len(operands)
    cores = [x.shape[x.ndim - dims:] for x, dims in zip(operands, core_dims)]
    batch = np.broadcast_shapes(*(x.shape[:x.ndim - dims] for x, dims in zip(operands, core_dims)))
    flat = [np.broadcast_to(x, batch + core).reshape(math.prod(batch), *core) for x, core in zip(operands, cores)]
    outputs = zip(*(function(*items) for items in zip(*flat)))
    return tuple(np.stack(parts).reshape(batch + np.shape(parts[0])) for parts in outputs)


@register("_linalg_check_errors")
def linalg_check_errors(info, api_name, *, is_matrix):
    """LAPACK info codes become CPU's exact errors: the check itself runs on a CPU copy of ``info``."""
    codes = operand(info, "_linalg_check_errors")
    if codes.any():
        torch.ops.aten._linalg_check_errors(torch.from_numpy(np.array(codes)), api_name, is_matrix=is_matrix)


def _potrf(matrix, upper):
    factor, info = _lapack_function("potrf", matrix)(matrix, lower=not upper, clean=True)
    return factor, np.int32(info)


def _store_empty_batch(a, result, info):
    """An empty batch (or 0x0 matrices) factors or inverts without error: ``result`` takes the batch's shape
    (an out= tensor is resized) and ``info`` is zeroed, not left with its allocation's bytes."""
    store(a, out=result, dtype_rule=exact_dtype)
    store(np.zeros(a.shape[:-2], np.int32), out=info, dtype_rule=exact_dtype)


@register("linalg_cholesky_ex.L")
def linalg_cholesky_ex(self, *, upper=False, check_errors=False, L, info):
    a = _lapack_operand(torch.ops.aten.linalg_cholesky_ex.default, self, self, upper=upper)
    if a.size:
        factor, codes = _each_matrix(lambda m: _potrf(m, upper), a)
        store(factor, out=L, dtype_rule=exact_dtype)
        store(codes, out=info, dtype_rule=exact_dtype)
    else:
        _store_empty_batch(a, L, info)
    if check_errors:
        linalg_check_errors(info, "linalg.cholesky_ex", is_matrix=self.dim() == 2)
    return L, info


@register("cholesky", "cholesky.out")
def cholesky(self, upper=False, *, out=None):
    if out is not None:  # CPU's checkLinalgCompatibleDtype: any out= the result safely casts to
        _check(torch.can_cast(self.dtype, out.dtype), torch.ops.aten.cholesky.out, self, upper,
               out=torch.empty(0, dtype=out.dtype))
    L, info = torch.ops.aten.linalg_cholesky_ex.default(self, upper=upper)
    linalg_check_errors(info, "cholesky", is_matrix=self.dim() == 2)
    return L if out is None else prepare_out(out, L.shape, L.dtype, dtype_rule=None).copy_(L)


def _getrf(matrix):
    lu, pivots, info = _lapack_function("getrf", matrix)(matrix)
    return lu, (pivots + 1).astype(np.int32), np.int32(info)  # PyTorch counts pivots from 1


def _lu_factor(a):
    if not a.size:
        rows, columns = a.shape[-2:]
        return a.copy(), np.ones((*a.shape[:-2], min(rows, columns)), np.int32), np.zeros(a.shape[:-2], np.int32)
    return _each_matrix(_getrf, a)


@register("linalg_lu_factor_ex.out")
def linalg_lu_factor_ex(A, *, pivot=True, check_errors=False, LU, pivots, info):
    op = torch.ops.aten.linalg_lu_factor_ex.default
    _check(pivot, op, A, pivot=pivot)
    lu, pivot_indices, codes = _lu_factor(_lapack_operand(op, A, A, pivot=pivot))
    store(lu, out=LU, dtype_rule=exact_dtype)
    store(pivot_indices, out=pivots, dtype_rule=exact_dtype)
    store(codes, out=info, dtype_rule=exact_dtype)
    if check_errors:
        linalg_check_errors(info, "torch.linalg.lu_factor_ex", is_matrix=A.dim() == 2)
    return LU, pivots, info


def _permutation_sign(pivots):
    """(-1)**(number of row swaps) of LAPACK pivots (1-based)."""
    swaps = np.count_nonzero(pivots != np.arange(1, pivots.shape[-1] + 1), axis=-1)
    return np.where(swaps % 2, -1, 1)


def _determinant_lu(op, A):
    """PyTorch factors A^T when A is contiguous and real (det(A^T) = det(A), no copy for LAPACK);
    the backward formulas read LU knowing that, so we factor the same matrix."""
    a = _lapack_operand(op, A, A)
    return _lu_factor(np.swapaxes(a, -1, -2) if A.is_contiguous() and not A.is_complex() else a)


@register("_linalg_det.result")
def linalg_det(A, *, result, LU, pivots):
    lu, pivot_indices, _ = _determinant_lu(torch.ops.aten._linalg_det.default, A)
    diagonal = np.diagonal(lu, axis1=-2, axis2=-1)
    store(_permutation_sign(pivot_indices).astype(lu.dtype) * np.prod(diagonal, axis=-1), out=result,
          dtype_rule=exact_dtype)
    store(lu, out=LU, dtype_rule=exact_dtype)
    store(pivot_indices, out=pivots, dtype_rule=exact_dtype)
    return result, LU, pivots


@register("_linalg_slogdet.sign")
def linalg_slogdet(A, *, sign, logabsdet, LU, pivots):
    lu, pivot_indices, _ = _determinant_lu(torch.ops.aten._linalg_slogdet.default, A)
    diagonal = np.diagonal(lu, axis1=-2, axis2=-1)
    magnitude = np.abs(diagonal)
    with np.errstate(divide="ignore", invalid="ignore"):
        unit = np.where(magnitude == 0, 0, diagonal / magnitude)
        log_magnitude = np.log(magnitude).sum(axis=-1)
    store(_permutation_sign(pivot_indices).astype(lu.dtype) * np.prod(unit, axis=-1), out=sign, dtype_rule=exact_dtype)
    store(log_magnitude, out=logabsdet, dtype_rule=exact_dtype)
    store(lu, out=LU, dtype_rule=exact_dtype)
    store(pivot_indices, out=pivots, dtype_rule=exact_dtype)
    return sign, logabsdet, LU, pivots


def _getri(matrix):
    lu, pivots, info = _lapack_function("getrf", matrix)(matrix)
    if info == 0:
        inverse, info = _lapack_function("getri", lu)(lu, pivots)
        return inverse, np.int32(info)
    return np.full_like(matrix, np.nan), np.int32(info)


@register("linalg_inv_ex.inverse")
def linalg_inv_ex(A, *, check_errors=False, inverse, info):
    op = torch.ops.aten.linalg_inv_ex.default
    a = _lapack_operand(op, A, A)
    _check(a.shape[-1] == a.shape[-2], op, A)
    if a.size:
        inverted, codes = _each_matrix(_getri, a)
        store(inverted, out=inverse, dtype_rule=exact_dtype)
        store(codes, out=info, dtype_rule=exact_dtype)
    else:
        _store_empty_batch(a, inverse, info)
    if check_errors:
        linalg_check_errors(info, "linalg.inv_ex", is_matrix=A.dim() == 2)
    return inverse, info


def _solve_with_lu(lu, pivots, rhs, transpose):
    """Solve with LAPACK getrs for batches broadcast against each other; ``transpose`` 0, 1 (T) or 2 (H)."""
    batch = np.broadcast_shapes(lu.shape[:-2], rhs.shape[:-2])
    if not (lu.size and rhs.size):  # then the solution is empty too
        return np.empty(batch + rhs.shape[-2:], rhs.dtype)
    lu = np.broadcast_to(lu, batch + lu.shape[-2:]).reshape(-1, *lu.shape[-2:])
    pivots = np.broadcast_to(pivots, batch + pivots.shape[-1:]).reshape(-1, pivots.shape[-1])
    rhs = np.broadcast_to(rhs, batch + rhs.shape[-2:]).reshape(-1, *rhs.shape[-2:])
    getrs = _lapack_function("getrs", lu[:1])
    solved = [getrs(m, p - 1, b, trans=transpose)[0] for m, p, b in zip(lu, pivots, rhs)]
    return np.stack(solved).reshape(*batch, *rhs.shape[-2:])


def _solve_sides(lu, pivots, b, left, adjoint):
    """X with op(A) X = B (left) or X op(A) = B, through getrs on A's LU factors."""
    if left:
        return _solve_with_lu(lu, pivots, b, 2 if adjoint else 0)
    # X A = B  <=>  A^T X^T = B^T;  X A^H = B  <=>  A X^H = B^H
    if adjoint:
        return np.conj(np.swapaxes(_solve_with_lu(lu, pivots, np.conj(np.swapaxes(b, -1, -2)), 0), -1, -2))
    return np.swapaxes(_solve_with_lu(lu, pivots, np.swapaxes(b, -1, -2), 1), -1, -2)


@register("linalg_lu_solve.out")
def linalg_lu_solve(LU, pivots, B, *, left=True, adjoint=False, out):
    op = torch.ops.aten.linalg_lu_solve.default
    lu = _lapack_operand(op, LU, LU, pivots, B, left=left, adjoint=adjoint)
    _check(B.dtype == LU.dtype and B.dim() >= 2, op, LU, pivots, B, left=left, adjoint=adjoint)
    store(_solve_sides(lu, operand(pivots), operand(B), left, adjoint), out=out, dtype_rule=exact_dtype)
    return out


@register("_linalg_solve_ex.result")
def linalg_solve_ex(A, B, *, left=True, check_errors=False, result, LU, pivots, info):
    op = torch.ops.aten._linalg_solve_ex.default
    a = _lapack_operand(op, A, A, B, left=left)
    lu, pivot_indices, codes = _lu_factor(a)
    b = operand(B, "linalg.solve")
    vector = b.ndim == 1 or (b.ndim == a.ndim - 1 and b.shape == a.shape[:-1])  # PyTorch's rule
    rhs = b[..., None] if vector else b
    solution = _solve_sides(lu, pivot_indices, rhs, left, adjoint=False)
    store(lu, out=LU, dtype_rule=exact_dtype)
    store(pivot_indices, out=pivots, dtype_rule=exact_dtype)
    store(codes, out=info, dtype_rule=exact_dtype)
    store(solution[..., 0] if vector else solution, out=result, dtype_rule=exact_dtype)
    if check_errors:
        linalg_check_errors(info, "torch.linalg.solve_ex", is_matrix=A.dim() == 2)
    return result, LU, pivots, info


@register("linalg_qr.out")
def linalg_qr(A, mode="reduced", *, Q, R):
    a = _lapack_operand(torch.ops.aten.linalg_qr.default, A, A, mode)
    if mode == "r":
        store(np.linalg.qr(a, mode="r"), out=R, dtype_rule=exact_dtype)
        store(np.empty(0, a.dtype), out=Q, dtype_rule=exact_dtype)
    else:
        q, r = np.linalg.qr(a, mode=mode)
        store(q, out=Q, dtype_rule=exact_dtype)
        store(r, out=R, dtype_rule=exact_dtype)
    return Q, R


@register("_linalg_eigh.eigenvalues")
def linalg_eigh(A, UPLO="L", compute_v=True, *, eigenvalues, eigenvectors):
    a = _lapack_operand(torch.ops.aten._linalg_eigh.default, A, A, UPLO, compute_v)
    if compute_v:
        values, vectors = np.linalg.eigh(a, UPLO=UPLO)
        store(values, out=eigenvalues, dtype_rule=exact_dtype)
        store(vectors, out=eigenvectors, dtype_rule=exact_dtype)
    else:
        store(np.linalg.eigvalsh(a, UPLO=UPLO), out=eigenvalues, dtype_rule=exact_dtype)
        store(np.empty(0, a.dtype), out=eigenvectors, dtype_rule=exact_dtype)
    return eigenvalues, eigenvectors


def _complex(array):
    return array.astype(np.result_type(array.dtype, np.complex64), copy=False)


def _complex_dtype(dtype):
    return torch.complex128 if dtype in (torch.float64, torch.complex128) else torch.complex64


@register("linalg_eig")
def linalg_eig(self):
    a = _lapack_operand(torch.ops.aten.linalg_eig.default, self, self)
    values, vectors = np.linalg.eig(a)
    dtype = _complex_dtype(self.dtype)
    return store(_complex(values), dtype), store(_complex(vectors), dtype)


@register("_linalg_eigvals")
def linalg_eigvals(self):
    a = _lapack_operand(torch.ops.aten._linalg_eigvals.default, self, self)
    return store(_complex(np.linalg.eigvals(a)), _complex_dtype(self.dtype))


@register("_linalg_svd.U")
def linalg_svd(A, full_matrices=False, compute_uv=True, *, driver=None, U, S, Vh):
    a = _lapack_operand(torch.ops.aten._linalg_svd.default, A, A, full_matrices, compute_uv)
    if compute_uv:
        u, s, vh = np.linalg.svd(a, full_matrices=full_matrices)
        store(u, out=U, dtype_rule=exact_dtype)
        store(s, out=S, dtype_rule=exact_dtype)
        store(vh, out=Vh, dtype_rule=exact_dtype)
    else:
        store(np.linalg.svd(a, compute_uv=False), out=S, dtype_rule=exact_dtype)
        store(np.empty(0, a.dtype), out=U, dtype_rule=exact_dtype)
        store(np.empty(0, a.dtype), out=Vh, dtype_rule=exact_dtype)
    return U, S, Vh


def _triangular_solve(a, b, upper, left, unitriangular, transpose=False):
    """op(A) X = B (left) or X A = B for triangular A, batches broadcast."""
    if not left:  # X A = B  <=>  A^T X^T = B^T
        return np.swapaxes(_triangular_solve(a, np.swapaxes(b, -1, -2), upper, True, unitriangular, not transpose),
                           -1, -2)
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    dtype = np.result_type(a.dtype, b.dtype)
    if not (a.size and b.size):  # then the solution is empty too
        return np.empty(batch + b.shape[-2:], dtype)
    a = np.broadcast_to(a, batch + a.shape[-2:]).reshape(-1, *a.shape[-2:])
    b = np.broadcast_to(b, batch + b.shape[-2:]).reshape(-1, *b.shape[-2:])
    solved = [
        scipy.linalg.solve_triangular(m, r, trans=int(transpose), lower=not upper, unit_diagonal=unitriangular,
                                      check_finite=False)
        for m, r in zip(a, b)
    ]
    return np.stack(solved).reshape(batch + b.shape[-2:])


@register("linalg_solve_triangular")
def linalg_solve_triangular(self, B, *, upper, left=True, unitriangular=False):
    op = torch.ops.aten.linalg_solve_triangular.default
    a = _lapack_operand(op, self, self, B, upper=upper, left=left, unitriangular=unitriangular)
    _check(B.dtype == self.dtype and B.dim() >= 2, op, self, B, upper=upper, left=left, unitriangular=unitriangular)
    return store(_triangular_solve(a, operand(B), upper, left, unitriangular), self.dtype)


@register("linalg_solve_triangular.out")
def linalg_solve_triangular_out(self, B, *, upper, left=True, unitriangular=False, out):
    result = linalg_solve_triangular(self, B, upper=upper, left=left, unitriangular=unitriangular)
    prepare_out(out, tuple(result.shape), result.dtype, dtype_rule=exact_dtype)
    return through_math_bits(out, lambda target: write(target, as_numpy(result)))


@register("triangular_solve.X")
def triangular_solve(self, A, upper=True, transpose=False, unitriangular=False, *, X, M):
    op = torch.ops.aten.triangular_solve.default
    a = _lapack_operand(op, A, self, A, upper, transpose, unitriangular)
    solution = _triangular_solve(a, operand(self), upper, True, unitriangular, transpose)
    store(solution, out=X, dtype_rule=exact_dtype)
    store(a, out=M, dtype_rule=exact_dtype)
    return X, M


def _cross_shape(self, other, dim):
    """The broadcast shape, or None where CPU refuses the operands."""
    if self.dim() != other.dim() or self.dtype != other.dtype or self.dtype == torch.bool:
        return None
    try:
        shape = tuple(np.broadcast_shapes(tuple(self.shape), tuple(other.shape)))
    except ValueError:
        return None
    if not -len(shape) <= dim < len(shape) or self.shape[dim] != 3 or other.shape[dim] != 3:
        return None
    return shape


def _product_difference(a, b, c, d):
    """``a * b - c * d`` as CPU's compiled loop gives it: float32/float64 fuse the first product into
    the subtraction (one FMA); the operators of reduced floats round each product to their format."""
    with np.errstate(all="ignore"):  # overflow gives inf, silently, as on CPU
        if a.dtype in (np.float32, np.float64):
            return vpu.fused_multiply_add(a, b, -(c * d))
        return a * b - c * d


@register("linalg_cross.out")
def linalg_cross_out(self, other, *, dim=-1, out):
    """``a[i+1] * b[i+2] - a[i+2] * b[i+1]``, computed as on CPU in the operands' own dtype."""
    shape = _cross_shape(self, other, dim)
    _check(shape is not None, torch.ops.aten.linalg_cross.default, self, other, dim=dim)
    out = checked_out(out, shape, self.dtype, torch.ops.aten.linalg_cross.out, self, other, dim=dim)
    a, b = (np.moveaxis(np.broadcast_to(operand(t, "linalg.cross"), shape), dim, 0) for t in (self, other))
    following, after_next = [1, 2, 0], [2, 0, 1]
    product = _product_difference(a[following], b[after_next], a[after_next], b[following])
    write(out, np.moveaxis(product, 0, dim))
    return out


# CPU also takes the reduced floats (its bf16 result is garbage: it reads its float64 Taylor
# coefficients as bf16 bytes); here they are exponentiated in float32 and rounded once.
MATRIX_EXP_DTYPES = LAPACK_DTYPES | {torch.bfloat16, torch.float16}


@register("linalg_matrix_exp")
def linalg_matrix_exp(self):
    op = torch.ops.aten.linalg_matrix_exp.default
    _check(self.dim() >= 2 and self.shape[-1] == self.shape[-2] and self.dtype in MATRIX_EXP_DTYPES, op, self)
    a = opmath_operand(self, "linalg.matrix_exp")
    with np.errstate(all="ignore"):  # an exponential that overflows is inf, silently, as on CPU
        return store(scipy.linalg.expm(a) if a.size else a, self.dtype)


@register("linalg_matrix_exp.out")
def linalg_matrix_exp_out(self, *, out):
    result = linalg_matrix_exp(self)
    _check(out.dtype == self.dtype, torch.ops.aten.linalg_matrix_exp.out, self, out=out)
    store(as_numpy(result), out=out, dtype_rule=exact_dtype)
    return out


@register("_compute_linear_combination", "_compute_linear_combination.out")
def compute_linear_combination(input, coefficients, *, out=None):
    """CPU's helper of matrix_exp: ``out[i] += sum_j coefficients[i, j] * input[j]`` over the first
    ``coefficients.size(1)`` inputs, with real coefficients (float32 ones for complex64 input). The functional
    form adds to zeros and returns a contiguous tensor; the ``out=`` form adds to ``out``'s own values and never
    resizes it. CPU's loop adds one ``j`` at a time in the input's dtype (a float16 product and sum each round),
    and so does this."""
    op = torch.ops.aten._compute_linear_combination.default
    _check(input.dim() > 0 and input.numel() > 0, op, input, coefficients)  # "Empty tensor not supported"
    _check_linear_combination(input, coefficients, out)
    x, weights = operand(input), operand(coefficients)
    total = np.zeros((coefficients.shape[0], *input.shape[1:]), x.dtype) if out is None else operand(out).copy()
    for j in range(coefficients.shape[1]):
        total = total + _scaled_by_real(x[j], weights[:, j].reshape((-1,) + (1,) * (input.dim() - 1)))
    return store(total, input.dtype) if out is None else write(out, total)


def _scaled_by_real(x, weight):
    """``x * weight`` for a real ``weight``: a complex ``x`` part by part, as C++'s complex-by-real product
    (NumPy's complex product would add a 0 * imag term, NaN for an infinite part)."""
    if not np.iscomplexobj(x):
        return x * weight
    result = np.empty(np.broadcast_shapes(x.shape, weight.shape), x.dtype)
    result.real, result.imag = x.real * weight, x.imag * weight
    return result


def _check_linear_combination(input, coefficients, out):
    """What CPU does not check and reads as other bytes: coefficients not of the input's real dtype, an ``out``
    not of its dtype, coefficients naming inputs past the last."""
    name = "_compute_linear_combination"
    if coefficients.dim() != 2:
        raise RuntimeError(f"{name}: coefficients must be a matrix (outputs x inputs), got shape "
                           f"{list(coefficients.shape)}")
    if coefficients.shape[1] > input.shape[0]:
        raise RuntimeError(f"{name}: coefficients of shape {list(coefficients.shape)} combine "
                           f"{coefficients.shape[1]} inputs, but input has {input.shape[0]}")
    for role, tensor, dtype in (("coefficients", coefficients, input.dtype.to_real()), ("out", out, input.dtype)):
        if tensor is not None and tensor.dtype != dtype:
            raise RuntimeError(f"{name}: {role} of dtype {tensor.dtype} for input of dtype {input.dtype}; "
                               f"CPU reads {role} as {dtype}")
    shape = [coefficients.shape[0], *input.shape[1:]]
    if out is not None and list(out.shape) != shape:
        raise RuntimeError(f"{name}: out has shape {list(out.shape)}, the result's is {shape} (out= is not resized)")


@register("linalg_eigvals.out")
def linalg_eigvals_out(self, *, out):
    _check(out.dtype.is_complex and torch.can_cast(_complex_dtype(self.dtype), out.dtype),
           torch.ops.aten.linalg_eigvals.out, self, out=out)
    return store(as_numpy(linalg_eigvals(self)), out=out)


@register("linalg_eig.out")
def linalg_eig_out(self, *, eigenvalues, eigenvectors):
    """CPU takes any complex out= dtype its result casts to safely."""
    op = torch.ops.aten.linalg_eig.out
    dtype = _complex_dtype(self.dtype)
    castable = all(t.dtype.is_complex and torch.can_cast(dtype, t.dtype) for t in (eigenvalues, eigenvectors))
    _check(castable, op, self, eigenvalues=eigenvalues, eigenvectors=eigenvectors)
    values, vectors = linalg_eig(self)
    return store(as_numpy(values), out=eigenvalues), store(as_numpy(vectors), out=eigenvectors)


# --- LU unpacking, QR by Householder reflectors, Cholesky and LDL solves ------------------------


def _square_lapack_operand(op, tensor, *args, **kwargs):
    _check(tensor.dim() >= 2 and tensor.shape[-1] == tensor.shape[-2], op, *args, **kwargs)
    return _lapack_operand(op, tensor, *args, **kwargs)


def _permutation_matrices(pivots, rows, dtype):
    """P with A = P L U from LAPACK's 1-based row swaps: row i was swapped with row pivots[i] - 1, in order."""
    batch = pivots.shape[:-1]
    order = np.broadcast_to(np.arange(rows), batch + (rows,)).reshape(math.prod(batch), rows).copy()
    swaps = pivots.reshape(len(order), pivots.shape[-1]).astype(np.intp) - 1
    every = np.arange(order.shape[0])
    for i in range(swaps.shape[-1]):
        target = swaps[:, i]
        order[every, i], order[every, target] = order[every, target], order[every, i]
    permutation = np.zeros((order.shape[0], rows, rows), dtype)
    permutation[every[:, None], order, np.arange(rows)] = 1  # column j of P picks row order[j]
    return permutation.reshape(batch + (rows, rows))


def _unpacked_triangles(lu):
    """L (unit lower, m x k) and U (upper, k x n) of a packed LU factorization."""
    rows, columns = lu.shape[-2:]
    k = min(rows, columns)
    lower = np.tril(lu[..., :, :k], -1)
    lower[..., np.arange(k), np.arange(k)] = 1
    return lower, np.triu(lu[..., :k, :])


def _store_lu_unpacked(lu, pivots, unpack_data, unpack_pivots, P, L, U):
    nothing = np.empty(0, lu.dtype)
    lower, upper = _unpacked_triangles(lu) if unpack_data else (nothing, nothing)
    permutation = _permutation_matrices(pivots, lu.shape[-2], lu.dtype) if unpack_pivots else nothing
    store(permutation, out=P, dtype_rule=exact_dtype)
    store(lower, out=L, dtype_rule=exact_dtype)
    store(upper, out=U, dtype_rule=exact_dtype)
    return P, L, U


@register("lu_unpack.out")
def lu_unpack(LU_data, LU_pivots, unpack_data=True, unpack_pivots=True, *, P, L, U):
    op = torch.ops.aten.lu_unpack.default
    args = (LU_data, LU_pivots, unpack_data, unpack_pivots)
    _check(LU_data.dim() >= 2 and LU_pivots.dtype == torch.int32, op, *args)
    lu = operand(LU_data, "lu_unpack")
    return _store_lu_unpacked(lu, operand(LU_pivots, "lu_unpack"), unpack_data, unpack_pivots, P, L, U)


@register("linalg_lu.out")
def linalg_lu(A, *, pivot=True, P, L, U):
    op = torch.ops.aten.linalg_lu.default
    _check(pivot, op, A, pivot=pivot)  # CPU has no LU without pivoting
    lu, pivots, _ = _lu_factor(_lapack_operand(op, A, A, pivot=pivot))
    return _store_lu_unpacked(lu, pivots, True, True, P, L, U)


def _geqrf(matrix):
    factors, tau, _, _ = _lapack_function("geqrf", matrix)(matrix)
    return factors, tau


@register("geqrf", "geqrf.a")
def geqrf(self, *, a=None, tau=None):
    matrices = _lapack_operand(torch.ops.aten.geqrf.default, self, self)
    if matrices.size:
        factors, scalars = _each_matrix(_geqrf, matrices)
    else:
        factors, scalars = matrices.copy(), np.empty(matrices.shape[:-2] + (min(matrices.shape[-2:]),), matrices.dtype)
    if a is None:  # LAPACK's reflectors, column-major per matrix as CPU returns them (ormqr reads them so)
        a = empty(factors.shape[:-2] + factors.shape[:-3:-1], self.dtype).mT
    tau = empty(scalars.shape, self.dtype) if tau is None else tau
    store(factors, out=a, dtype_rule=exact_dtype)
    store(scalars, out=tau, dtype_rule=exact_dtype)
    return a, tau


def _householder_name(real_name, array):
    """LAPACK names the complex Householder routines differently (orgqr -> ungqr, ormqr -> unmqr)."""
    return {"orgqr": "ungqr", "ormqr": "unmqr"}[real_name] if array.dtype.kind == "c" else real_name


def _orgqr(reflectors, tau):
    function = _lapack_function(_householder_name("orgqr", reflectors), reflectors)
    return (function(reflectors, tau)[0],)


def _householder_product_valid(input, tau):
    return (input.dim() >= 2 and input.shape[-2] >= input.shape[-1] >= tau.shape[-1]
            and tau.dim() == input.dim() - 1 and input.shape[:-2] == tau.shape[:-1] and tau.dtype == input.dtype)


@register("linalg_householder_product", "linalg_householder_product.out")
def linalg_householder_product(input, tau, *, out=None):
    op = torch.ops.aten.linalg_householder_product.default
    reflectors = _lapack_operand(op, input, input, tau)
    _check(_householder_product_valid(input, tau), op, input, tau)
    scalars = operand(tau, "linalg.householder_product")
    product = _each_matrix(_orgqr, reflectors, scalars, core_dims=(2, 1))[0] if reflectors.size else reflectors.copy()
    return store(product, input.dtype, out=out, dtype_rule=exact_dtype)


def _ormqr(left, transpose):
    side = "L" if left else "R"

    def apply(reflectors, tau, other):
        trans = ("C" if other.dtype.kind == "c" else "T") if transpose else "N"
        function = _lapack_function(_householder_name("ormqr", reflectors), reflectors)
        work = max(1, other.shape[1] if left else other.shape[0]) * 64  # LAPACK's blocked path wants n * block size
        return (function(side, trans, reflectors[:, :tau.shape[0]], tau, other, work)[0],)

    return apply


@register("ormqr", "ormqr.out")
def ormqr(self, input2, input3, left=True, transpose=False, *, out=None):
    op = torch.ops.aten.ormqr.default
    args = (self, input2, input3, left, transpose)
    reflectors = _lapack_operand(op, self, *args)
    # CPU's checks: Q (from self's rows) must match other's rows (left) or columns (right)
    _check(input3.dim() >= 2, op, *args)
    other_side = input3.shape[-2] if left else input3.shape[-1]
    valid = (input3.dim() == self.dim() and input2.dim() == self.dim() - 1
             and input2.shape[-1] == min(other_side, self.shape[-1]) and other_side == self.shape[-2]
             and self.shape[:-2] == input2.shape[:-1] == input3.shape[:-2]
             and input2.dtype == input3.dtype == self.dtype)
    _check(valid, op, *args)
    other = operand(input3, "ormqr")
    tau = operand(input2, "ormqr")
    if other.size and tau.shape[-1]:
        product = _each_matrix(_ormqr(left, transpose), reflectors, tau, other, core_dims=(2, 1, 2))[0]
    else:  # no reflectors: Q is the identity
        product = other.copy()
    return store(product, self.dtype, out=out, dtype_rule=exact_dtype)


def _mirror_triangle(matrices, upper):
    """The Hermitian matrix whose ``upper`` (or lower) triangle is given."""
    triangle = np.triu(matrices) if upper else np.tril(matrices)
    strict = np.triu(matrices, 1) if upper else np.tril(matrices, -1)
    return triangle + np.conj(np.swapaxes(strict, -1, -2))


def _potri(upper):
    def invert(factor):
        inverse, info = _lapack_function("potri", factor)(factor, lower=not upper)
        return inverse, np.int32(info)

    return invert


@register("cholesky_inverse", "cholesky_inverse.out")
def cholesky_inverse(self, upper=False, *, out=None):
    factors = _square_lapack_operand(torch.ops.aten.cholesky_inverse.default, self, self, upper)
    if out is not None:  # CPU's checkLinalgCompatibleDtype: any out= the result safely casts to
        _check(torch.can_cast(self.dtype, out.dtype), torch.ops.aten.cholesky_inverse.out, self, upper,
               out=torch.empty(0, dtype=out.dtype))
    if factors.size:
        inverse, codes = _each_matrix(_potri(upper), factors)
        linalg_check_errors(store(codes, torch.int32), "cholesky_inverse", is_matrix=self.dim() == 2)
        inverse = _mirror_triangle(inverse, upper)
    else:
        inverse = factors.copy()
    return store(inverse, self.dtype, out=out)


def _potrs(upper):
    def solve(factor, rhs):
        return (_lapack_function("potrs", factor)(factor, rhs, lower=not upper)[0],)

    return solve


@register("_cholesky_solve_helper")
def cholesky_solve_helper(self, A, upper):
    """X with A A^H X = B (or A^H A for upper A): the batches were already broadcast by cholesky_solve."""
    factors = _square_lapack_operand(torch.ops.aten._cholesky_solve_helper.default, A, self, A, upper)
    rhs = operand(self, "cholesky_solve")
    if factors.size and rhs.size:
        return store(_each_matrix(_potrs(upper), factors, rhs)[0], self.dtype)
    return empty(np.broadcast_shapes(factors.shape[:-2], rhs.shape[:-2]) + rhs.shape[-2:], self.dtype)


def _symmetric_factorization_name(hermitian, array):
    """Bunch-Kaufman: sytrf/sytrs for symmetric, hetrf/hetrs for complex Hermitian matrices."""
    return "he" if hermitian and array.dtype.kind == "c" else "sy"


def _ldl_factor(hermitian):
    def factor(lower_triangle):
        name = _symmetric_factorization_name(hermitian, lower_triangle) + "trf"
        factors, pivots, info = _lapack_function(name, lower_triangle)(lower_triangle, lower=True)
        return factors, pivots.astype(np.int32), np.int32(info)

    return factor


@register("linalg_ldl_factor_ex.out")
def linalg_ldl_factor_ex(self, *, hermitian=False, check_errors=False, LD, pivots, info):
    """LAPACK works on the lower triangle only; CPU zeroes the upper one first."""
    op = torch.ops.aten.linalg_ldl_factor_ex.default
    lower_triangle = np.tril(_square_lapack_operand(op, self, self, hermitian=hermitian))
    if lower_triangle.size:
        factors, pivot_indices, codes = _each_matrix(_ldl_factor(hermitian), lower_triangle)
    else:
        factors, pivot_indices = lower_triangle, np.empty(lower_triangle.shape[:-1], np.int32)
        codes = np.zeros(lower_triangle.shape[:-2], np.int32)
    store(factors, out=LD, dtype_rule=exact_dtype)
    store(pivot_indices, out=pivots, dtype_rule=exact_dtype)
    store(codes, out=info, dtype_rule=exact_dtype)
    if check_errors:
        linalg_check_errors(info, "torch.linalg.ldl_factor_ex", is_matrix=self.dim() == 2)
    return LD, pivots, info


def _ldl_solve(hermitian):
    def solve(factors, pivots, rhs):
        name = _symmetric_factorization_name(hermitian, factors) + "trs"
        return (_lapack_function(name, factors)(factors, pivots, rhs, lower=True)[0],)

    return solve


@register("linalg_ldl_solve.out")
def linalg_ldl_solve(LD, pivots, B, *, hermitian=False, out):
    op = torch.ops.aten.linalg_ldl_solve.default
    args = (LD, pivots, B)
    factors = _square_lapack_operand(op, LD, *args, hermitian=hermitian)
    valid = (B.dim() >= 2 and B.dtype == LD.dtype and pivots.dtype == torch.int32
             and pivots.shape == LD.shape[:-1] and B.shape[-2] == LD.shape[-1])
    _check(valid, op, *args, hermitian=hermitian)
    rhs = operand(B, "linalg.ldl_solve")
    batch = np.broadcast_shapes(factors.shape[:-2], rhs.shape[:-2])
    if factors.size and rhs.size:
        solution = _each_matrix(_ldl_solve(hermitian), factors, operand(pivots), rhs, core_dims=(2, 1, 2))[0]
    else:
        solution = np.empty(batch + rhs.shape[-2:], rhs.dtype)
    store(solution, out=out, dtype_rule=exact_dtype)
    return out


# --- least squares --------------------------------------------------------------------------
# CPU's defaults and outputs: gelsy (rank only), gelsd and gelss (rank and singular values), gels
# (full rank only, neither). Residuals come from the rows LAPACK leaves below the solution, when
# m > n, for every driver but gelsy, and for gelsd/gelss only if every matrix has full rank.

LSTSQ_DRIVERS = ("gels", "gelsy", "gelsd", "gelss")


def _lwork(name, array, *args):
    return scipy.linalg.lapack._compute_lwork(_lapack_function(name + "_lwork", array), *args)


def _least_squares(driver, rcond):
    """(matrix, right-hand sides padded to max(m, n) rows) -> (LAPACK's b, rank, singular values, info)."""

    def gelsy(a, b):
        m, n = a.shape
        work = _lwork("gelsy", a, m, n, b.shape[1], rcond)
        _, x, _, rank, info = _lapack_function("gelsy", a)(a, b, np.zeros(n, np.int32), rcond, work)
        return x, rank, np.empty(0, a.real.dtype), info

    def gelsd(a, b):
        m, n = a.shape
        works = _lwork("gelsd", a, m, n, b.shape[1], rcond)
        x, s, rank, info = _lapack_function("gelsd", a)(a, b, *works, cond=rcond)
        return x, rank, s, info

    def gelss(a, b):
        m, n = a.shape
        work = _lwork("gelss", a, m, n, b.shape[1], rcond)
        _, x, s, rank, _, info = _lapack_function("gelss", a)(a, b, cond=rcond, lwork=work)
        return x, rank, s, info

    def gels(a, b):
        _, x, info = _lapack_function("gels", a)(a, b)
        return x, 0, np.empty(0, a.real.dtype), info

    return locals()[driver]


def _lstsq_arguments_valid(self, b, driver):
    if not (driver in LSTSQ_DRIVERS and self.dim() >= 2 and b.dim() >= 1 and 0 <= self.dim() - b.dim() <= 1
            and self.dtype == b.dtype and self.dtype in LAPACK_DTYPES):
        return False
    rhs_matrix_shape = b.shape + (1,) if b.dim() == self.dim() - 1 else b.shape
    return rhs_matrix_shape[-2] == self.shape[-2] and _batches_broadcast(self.shape, rhs_matrix_shape)


def _lstsq_solve(a, b, driver, rcond):
    """LAPACK's overwritten b (max(m, n) rows), ranks and singular values, batches broadcast."""
    m, n = a.shape[-2:]
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    padded = np.zeros(batch + (max(m, n), b.shape[-1]), b.dtype)
    padded[..., :m, :] = b
    if not (a.size and padded.size):
        if driver == "gels":  # its quick return for an empty problem zeroes b
            padded[...] = 0
        ranks = np.zeros(batch, np.int64)
        return padded, ranks, np.zeros(batch + (min(m, n),), a.real.dtype), np.zeros(batch, np.int32)
    # LAPACK needs one right-hand side for the rank and singular values even if the caller has none.
    columns = padded if padded.shape[-1] else np.zeros(batch + (max(m, n), 1), b.dtype)
    solved, ranks, values, codes = _each_matrix(_least_squares(driver, rcond), a, columns)
    return solved[..., :padded.shape[-1]], ranks, values, codes


def _lstsq_residuals(solved, ranks, m, n, driver):
    full_rank = driver not in ("gelsd", "gelss") or bool(np.all(ranks == n))
    if m > n and driver != "gelsy" and full_rank:
        return np.square(np.abs(solved[..., n:, :])).sum(axis=-2)
    return np.empty(0, solved.real.dtype)


@register("linalg_lstsq.out")
def linalg_lstsq(self, b, rcond=None, *, driver=None, solution, residuals, rank, singular_values):
    op = torch.ops.aten.linalg_lstsq.default
    driver = driver or "gelsy"
    _check(_lstsq_arguments_valid(self, b, driver), op, self, b, rcond, driver=driver)
    a, rhs = operand(self, "linalg.lstsq"), operand(b, "linalg.lstsq")
    vector = rhs.ndim == a.ndim - 1
    m, n = a.shape[-2:]
    if rcond is None:
        rcond = np.finfo(a.dtype).eps * max(m, n)
    solved, ranks, values, codes = _lstsq_solve(a, rhs[..., None] if vector else rhs, driver, rcond)
    if driver == "gels":
        linalg_check_errors(store(codes, torch.int32), "torch.linalg.lstsq", is_matrix=self.dim() == 2)
    x = np.zeros_like(solved[..., :n, :]) if m == 0 else solved[..., :n, :]
    nothing = np.empty(0, values.dtype)
    store(x[..., 0] if vector else x, out=solution, dtype_rule=exact_dtype)
    store(_lstsq_residuals(solved, ranks, m, n, driver), out=residuals, dtype_rule=exact_dtype)
    store(np.empty(0, np.int64) if driver == "gels" else ranks, out=rank, dtype_rule=exact_dtype)
    store(values if driver in ("gelsd", "gelss") else nothing, out=singular_values, dtype_rule=exact_dtype)
    return solution, residuals, rank, singular_values


# --- pairwise distances -----------------------------------------------------------------------
# One p-norm family serves cdist and pdist, forward and backward, in CPU's special cases:
# p = 0 counts differing coordinates, p = inf takes the largest; gradients are 0 where the distance is.

DISTANCE_DTYPES = frozenset({torch.float32, torch.float64})
PAIRWISE_CHUNK_ELEMENTS = 1 << 22  # bounds the (rows, rows, columns) difference tensor


def _p_norm(difference, p):
    magnitude = np.abs(difference)
    if p == 0:
        return np.count_nonzero(difference, axis=-1).astype(difference.dtype)
    if p == 1:
        return magnitude.sum(axis=-1)
    if p == 2:
        return np.sqrt(np.square(magnitude).sum(axis=-1))
    if np.isinf(p):
        return magnitude.max(axis=-1, initial=0)
    return np.power(np.power(magnitude, p).sum(axis=-1), 1 / p)


def _p_norm_gradient(difference, grad, distance, p):
    """d distance / d x1 times grad, per pair: CPU's formulas, including its zero-distance conventions."""
    sign = np.sign(difference)
    if p == 0:
        return np.zeros_like(difference)
    if p == 1:
        return grad * sign
    if np.isinf(p):
        return grad * sign * (np.abs(difference) == distance)
    with np.errstate(divide="ignore", invalid="ignore"):
        if p == 2:
            gradient = grad * difference / distance
        elif p < 2:
            gradient = sign * np.power(np.abs(difference), p - 1) * grad / np.power(distance, p - 1)
            gradient = np.where((difference == 0) & (p < 1), 0, gradient)
        else:
            gradient = difference * np.power(np.abs(difference), p - 2) * grad / np.power(distance, p - 1)
    return np.where(distance == 0, 0, gradient)


def _row_chunks(rows, other_rows, columns):
    step = max(1, PAIRWISE_CHUNK_ELEMENTS // max(1, other_rows * columns))
    return (slice(start, start + step) for start in range(0, rows, step))


def _pairwise_distances(x1, x2, p):
    """(r1, m) x (r2, m) -> (r1, r2)."""
    distances = np.empty((x1.shape[0], x2.shape[0]), x1.dtype)
    for rows in _row_chunks(x1.shape[0], x2.shape[0], x1.shape[1]):
        distances[rows] = _p_norm(x1[rows, None, :] - x2[None, :, :], p)
    return distances


def _pairwise_gradient(grad, x1, x2, p, distances):
    """The gradient of sum(grad * distances) with respect to x1, (r1, m)."""
    gradient = np.empty(x1.shape, x1.dtype)
    for rows in _row_chunks(x1.shape[0], x2.shape[0], x1.shape[1]):
        difference = x1[rows, None, :] - x2[None, :, :]
        terms = _p_norm_gradient(difference, grad[rows, :, None], distances[rows, :, None], p)
        gradient[rows] = terms.sum(axis=1)
    return gradient


def _euclidean_distances(x1, x2):
    """CPU's matmul route for p = 2 (torch._decomp's _euclidean_dist): |a|^2 - 2 a.b + |b|^2 on the MXU."""
    square1 = np.square(x1).sum(axis=-1, keepdims=True)
    square2 = np.square(x2).sum(axis=-1, keepdims=True)
    left = np.concatenate([-2 * x1, square1, np.ones_like(square1)], axis=-1)
    right = np.concatenate([x2, np.ones_like(square2), square2], axis=-1)
    return np.sqrt(np.maximum(mxu_matmul(left, np.swapaxes(right, -1, -2)), 0))


@register("_euclidean_dist")
def euclidean_dist(x1, x2):
    """cdist's matmul route, one kernel instead of its decomposition's eight."""
    a, b = operand(x1, "cdist"), operand(x2, "cdist")
    return store(_euclidean_distances(a, b), torch.promote_types(x1.dtype, x2.dtype))


def _uses_matmul(p, compute_mode, r1, r2):
    mode = compute_mode or 0
    return p == 2 and (mode == 1 or (mode == 0 and (r1 > 25 or r2 > 25)))


def _cdist_arguments_valid(x1, x2, p, compute_mode):
    return (x1.dim() >= 2 and x2.dim() >= 2 and x1.shape[-1] == x2.shape[-1] and p >= 0
            and x1.dtype in DISTANCE_DTYPES and x2.dtype == x1.dtype and compute_mode in (None, 0, 1, 2)
            and _batches_broadcast(x1.shape, x2.shape))


def _batches_broadcast(*matrix_shapes):
    try:
        np.broadcast_shapes(*(tuple(shape[:-2]) for shape in matrix_shapes))
    except ValueError:
        return False
    return True


def _expanded_pair(x1, x2):
    """Both operands with their batches broadcast and flattened to one batch axis."""
    batch = np.broadcast_shapes(x1.shape[:-2], x2.shape[:-2])
    return batch, [np.broadcast_to(x, batch + x.shape[-2:]).reshape(math.prod(batch), *x.shape[-2:]) for x in (x1, x2)]


@register("_cdist_forward")
def cdist_forward(x1, x2, p, compute_mode):
    op = torch.ops.aten._cdist_forward.default
    _check(_cdist_arguments_valid(x1, x2, p, compute_mode), op, x1, x2, p, compute_mode)
    a, b = operand(x1, "cdist"), operand(x2, "cdist")
    batch, (first, second) = _expanded_pair(a, b)
    r1, r2 = a.shape[-2], b.shape[-2]
    result = empty(batch + (r1, r2), x1.dtype)
    if not result.numel():
        return result
    with vpu.ignoring_fp_errors():  # squares overflowing to inf are silent on CPU
        if _uses_matmul(p, compute_mode, r1, r2) and a.shape[-1]:
            distances = _euclidean_distances(first, second)
        else:
            distances = np.stack([_pairwise_distances(u, v, p) for u, v in zip(first, second)])
    return write(result, distances.reshape(batch + (r1, r2)))


@register("_cdist_backward")
def cdist_backward(grad, x1, x2, p, cdist):
    """Gradient for x1 at the batch-broadcast shape; autograd sums it back to x1's shape."""
    a, b = operand(x1, "cdist"), operand(x2, "cdist")
    batch, (first, second) = _expanded_pair(a, b)
    if not (first.size and second.size):  # CPU answers zeros at x1's own shape then
        return store(np.zeros(a.shape, a.dtype), x1.dtype)
    g = operand(grad, "cdist").reshape(len(first), a.shape[-2], b.shape[-2])
    distances = operand(cdist, "cdist").reshape(g.shape)
    gradients = [_pairwise_gradient(*items, p, d) for *items, d in zip(g, first, second, distances)]
    return store(np.stack(gradients).reshape(batch + a.shape[-2:]), x1.dtype)


def _pdist_arguments_valid(self, p):
    return self.dim() == 2 and self.dtype in DISTANCE_DTYPES and p >= 0


@register("_pdist_forward")
def pdist_forward(self, p=2.0):
    _check(_pdist_arguments_valid(self, p), torch.ops.aten._pdist_forward.default, self, p)
    x = operand(self, "pdist")
    upper = np.triu_indices(x.shape[0], 1)
    return store(_pairwise_distances(x, x, p)[upper], self.dtype)


@register("_pdist_backward")
def pdist_backward(grad, self, p, pdist):
    """Each pair's gradient goes to both rows with opposite signs: the cdist gradient of x against itself
    with the pair gradients mirrored into a symmetric matrix."""
    x = operand(self, "pdist")
    rows = x.shape[0]
    upper = np.triu_indices(rows, 1)
    pair_grads = np.zeros((rows, rows), x.dtype)
    pair_grads[upper] = operand(grad, "pdist")
    distances = np.zeros((rows, rows), x.dtype)
    distances[upper] = operand(pdist, "pdist")
    return store(_pairwise_gradient(pair_grads + pair_grads.T, x, x, p, distances + distances.T), self.dtype)
