"""Sparse COO tensors on tpu: ``sparse.to("tpu")``, ``dense.to_sparse()``, ``torch.sparse.mm``/``spmm``.

A sparse COO tensor is PyTorch's C++ ``SparseTensorImpl`` holding two dense tensors, its indices and its
values; on tpu both are ordinary tpu tensors. Two kinds of kernel serve it on the SparsePrivateUse1 key:

- PyTorch's own kernels for the ops that only build or read that structure (``_indices``, ``_nnz``, the
  constructor, ...). They are the ones PyTorch also runs for sparse meta tensors, so they never read
  element memory; they run here by redispatching to the SparseMeta key.
- the ops that compute (``_to_dense``, ``_coalesce``, ``mm``, ``add`` with a dense or sparse tensor, ``mul`` by a
  scalar, ...: what sparse embedding gradients and their optimizers need), written below with tpu's dense ops on
  the indices and values, in the order CPU's kernels combine them, so that they give CPU's bits.

Every other op on a sparse tpu tensor still reaches ``fallback.sparse_fallback`` and its error, as do the
compressed layouts (CSR, CSC, BSR, BSC).
"""

import math

import torch

from .fallback import SPARSE_LAYOUTS, unsupported
from .pointwise import check_alpha
from ._registry import redispatching, register, registering_at
from .._errors import scalar_type_name, sparse_add_cannot_cast

sparse_kernel = registering_at("SparsePrivateUse1")
_SPARSE_META = torch._C.DispatchKeySet(torch._C.DispatchKey.SparseMeta)
_aten = torch.ops.aten

# Ops whose SparseMeta kernel is PyTorch's device-generic one: it builds or reads the indices and values as
# tensors and never touches element memory.
STRUCTURAL_OPS = (
    "_sparse_coo_tensor_with_dims", "_sparse_coo_tensor_with_dims_and_tensors", "sparse_resize_",
    "sparse_resize_and_clear_", "sparse_dim", "dense_dim", "_nnz", "is_coalesced", "_coalesced_",
    "_indices", "_values", "indices", "values", "copy_sparse_to_sparse_", "zero_",
)


for _name in STRUCTURAL_OPS:
    _op = getattr(_aten, _name).default
    sparse_kernel(_op)(redispatching(_op, _SPARSE_META))


def coo(indices, values, size, coalesced):
    """A sparse tpu tensor over ``indices`` and ``values`` (taken as they are, not copied)."""
    return _aten._sparse_coo_tensor_with_dims_and_tensors(
        indices.shape[0], values.dim() - 1, list(size), indices, values, dtype=values.dtype,
        layout=torch.sparse_coo, device=values.device, is_coalesced=coalesced)


def _linear_index(indices, sizes):
    """Each column of ``indices`` as one row-major number over ``sizes`` (the sparse dims)."""
    linear = torch.zeros(indices.shape[1], dtype=torch.int64, device=indices.device)
    for row, size in zip(indices, sizes):
        linear = linear * size + row
    return linear


@sparse_kernel("_coalesce")
def coalesce(self):
    """Indices sorted row-major, each once, with its duplicates' values summed as CPU sums them: in the order of
    its unstable sort of the row-major indices (not the stored order past 16 nonzeros), each index's first value
    copied (a -0.0 alone stays -0.0) and the others added to it one by one."""
    indices, values = self._indices(), self._values()
    sizes = self.shape[:self.sparse_dim()]
    linear, order = _linear_index(indices, sizes).sort()
    unique, inverse, counts = torch.unique_consecutive(linear, return_inverse=True, return_counts=True)
    values = values[order]
    firsts = counts.cumsum(0) - counts
    later = torch.ones_like(linear, dtype=torch.bool).index_fill_(0, firsts, False)
    summed = values[firsts].index_add_(0, inverse[later], values[later])
    rows = []
    for size in reversed(sizes):
        rows.append(unique % size)
        unique = unique.div(size, rounding_mode="floor")
    new_indices = torch.stack(rows[::-1]) if rows else indices.new_zeros((0, summed.shape[0]))
    return coo(new_indices, summed, self.shape, coalesced=True)


