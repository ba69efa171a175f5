"""Linear algebra kernels: the matmul family through the MXU, and torch.linalg.

Every product goes through ``mxu_matmul``, which applies the user's
``torch.set_float32_matmul_precision`` (see ``torch_tpu._C.mxu`` for the numerics):
"highest" (PyTorch's default) is an exact float32 matmul, as on CPU; "high" is 3 bf16
passes and "medium" 1 bf16 pass, as XLA's HIGH and DEFAULT precisions on a real TPU.

The hot functional overloads (mm, bmm, addmm, ...) are registered next to their ``.out``
overloads so they skip the structured wrapper. ``.out`` overloads reach us unchecked, so
every kernel validates its arguments; an invalid call is re-run on zero-byte CPU stand-ins
(``fail_like_cpu``) so the error is exactly PyTorch's own.
"""

import functools
import warnings

import numpy as np
import scipy.linalg
import torch
from torch.utils._pytree import tree_map

from .._C import mxu
from ._common import as_numpy, empty, new_tensor, operand, resize_out, write
from ._registry import register

PASSES_FOR_PRECISION = {"highest": mxu.EXACT, "high": 3, "medium": 1}

# What torch CPU multiplies; bool and the wide unsigned types have no CPU matmul either
# (addr alone takes bool).
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


def mxu_matmul(a, b, out=None):
    """``np.matmul`` on the emulated MXU at the user's float32 matmul precision."""
    if a.dtype == np.float64 or b.dtype == np.float64:
        _warn_float64()
    passes = PASSES_FOR_PRECISION[torch.get_float32_matmul_precision()]
    return mxu.matmul(a, b, out, precision_passes=passes)


def scaled_sum_into(out, product, bias, beta, alpha):
    """``out = beta * bias + alpha * product`` in the accumulator's precision, rounded once.

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
    return write(out, product)


# --- argument checks ------------------------------------------------------------------------


def _cpu_standin(value):
    if isinstance(value, torch.Tensor) and value.device.type == "tpu":
        return torch.empty((), dtype=value.dtype).expand(value.shape)
    return value


def fail_like_cpu(op, *args, **kwargs):
    """Raise the error torch CPU raises for ``op(*args, **kwargs)``.

    Runs the op on stride-0 CPU stand-ins of the tpu tensors (no data, no result kept).
    """
    op(*tree_map(_cpu_standin, args), **tree_map(_cpu_standin, kwargs))
    raise RuntimeError(f"{op}: invalid arguments for the tpu device")


def _check(valid, op, *args, **kwargs):
    if not valid:
        fail_like_cpu(op, *args, **kwargs)


def _same_dtype_of(allowed, *tensors):
    dtype = tensors[0].dtype
    return dtype in allowed and all(t.dtype == dtype for t in tensors)


def _broadcasts_to(tensor, shape):
    try:
        return np.broadcast_shapes(tuple(tensor.shape), shape) == shape
    except ValueError:
        return False


def checked_out(out, shape, dtype, out_overload, *args, **kwargs):
    """``out=`` must have the result's dtype; its shape is resized like PyTorch resizes it."""
    if out.dtype != dtype:
        fail_like_cpu(out_overload, *args, out=torch.empty(0, dtype=out.dtype), **kwargs)
    return resize_out(out, shape)


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


def _biased_product(product_shape, dtypes=MATMUL_DTYPES):
    """The checks of ``beta * self + alpha * (first @ second)``."""

    def shape_of(op, self, first, second, *, beta=1, alpha=1):
        shape = product_shape(first, second)
        valid = shape is not None and _same_dtype_of(dtypes, self, first, second) and _broadcasts_to(self, shape)
        _check(valid, op, self, first, second, beta=beta, alpha=alpha)
        return shape, self.dtype

    return shape_of


def _product_into(out, self, other):
    mxu_matmul(operand(self), operand(other), as_numpy(out))
    return out


def _conj_product_into(out, self, other):
    mxu_matmul(np.conj(operand(self)), operand(other), as_numpy(out))
    return out


def _addmm_into(out, self, first, second, *, beta=1, alpha=1):
    return scaled_sum_into(out, mxu_matmul(operand(first), operand(second)), operand(self), beta, alpha)


def _addr_into(out, self, vec1, vec2, *, beta=1, alpha=1):
    """The outer product is a depth-1 matmul."""
    product = mxu_matmul(operand(vec1)[:, None], operand(vec2)[None, :])
    return scaled_sum_into(out, product, operand(self), beta, alpha)


def _addbmm_into(out, self, batch1, batch2, *, beta=1, alpha=1):
    """The batch sum is one MXU accumulation over the batches laid side by side along k."""
    b1, b2 = operand(batch1), operand(batch2)
    batches, rows, depth = b1.shape
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
    "addmv": (_biased_product(_mv_shape), _addmm_into),
    "addbmm": (_biased_product(_bmm_summed_shape), _addbmm_into),
    "addr": (_biased_product(_outer_shape, MATMUL_DTYPES | {torch.bool}), _addr_into),
}