@sparse_kernel("_to_dense")
def to_dense(self, dtype=None, masked_grad=None):
    if dtype is not None:
        raise RuntimeError("dtype argument is not supported by sparse_to_dense")
    dense = torch.zeros(self.shape, dtype=self.dtype, device=self.device)
    return dense.index_put_(tuple(self._indices()), self._values(), accumulate=True)


@sparse_kernel("clone")
def clone(self, memory_format=None):
    return coo(self._indices().clone(), self._values().clone(), self.shape, self.is_coalesced())


@sparse_kernel("copy_")
def copy(self, src, non_blocking=False):
    """CPU's copy_sparse_wrapper_: PyTorch's sparse-to-sparse copy (indices and values copied, dtype converted)."""
    if not (self.is_sparse and src.is_sparse):
        raise RuntimeError("copy_() between dense and sparse Tensors is not implemented! Found self type = "
                           f"{self.type()} and src type = {src.type()}")
    return _aten.copy_sparse_to_sparse_(self, src, non_blocking)


@sparse_kernel("sparse_mask")
def sparse_mask(self, mask):
    """The dense ``self`` read at ``mask``'s indices, duplicates and order kept (``to_dense``'s backward)."""
    if self.shape != mask.shape:
        raise RuntimeError(f"sparse_mask(): operands have incompatible sizes; self has size {list(self.shape)} but "
                           f"mask has size {list(mask.shape)}")
    indices = mask._indices()
    return coo(indices.clone(), self[tuple(indices)].contiguous(), self.shape, mask.is_coalesced())


@sparse_kernel("addmm")
def addmm(self, mat1, mat2, *, beta=1, alpha=1):
    """``beta * self + alpha * (sparse mat1 @ dense mat2)`` with CPU's bits: ``mat1`` as stored (not coalesced),
    each nonzero's row of ``mat2``, scaled by its value times ``alpha`` (rounded to the dtype), added into its
    output row in stored order (CPU's axpy loop)."""
    if mat1.layout != torch.sparse_coo or mat2.layout != torch.strided or self.layout != torch.strided:
        raise unsupported(_aten.addmm.default, SPARSE_LAYOUTS)
    check_addmm_operands(self, mat1, mat2)
    shape = (mat1.shape[0], mat2.shape[1])
    out = scaled_addend(self.expand(shape), beta, mat1._nnz())
    rows, columns = mat1._indices()
    products = mat1._values() * torch.tensor(alpha, dtype=mat2.dtype, device=mat2.device)
    add_rows_in_stored_order(out, rows, products.unsqueeze(1), mat2[columns])
    return out


def add_rows_in_stored_order(out, rows, scales, addends):
    """``out[rows[k]] += scales[k] * addends[k]`` for each k in stored order, as CPU's loops of axpy do."""
    for step in distinct_row_steps(rows):
        row = rows[step]
        out.index_copy_(0, row, axpy(out[row], scales[step] if scales.dim() else scales, addends[step]))


def check_addmm_operands(self, mat1, mat2):
    """CPU's argument checks of its sparse-dense addmm, in its order and words."""
    if mat1.sparse_dim() != 2:
        raise RuntimeError(f"addmm: matrices expected, got {mat1.sparse_dim()}D tensor")
    if mat1.dense_dim() != 0:
        raise RuntimeError(f"addmm: scalar values expected, got {mat1.dense_dim()}D values")
    if mat2.dim() != 2:
        raise RuntimeError(f"addmm: matrices expected, got {mat2.dim()}D tensor")
    if mat1.shape[1] != mat2.shape[0]:
        raise RuntimeError(f"addmm: Argument #3 (dense): Expected dim 0 size {mat1.shape[1]}, got {mat2.shape[0]}")
    for other in (mat2, self):
        if other.dtype != mat1.dtype:
            raise RuntimeError(f"expected scalar type {scalar_type_name(mat1.dtype)} but found "
                               f"{scalar_type_name(other.dtype)}")
    check_index_bounds(mat1)


def check_index_bounds(mat1):
    """CPU's bound check of each stored (row, column) in stored order, because an index out of bounds would
    otherwise write into another row of the output or raise NumPy's words. One min/max over the indices; only
    when one is out of bounds are they read again to name the first, as CPU's loop does."""
    indices, bounds = mat1._indices(), mat1.shape[:2]
    if indices.shape[1] == 0:
        return
    low, high = (bound.tolist() for bound in indices.aminmax(dim=1))
    if min(low) >= 0 and all(top < size for top, size in zip(high, bounds)):
        return
    rows, columns = indices
    in_bounds = (rows >= 0) & (rows < bounds[0]) & (columns >= 0) & (columns < bounds[1])
    row, column = indices[:, int(in_bounds.logical_not().nonzero()[0, 0])].tolist()
    if not 0 <= row < bounds[0]:
        raise RuntimeError(f"addmm: index out of row bound: {row} not between 1 and {bounds[0]}")
    raise RuntimeError(f"addmm: index out of column bound: {column} not between 1 and {bounds[1]}")


def scaled_addend(addend, beta, nnz):
    """CPU's ``beta * self`` that addmm adds to: multiplied by beta, except that a beta of 0 zeroes (NaN and inf
    too) when there are products to add. With none CPU multiplies by beta rounded to the dtype first."""
    if nnz and beta == 0:
        return torch.zeros(addend.shape, dtype=addend.dtype, device=addend.device)
    return addend * (beta if nnz else torch.tensor(beta, dtype=addend.dtype, device=addend.device))


def distinct_row_steps(rows):
    """The nonzeros' positions as steps that each touch a row at most once, the k-th step holding each row's
    k-th nonzero in stored order: run one after the other, they add into every row in CPU's order."""
    sorted_rows, order = rows.sort(stable=True)
    _, inverse, counts = torch.unique_consecutive(sorted_rows, return_inverse=True, return_counts=True)
    occurrence = torch.empty_like(rows).index_copy_(
        0, order, torch.arange(rows.shape[0], device=rows.device) - (counts.cumsum(0) - counts)[inverse])
    return occurrence.sort(stable=True)[1].split(torch.bincount(occurrence).tolist())


def axpy(accumulated, scale, row):
    """``accumulated + scale * row`` as CPU's axpy: BLAS's fused multiply-add for float32 and float64, and for
    bfloat16 and float16 c10's scalar loop, which rounds the product and the sum."""
    if accumulated.dtype in (torch.float32, torch.float64):
        return torch.addcmul(accumulated, scale, row)
    return accumulated + scale * row


@sparse_kernel("mm")
def mm(self, mat2):
    """A sparse matrix times a dense one, or (as CPU computes it) a dense one times a sparse one as the transpose of
    ``mat2.t() @ self.t()``."""
    if self.layout == torch.sparse_coo:
        return addmm(torch.zeros((), dtype=mat2.dtype, device=mat2.device), self, mat2, beta=0)
    if self.layout != torch.strided:
        raise unsupported(_aten.mm.default, SPARSE_LAYOUTS)
    zeros = torch.zeros((), dtype=self.dtype, device=self.device).expand(self.size(-2), mat2.size(-1))
    return addmm(zeros.t(), mat2.t(), self.t(), beta=0).t()


def check_sparse_dim(sparse_dim, dim):
    """CPU's dense_to_sparse checks: 0 to dim sparse dims, and at least one unless the tensor is 0-d."""
    if not 0 <= sparse_dim <= dim:
        raise RuntimeError(
            f"dense_to_sparse: sparse_dim argument must be in [0,{dim}] range, but {sparse_dim} is given")
    if sparse_dim == 0 and dim > 0:
        raise RuntimeError("dense_to_sparse: sparse_dim argument must be in >0 when self.dim()>0")