def _register_product(name, shape_of, compute):
    packet = getattr(torch.ops.aten, name)

    @register(packet.default)
    def functional(*args, **kwargs):
        shape, dtype = shape_of(packet.default, *args, **kwargs)
        return compute(empty(shape, dtype), *args, **kwargs)

    @register(packet.out)
    def out_variant(*args, out, **kwargs):
        shape, dtype = shape_of(packet.default, *args, **kwargs)
        return compute(checked_out(out, shape, dtype, packet.out, *args, **kwargs), *args, **kwargs)


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


def _each_matrix(function, matrices):
    """Apply ``function`` (matrix -> tuple of arrays) to each matrix of a batch; stack each output."""
    batch = matrices.shape[:-2]
    flat = matrices.reshape(-1, *matrices.shape[-2:])
    outputs = zip(*(function(matrix) for matrix in flat))
    return tuple(np.stack(parts).reshape(batch + np.shape(parts[0])) for parts in outputs)


def _store(*pairs):
    """Write each (tpu tensor, array) pair, resizing out= tensors to the array's shape."""
    for tensor, array in pairs:
        write(resize_out(tensor, np.shape(array)), array)


@register("_linalg_check_errors")
def linalg_check_errors(info, api_name, *, is_matrix):
    """LAPACK info codes become CPU's exact errors: the check itself runs on a CPU copy of ``info``."""
    codes = operand(info, "_linalg_check_errors")
    if codes.any():
        torch.ops.aten._linalg_check_errors(torch.from_numpy(np.array(codes)), api_name, is_matrix=is_matrix)


def _potrf(matrix, upper):
    factor, info = _lapack_function("potrf", matrix)(matrix, lower=not upper, clean=True)
    return factor, np.int32(info)


@register("linalg_cholesky_ex.L")
def linalg_cholesky_ex(self, *, upper=False, check_errors=False, L, info):
    a = _lapack_operand(torch.ops.aten.linalg_cholesky_ex.default, self, self, upper=upper)
    if a.size:
        factor, codes = _each_matrix(lambda m: _potrf(m, upper), a)
        _store((L, factor), (info, codes))
    if check_errors:
        linalg_check_errors(info, "linalg.cholesky_ex", is_matrix=self.dim() == 2)
    return L, info


@register("cholesky")
def cholesky(self, upper=False):
    L, info = torch.ops.aten.linalg_cholesky_ex.default(self, upper=upper)
    linalg_check_errors(info, "cholesky", is_matrix=self.dim() == 2)
    return L


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
    _store((LU, lu), (pivots, pivot_indices), (info, codes))
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
    _store((result, _permutation_sign(pivot_indices) * np.prod(diagonal, axis=-1)), (LU, lu), (pivots, pivot_indices))
    return result, LU, pivots


@register("_linalg_slogdet.sign")
def linalg_slogdet(A, *, sign, logabsdet, LU, pivots):
    lu, pivot_indices, _ = _determinant_lu(torch.ops.aten._linalg_slogdet.default, A)
    diagonal = np.diagonal(lu, axis1=-2, axis2=-1)
    magnitude = np.abs(diagonal)
    with np.errstate(divide="ignore", invalid="ignore"):
        unit = np.where(magnitude == 0, 0, diagonal / magnitude)
        log_magnitude = np.log(magnitude).sum(axis=-1)
    _store((sign, _permutation_sign(pivot_indices) * np.prod(unit, axis=-1)), (logabsdet, log_magnitude),
           (LU, lu), (pivots, pivot_indices))
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
        _store((inverse, inverted), (info, codes))
    else:
        _store((info, np.zeros(a.shape[:-2], np.int32)))
    if check_errors:
        linalg_check_errors(info, "linalg.inv_ex", is_matrix=A.dim() == 2)
    return inverse, info


def _solve_with_lu(lu, pivots, rhs, transpose):
    """Solve with LAPACK getrs for batches broadcast against each other; ``transpose`` 0, 1 (T) or 2 (H)."""
    batch = np.broadcast_shapes(lu.shape[:-2], rhs.shape[:-2])
    lu = np.broadcast_to(lu, batch + lu.shape[-2:]).reshape(-1, *lu.shape[-2:])
    pivots = np.broadcast_to(pivots, batch + pivots.shape[-1:]).reshape(-1, pivots.shape[-1])
    rhs = np.broadcast_to(rhs, batch + rhs.shape[-2:]).reshape(-1, *rhs.shape[-2:])
    getrs = _lapack_function("getrs", lu[:1])
    solved = [getrs(m, p - 1, b, trans=transpose)[0] for m, p, b in zip(lu, pivots, rhs)]
    return np.stack(solved).reshape(*batch, *rhs.shape[-2:]) if solved else np.empty(batch + rhs.shape[-2:], rhs.dtype)


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
    _store((out, _solve_sides(lu, operand(pivots), operand(B), left, adjoint)))
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
    _store((LU, lu), (pivots, pivot_indices), (info, codes), (result, solution[..., 0] if vector else solution))
    if check_errors:
        linalg_check_errors(info, "torch.linalg.solve_ex", is_matrix=A.dim() == 2)
    return result, LU, pivots, info


@register("linalg_qr.out")
def linalg_qr(A, mode="reduced", *, Q, R):
    a = _lapack_operand(torch.ops.aten.linalg_qr.default, A, A, mode)
    if mode == "r":
        _store((R, np.linalg.qr(a, mode="r")), (Q, np.empty(0, a.dtype)))
    else:
        _store(*zip((Q, R), np.linalg.qr(a, mode=mode)))
    return Q, R


@register("_linalg_eigh.eigenvalues")
def linalg_eigh(A, UPLO="L", compute_v=True, *, eigenvalues, eigenvectors):
    a = _lapack_operand(torch.ops.aten._linalg_eigh.default, A, A, UPLO, compute_v)
    if compute_v:
        _store(*zip((eigenvalues, eigenvectors), np.linalg.eigh(a, UPLO=UPLO)))
    else:
        _store((eigenvalues, np.linalg.eigvalsh(a, UPLO=UPLO)), (eigenvectors, np.empty(0, a.dtype)))
    return eigenvalues, eigenvectors


def _complex(array):
    return array.astype(np.result_type(array.dtype, np.complex64), copy=False)


@register("linalg_eig")
def linalg_eig(self):
    a = _lapack_operand(torch.ops.aten.linalg_eig.default, self, self)
    values, vectors = np.linalg.eig(a)
    dtype = torch.complex128 if self.dtype in (torch.float64, torch.complex128) else torch.complex64
    return new_tensor(_complex(values), dtype), new_tensor(_complex(vectors), dtype)


@register("_linalg_eigvals")
def linalg_eigvals(self):
    a = _lapack_operand(torch.ops.aten._linalg_eigvals.default, self, self)
    dtype = torch.complex128 if self.dtype in (torch.float64, torch.complex128) else torch.complex64
    return new_tensor(_complex(np.linalg.eigvals(a)), dtype)


@register("_linalg_svd.U")
def linalg_svd(A, full_matrices=False, compute_uv=True, *, driver=None, U, S, Vh):
    a = _lapack_operand(torch.ops.aten._linalg_svd.default, A, A, full_matrices, compute_uv)
    if compute_uv:
        _store(*zip((U, S, Vh), np.linalg.svd(a, full_matrices=full_matrices)))
    else:
        _store((S, np.linalg.svd(a, compute_uv=False)), (U, np.empty(0, a.dtype)), (Vh, np.empty(0, a.dtype)))
    return U, S, Vh


def _triangular_solve(a, b, upper, left, unitriangular, transpose=False):
    """op(A) X = B (left) or X A = B for triangular A, batches broadcast."""
    if not left:  # X A = B  <=>  A^T X^T = B^T
        return np.swapaxes(_triangular_solve(a, np.swapaxes(b, -1, -2), upper, True, unitriangular, not transpose),
                           -1, -2)
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    a = np.broadcast_to(a, batch + a.shape[-2:]).reshape(-1, *a.shape[-2:])
    b = np.broadcast_to(b, batch + b.shape[-2:]).reshape(-1, *b.shape[-2:])
    solved = [
        scipy.linalg.solve_triangular(m, r, trans=int(transpose), lower=not upper, unit_diagonal=unitriangular,
                                      check_finite=False)
        for m, r in zip(a, b)
    ]
    dtype = np.result_type(a.dtype, b.dtype)
    return np.stack(solved).reshape(batch + b.shape[-2:]) if solved else np.empty(batch + b.shape[-2:], dtype)


@register("linalg_solve_triangular")
def linalg_solve_triangular(self, B, *, upper, left=True, unitriangular=False):
    op = torch.ops.aten.linalg_solve_triangular.default
    a = _lapack_operand(op, self, self, B, upper=upper, left=left, unitriangular=unitriangular)
    _check(B.dtype == self.dtype and B.dim() >= 2, op, self, B, upper=upper, left=left, unitriangular=unitriangular)
    return new_tensor(_triangular_solve(a, operand(B), upper, left, unitriangular), self.dtype)


@register("linalg_solve_triangular.out")
def linalg_solve_triangular_out(self, B, *, upper, left=True, unitriangular=False, out):
    result = linalg_solve_triangular(self, B, upper=upper, left=left, unitriangular=unitriangular)
    _store((out, as_numpy(result)))
    return out


@register("triangular_solve.X")
def triangular_solve(self, A, upper=True, transpose=False, unitriangular=False, *, X, M):
    op = torch.ops.aten.triangular_solve.default
    a = _lapack_operand(op, A, self, A, upper, transpose, unitriangular)
    solution = _triangular_solve(a, operand(self), upper, True, unitriangular, transpose)
    _store((X, solution), (M, np.broadcast_to(a, solution.shape[:-2] + a.shape[-2:])))
    return X, M


@register("linalg_matrix_exp")
def linalg_matrix_exp(self):
    op = torch.ops.aten.linalg_matrix_exp.default
    _check(self.dim() >= 2 and self.shape[-1] == self.shape[-2] and self.dtype in LAPACK_DTYPES, op, self)
    a = operand(self, "linalg.matrix_exp")
    return new_tensor(scipy.linalg.expm(a) if a.size else a, self.dtype)