@register("_to_sparse", "_to_sparse.sparse_dim", charge=False)
def dense_to_sparse(self, *args, layout=None, blocksize=None, dense_dim=None):
    """``dense.to_sparse()`` of a tpu tensor: the nonzero positions, in row-major order (coalesced, as CPU's)."""
    sparse_dim = args[0] if args else self.dim() - (dense_dim or 0)
    if layout not in (None, torch.sparse_coo) or blocksize is not None:
        raise unsupported(_aten._to_sparse.default, SPARSE_LAYOUTS)
    check_sparse_dim(sparse_dim, self.dim())
    flat = self.reshape(self.shape[:sparse_dim] + (-1,)) if sparse_dim < self.dim() else self.unsqueeze(-1)
    indices = (flat != 0).any(-1).nonzero().t().contiguous()
    # a 0-d tensor's one value is stored only if it is nonzero
    values = self[tuple(indices)] if sparse_dim else self.unsqueeze(0)[:indices.shape[1]]
    return coo(indices, values.contiguous(), self.shape, coalesced=True)


@sparse_kernel("add.Tensor")
def add(self, other, *, alpha=1):
    """CPU's add_sparse: alpha checked against the result type (only here: its in-place and ``out=`` forms convert
    alpha as it comes, truncating 0.5 to 0 for integers), then the sum into a new tensor of that type."""
    check_alpha(torch.result_type(self, other), self, other, alpha)
    if self.is_sparse and other.is_sparse:
        return add_sparse_to_sparse(self, other, alpha)
    check_dense_plus_sparse(self, other)
    out = self.to(torch.result_type(self, other), copy=True)
    return add_sparse_into_dense(out, other, alpha)


@sparse_kernel("add_.Tensor")
def add_(self, other, *, alpha=1):
    if self.is_sparse and other.is_sparse:
        return self.copy_(add_sparse_to_sparse(self, other, alpha, self.dtype))
    check_dense_plus_sparse(self, other)
    check_result_fits(self, other, self.dtype)
    return add_sparse_into_dense(self, other, alpha)


def check_dense_plus_sparse(self, other):
    if self.is_sparse:
        raise RuntimeError("add(sparse, dense) is not supported. Use add(dense, sparse) instead.")
    if self.shape != other.shape:
        raise RuntimeError(f"add: expected 'self' and 'other' to have same size, but self has size {list(self.shape)} "
                           f"while other has size {list(other.shape)} (FYI: dense-sparse addition does not currently "
                           "support broadcasting)")


def check_result_fits(self, other, out_dtype):
    """CPU's sparse add_out refuses an output that cannot hold the result type (in its own words)."""
    dtype = torch.result_type(self, other)
    if not torch.can_cast(dtype, out_dtype):
        raise sparse_add_cannot_cast(dtype, out_dtype)
    return dtype


def alpha_as(dtype, device, alpha):
    """alpha as CPU's kernels convert the Scalar (c10's ``to<T>``: truncated for integers, refused on overflow)."""
    return torch.full((), alpha, dtype=dtype, device=device)


def add_sparse_into_dense(out, sparse, alpha):
    """CPU's add_out_dense_sparse: each nonzero (a value, or a row of values for a hybrid tensor) times ``alpha``
    added into its place of the dense ``out``, in stored order (its axpy per nonzero)."""
    if sparse._nnz() == 0 or out.numel() == 0:
        return out
    sparse_sizes = sparse.shape[:sparse.sparse_dim()]
    flat = out if out.is_contiguous() else out.contiguous()
    rows = flat.view(-1, math.prod(sparse.shape[sparse.sparse_dim():]))
    values = sparse._values().to(out.dtype).reshape(sparse._nnz(), -1)
    add_rows_in_stored_order(rows, _linear_index(sparse._indices(), sparse_sizes),
                             alpha_as(out.dtype, out.device, alpha), values)
    if flat is not out:
        out.copy_(flat)
    return out


def add_sparse_to_sparse(self, other, alpha, out_dtype=None):
    """CPU's add_out_sparse_contiguous: one walk along both tensors' nonzeros as stored, taking the smaller index
    (row-major) or both when equal, the sum ``self + alpha * other`` added into zeros by axpy; coalesced when both
    were (unsorted inputs give CPU's merge of them, duplicates and all). ``out_dtype``: the dtype of the tensor
    that receives the sum (None: the result type)."""
    if self.shape != other.shape:
        raise RuntimeError(f"add: expected sizes of 'self' and 'other' to match, but {list(self.shape)} != "
                           f"{list(other.shape)}")
    dtype = check_result_fits(self, other, out_dtype or torch.result_type(self, other))
    if other._nnz() == 0:
        return coo(self._indices().clone(), self._values().to(dtype, copy=True), self.shape, self.is_coalesced())
    if self._nnz() == 0:
        return coo(other._indices().clone(), other._values().to(dtype) * alpha, self.shape, other.is_coalesced())
    if self.sparse_dim() != other.sparse_dim():
        raise RuntimeError(f"add: expected 'self' and 'other' to have same density, but 'self' has "
                           f"{self.sparse_dim()} sparse dimensions while 'other' has {other.sparse_dim()} sparse "
                           "dimensions")
    sizes = self.shape[:self.sparse_dim()]
    self_slots, other_slots, count = merge_walk(_linear_index(self._indices(), sizes).tolist(),
                                                _linear_index(other._indices(), sizes).tolist())
    device = self.device
    self_slots, other_slots = (torch.tensor(slots, dtype=torch.int64, device=device)
                               for slots in (self_slots, other_slots))
    indices = self._indices().new_empty((self.sparse_dim(), count))
    indices.index_copy_(1, self_slots, self._indices()).index_copy_(1, other_slots, other._indices())
    values = torch.zeros((count, *self.shape[self.sparse_dim():]), dtype=dtype, device=device)
    values.index_copy_(0, self_slots, values[self_slots] + self._values().to(dtype))
    values.index_copy_(0, other_slots, axpy(values[other_slots], alpha_as(dtype, device, alpha),
                                            other._values().to(dtype)))
    return coo(indices, values, self.shape, self.is_coalesced() and other.is_coalesced())


def merge_walk(self_keys, other_keys):
    """The output position of each nonzero of either list in CPU's two-pointer walk, and the number of outputs."""
    self_slots, other_slots = [], []
    i = j = slot = 0
    while i < len(self_keys) or j < len(other_keys):
        take_self = j == len(other_keys) or (i < len(self_keys) and self_keys[i] <= other_keys[j])
        take_other = i == len(self_keys) or (j < len(other_keys) and other_keys[j] <= self_keys[i])
        if take_self:
            self_slots.append(slot)
            i += 1
        if take_other:
            other_slots.append(slot)
            j += 1
        slot += 1
    return self_slots, other_slots, slot


def check_scalar_factor(op, other):
    """Only a sparse tensor times a scalar (CPU's mul_out_sparse_scalar) is a tpu kernel."""
    if isinstance(other, torch.Tensor) and (other.is_sparse or other.dim() != 0):
        raise unsupported(op, SPARSE_LAYOUTS)


@sparse_kernel("mul.Tensor")
def mul(self, other):
    if not (isinstance(self, torch.Tensor) and self.is_sparse):
        self, other = other, self  # a scalar times a sparse tensor (the foreach ops' order)
    check_scalar_factor(_aten.mul.Tensor, other)
    return coo(self._indices().clone(), self._values() * other, self.shape, self.is_coalesced())


@sparse_kernel("mul_.Tensor")
def mul_(self, other):
    check_scalar_factor(_aten.mul_.Tensor, other)
    self._values().mul_(other)
    return self


@sparse_kernel("mul.out")
def mul_out(self, other, *, out):
    """``mul_`` of a sparse tensor arrives here (its composite and the foreach loop write through ``out=``)."""
    return out.copy_(mul(self, other))


@sparse_kernel("add.out")
def add_out(self, other, *, alpha=1, out):
    """CPU's add_out: no alpha check (``add`` makes it), but an ``out`` that must hold the result type."""
    if self.is_sparse and other.is_sparse:
        return out.copy_(add_sparse_to_sparse(self, other, alpha, out.dtype))
    check_dense_plus_sparse(self, other)
    check_result_fits(self, other, out.dtype)
    return out.copy_(add_sparse_into_dense(self.to(torch.result_type(self, other), copy=True), other, alpha))


@sparse_kernel("neg")
def neg(self):
    return coo(self._indices().clone(), self._values().neg(), self.shape, self.is_coalesced())
