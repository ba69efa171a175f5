"""Sparse COO tensors on tpu (torch_tpu/ops/sparse.py) against the same calls on torch CPU."""

import pytest
import torch
from differential import check_same_error

pytestmark = pytest.mark.filterwarnings("ignore:Sparse invariant checks")

# duplicates at (0, 1), unsorted columns: what a graph's edge list gives
INDICES = torch.tensor([[2, 0, 1, 0, 2], [0, 1, 2, 1, 2]])
VALUES = torch.tensor([3.0, 1.0, 2.0, 4.0, -1.5])


def both(make):
    """``make(device)`` on cpu and on tpu, the tpu result brought back to the CPU."""
    return make("cpu"), make("tpu").cpu()


def assert_same_sparse(cpu, tpu):
    assert tpu.layout == torch.sparse_coo and tpu.is_coalesced() == cpu.is_coalesced()
    assert tpu.shape == cpu.shape and tpu._nnz() == cpu._nnz()
    torch.testing.assert_close(tpu._indices(), cpu._indices(), rtol=0, atol=0)
    torch.testing.assert_close(tpu._values(), cpu._values(), rtol=0, atol=0)


@pytest.mark.parametrize("build", ["to", "constructor"])
def test_sparse_tensor_lives_on_tpu_and_densifies_as_on_cpu(build):
    cpu = torch.sparse_coo_tensor(INDICES, VALUES, (3, 3))
    tpu = cpu.to("tpu") if build == "to" else torch.sparse_coo_tensor(INDICES.to("tpu"), VALUES.to("tpu"), (3, 3))
    assert tpu.device.type == "tpu" and tpu._values().device.type == "tpu" and tpu._indices().device.type == "tpu"
    assert_same_sparse(cpu, tpu.cpu())
    torch.testing.assert_close(tpu.to_dense().cpu(), cpu.to_dense(), rtol=0, atol=0)
    assert_same_sparse(cpu.coalesce(), tpu.coalesce().cpu())
    assert "device='tpu:0'" in repr(tpu) and "nnz=5" in repr(tpu)


def test_coalesce_sums_duplicates_of_a_hybrid_tensor_in_cpus_order():
    values = torch.randn(5, 2)
    cpu, tpu = both(lambda d: torch.sparse_coo_tensor(INDICES, values, (3, 3, 2)).to(d).coalesce())
    assert_same_sparse(cpu, tpu)


@pytest.mark.parametrize("nnz", [5, 40, 300])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_coalesce_sums_duplicates_in_the_order_of_cpus_unstable_sort(nnz, dtype):
    """Past 16 nonzeros CPU's unstable sort does not keep duplicates in stored order; tpu summed in stored order
    (other bits for a float sum of three or more duplicates)."""
    generator = torch.Generator().manual_seed(nnz)
    indices = torch.randint(0, 4, (2, nnz), generator=generator)
    values = (torch.randn(nnz, generator=generator) * 10 ** torch.randint(-3, 4, (nnz,), generator=generator)).to(dtype)
    cpu, tpu = both(lambda d: torch.sparse_coo_tensor(indices, values, (4, 4)).to(d).coalesce())
    assert_same_sparse(cpu, tpu)
    assert torch.equal(tpu._values(), cpu._values())


def test_coalesce_keeps_a_lone_negative_zero_as_cpu():
    """tpu added each index's values into zeros: -0.0 + +0.0 gave +0.0, CPU copies the first value."""
    values = torch.tensor([-0.0, -0.0, -0.0, 1.0])
    cpu, tpu = both(lambda d: torch.sparse_coo_tensor(INDICES[:, :4], values, (3, 3)).to(d).coalesce())
    assert_same_sparse(cpu, tpu)
    assert torch.equal(tpu._values().signbit(), cpu._values().signbit())


@pytest.mark.parametrize("sparse_dim", [None, 1])
def test_dense_to_sparse_gives_cpus_indices_and_values(sparse_dim):
    dense = torch.tensor([[0.0, 1.5, 0.0], [0.0, 0.0, 0.0], [-2.0, 0.0, 3.0]])
    args = () if sparse_dim is None else (sparse_dim,)
    cpu, tpu = both(lambda d: dense.to(d).to_sparse(*args))
    assert_same_sparse(cpu, tpu)


@pytest.mark.parametrize("value", [0.0, -0.0, 2.5])
def test_dense_to_sparse_of_a_0d_tensor_stores_only_a_nonzero_as_cpu(value):
    """A 0-d zero failed in tpu's constructor with one value for no index (CPU stores no value)."""
    cpu, tpu = both(lambda d: torch.tensor(value, device=d).to_sparse())
    assert_same_sparse(cpu, tpu)


@pytest.mark.parametrize("shape,sparse_dim", [((2, 2), 3), ((2, 2), -1), ((2, 2), 0), ((), 1)])
def test_dense_to_sparse_refuses_sparse_dims_cpu_refuses(shape, sparse_dim):
    """tpu silently returned a tensor for sparse dims outside [1, dim] (or 0 for a 0-d tensor)."""
    messages = []
    for device in ("cpu", "tpu"):
        with pytest.raises(RuntimeError) as error:
            torch.zeros(shape, device=device).to_sparse(sparse_dim)
        messages.append(str(error.value))
    assert messages[1] == messages[0]


def test_sparse_matmuls_and_their_gradient_equal_cpus():
    sparse = torch.sparse_coo_tensor(INDICES, VALUES, (3, 3))
    dense = torch.randn(3, 4)
    bias = torch.randn(4)
    for call in (torch.mm, torch.spmm, torch.sparse.mm, lambda a, b: a @ b,
                 lambda a, b: torch.addmm(bias.to(b.device), a, b, beta=0.5, alpha=2.0)):
        cpu, tpu = both(lambda d: call(sparse.to(d), dense.to(d)))
        torch.testing.assert_close(tpu, cpu)
    grads = []
    for device in ("cpu", "tpu"):
        weight = dense.detach().to(device).requires_grad_()
        torch.mm(sparse.to(device), weight).tanh().sum().backward()
        grads.append(weight.grad.cpu())
    torch.testing.assert_close(grads[1], grads[0])


def random_sparse(nnz, shape, dtype, seed):
    """Unsorted, uncoalesced nonzeros with many duplicates and values of mixed magnitudes (different sum orders
    round differently)."""
    generator = torch.Generator().manual_seed(seed)
    indices = torch.stack([torch.randint(0, size, (nnz,), generator=generator) for size in shape])
    values = torch.randn(nnz, generator=generator) * 10 ** torch.randint(-3, 4, (nnz,), generator=generator)
    return torch.sparse_coo_tensor(indices, values.to(dtype), shape)


SPARSE_ADDMM_DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]


@pytest.mark.parametrize("nnz", [0, 5, 40, 200])
@pytest.mark.parametrize("dtype", SPARSE_ADDMM_DTYPES, ids=str)
@pytest.mark.parametrize("beta,alpha", [(0, 1), (1, 1), (0.7, 1.3), (0, -2.1)])
def test_sparse_addmm_has_cpus_bits(nnz, dtype, beta, alpha):
    """CPU adds each stored nonzero's scaled row of mat2 in stored order (uncoalesced, BLAS's fused axpy for
    float32/float64), with alpha and beta rounded to the dtype; tpu coalesced first and rounded otherwise."""
    sparse = random_sparse(nnz, (6, 8), dtype, seed=nnz)
    dense = torch.randn(8, 5).to(dtype)
    addend = torch.randn(6, 5).to(dtype)
    addend[0, :3] = torch.tensor([-0.0, float("nan"), float("inf")])
    cpu, tpu = both(lambda d: torch.addmm(addend.to(d), sparse.to(d), dense.to(d), beta=beta, alpha=alpha))
    assert torch.equal(tpu.isnan(), cpu.isnan())
    assert torch.equal(tpu.nan_to_num(), cpu.nan_to_num()) and torch.equal(tpu.signbit(), cpu.signbit())


SPARSE_THEN_DENSE = (lambda sparse, dense: torch.sparse.mm(sparse, dense), (7, 9), (9, 4))
DENSE_THEN_SPARSE = (lambda sparse, dense: torch.mm(dense, sparse), (9, 7), (4, 9))


@pytest.mark.parametrize("dtype", SPARSE_ADDMM_DTYPES, ids=str)
@pytest.mark.parametrize("multiply, sparse_shape, dense_shape", [SPARSE_THEN_DENSE, DENSE_THEN_SPARSE],
                         ids=["sparse_then_dense", "dense_then_sparse"])
def test_sparse_mm_and_the_dense_operands_gradient_have_cpus_bits(dtype, multiply, sparse_shape, dense_shape):
    sparse = random_sparse(60, sparse_shape, dtype, seed=1)
    dense = torch.randn(dense_shape).to(dtype)
    results = []
    for device in ("cpu", "tpu"):
        weight = dense.detach().to(device).requires_grad_()
        product = multiply(sparse.to(device), weight)
        product.backward(torch.linspace(-2, 3, 28).view(product.shape).to(dtype).to(device))
        results.append((product.detach().cpu(), multiply(sparse.to(device), dense.to(device)).cpu(),
                        weight.grad.cpu()))
    for cpu, tpu in zip(*results):
        assert torch.equal(tpu, cpu) and tpu.stride() == cpu.stride()


@pytest.mark.parametrize("make", [
    lambda d: torch.mm(torch.sparse_coo_tensor(INDICES, torch.ones(5, 2), (3, 3, 2)).to(d), torch.ones(3, 2, device=d)),
    lambda d: torch.mm(torch.sparse_coo_tensor(torch.tensor([[0, 1], [2, 7]]), torch.ones(2), (3, 3),
                                               check_invariants=False).to(d), torch.ones(3, 2, device=d)),
    lambda d: torch.mm(torch.sparse_coo_tensor(torch.tensor([[0, -1], [2, 0]]), torch.ones(2), (3, 3),
                                               check_invariants=False).to(d), torch.ones(3, 2, device=d)),
    lambda d: torch.mm(torch.ones(3, device=d), torch.sparse_coo_tensor(INDICES, VALUES, (3, 3)).to(d)),
    lambda d: torch.mm(torch.sparse_coo_tensor(INDICES, VALUES, (3, 3)).to(d), torch.ones(4, 2, device=d)),
    lambda d: torch.mm(torch.sparse_coo_tensor(INDICES, VALUES, (3, 3)).to(d), torch.ones(3, 2, device=d).double()),
    lambda d: torch.addmm(torch.ones(3, 2, dtype=torch.float64, device=d),
                          torch.sparse_coo_tensor(INDICES, VALUES, (3, 3)).to(d), torch.ones(3, 2, device=d)),
    lambda d: torch.mm(torch.sparse_coo_tensor(torch.tensor([[0, 1, 5], [0, 4, 0]]), torch.ones(3), (3, 3),
                                               check_invariants=False).to(d), torch.ones(3, 2, device=d)),
    lambda d: torch.mm(torch.sparse_coo_tensor(torch.tensor([[0, 5, 1], [0, 0, 4]]), torch.ones(3), (3, 3),
                                               check_invariants=False).to(d), torch.ones(3, 2, device=d)),
], ids=["hybrid", "column_bound", "row_bound", "dense_1d_times_sparse", "sizes", "mat2_dtype", "self_dtype",
        "first_bad_is_a_column", "first_bad_is_a_row"])
def test_sparse_mm_refuses_what_cpu_refuses(make):
    check_same_error(make)


def test_graph_convolution_training_matches_cpu():
    """A GCN layer as PyTorch's examples write it: normalised sparse adjacency times dense features."""
    adjacency = (torch.eye(3) + torch.sparse_coo_tensor(INDICES, torch.ones(5), (3, 3))).to_sparse()
    features = torch.rand(3, 5).to_sparse()
    losses = {}
    for device in ("cpu", "tpu"):
        torch.manual_seed(0)
        layer = torch.nn.Linear(5, 2, bias=False).to(device)
        opt = torch.optim.Adam(layer.parameters(), lr=0.1)
        adj, x = adjacency.to(device), features.to(device)
        losses[device] = []
        for _ in range(3):
            opt.zero_grad()
            out = torch.spmm(adj, torch.mm(x, layer.weight.t()))
            loss = torch.nn.functional.cross_entropy(out, torch.tensor([0, 1, 1], device=device))
            loss.backward()
            opt.step()
            losses[device].append(loss.item())
    assert losses["tpu"] == pytest.approx(losses["cpu"], rel=1e-6)


def test_a_sparse_tensor_frees_its_hbm():
    before = torch.tpu.memory_allocated()
    sparse = torch.sparse_coo_tensor(INDICES, VALUES, (3, 3)).to("tpu")
    assert torch.tpu.memory_allocated() - before == INDICES.numel() * 8 + VALUES.numel() * 4
    del sparse
    assert torch.tpu.memory_allocated() == before


def test_to_dense_backward_masks_the_gradient_as_on_cpu():
    grads = []
    for device in ("cpu", "tpu"):
        sparse = torch.sparse_coo_tensor(INDICES, VALUES, (3, 3)).to(device).requires_grad_()
        (sparse.to_dense() * torch.arange(9.0, device=device).view(3, 3)).sum().backward()
        grads.append(sparse.grad.cpu())
    assert_same_sparse(grads[0], grads[1])


@pytest.mark.parametrize("make", [
    lambda d: torch.zeros(3, 4, device=d).sparse_mask(torch.sparse_coo_tensor(INDICES, VALUES, (3, 3)).to(d)),
    lambda d: torch.ops.aten._to_dense(torch.sparse_coo_tensor(INDICES, VALUES, (3, 3)).to(d), dtype=torch.float64),
    lambda d: torch.ops.aten._to_dense(torch.sparse_coo_tensor(INDICES, VALUES, (3, 3)).to(d), dtype=torch.float32),
], ids=["sparse_mask_sizes", "to_dense_dtype", "to_dense_same_dtype"])
def test_sparse_ops_refuse_what_cpu_refuses(make):
    """tpu's sparse_mask read a mask of another size, _to_dense converted to a dtype CPU refuses."""
    check_same_error(make)


@pytest.mark.parametrize("source_device", ["cpu", "tpu"])
@pytest.mark.parametrize("source_dtype", [torch.float32, torch.float64], ids=str)
def test_sparse_copy_into_a_sparse_tpu_tensor_as_cpu(source_device, source_dtype):
    """tpu_sparse.copy_(sparse) raised NotImplementedError from the dense copy's _copy_from."""
    source = torch.sparse_coo_tensor(INDICES, torch.tensor([3.0, -0.0, 2.0, 4.0, -1.5]), (3, 3)).to(source_dtype)
    results = []
    for device in ("cpu", "tpu"):
        target = torch.sparse_coo_tensor(INDICES[:, :1], VALUES[:1], (3, 3)).to(device)
        target.copy_(source.to(source_device if device == "tpu" else "cpu"))
        assert target.device.type == device
        results.append(target.cpu())
    assert_same_sparse(*results)
    assert torch.equal(results[1]._values().signbit(), results[0]._values().signbit())


@pytest.mark.parametrize("alpha", [1, -0.3])
@pytest.mark.parametrize("hybrid", [False, True])
def test_dense_plus_sparse_adds_each_nonzero_in_stored_order_as_cpu(alpha, hybrid):
    """``dense.add_(sparse)`` is how optimizers apply a sparse gradient; it raised NotImplementedError on tpu."""
    values = torch.randn(5, 2) if hybrid else VALUES
    sparse = torch.sparse_coo_tensor(INDICES, values, (3, 3, 2) if hybrid else (3, 3))
    dense = torch.randn(sparse.shape)
    cpu, tpu = both(lambda d: dense.to(d).add(sparse.to(d), alpha=alpha))
    assert torch.equal(tpu, cpu)
    cpu, tpu = both(lambda d: dense.clone().to(d).t().add_(sparse.to(d).t().coalesce(), alpha=alpha) if not hybrid
                    else dense.clone().to(d).add_(sparse.to(d), alpha=alpha))
    assert torch.equal(tpu, cpu)


@pytest.mark.parametrize("coalesce_self", [False, True])
@pytest.mark.parametrize("coalesce_other", [False, True])
def test_sparse_plus_sparse_is_cpus_merge_of_the_stored_nonzeros(coalesce_self, coalesce_other):
    """CPU walks both lists of nonzeros as stored (unsorted ones too), so its indices, values and coalesced flag,
    in-place or not, are what tpu must give (autograd adds two sparse gradients this way)."""
    other_sparse = torch.sparse_coo_tensor(torch.tensor([[1, 2, 0], [2, 0, 0]]), torch.randn(3), (3, 3))

    def add(device, inplace):
        self = torch.sparse_coo_tensor(INDICES, VALUES, (3, 3)).to(device)
        other = other_sparse.to(device)
        self, other = (self.coalesce() if coalesce_self else self), (other.coalesce() if coalesce_other else other)
        return self.add_(other, alpha=0.5) if inplace else self + other

    for inplace in (False, True):
        assert_same_sparse(*both(lambda d: add(d, inplace)))


def test_sparse_times_a_scalar_and_negation_as_cpu():
    sparse = torch.sparse_coo_tensor(INDICES, VALUES, (3, 3))
    assert_same_sparse(*both(lambda d: sparse.to(d) * 2.5))
    assert_same_sparse(*both(lambda d: -sparse.to(d).coalesce()))

    def foreach(device):
        tensors = [sparse.to(device).clone()]
        torch._foreach_mul_(tensors, 0.9)  # SGD's momentum buffers of sparse gradients
        return tensors[0]

    assert_same_sparse(*both(foreach))


@pytest.mark.parametrize("optimizer", [
    lambda p: torch.optim.SparseAdam(p, lr=0.01), lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
    lambda p: torch.optim.Adagrad(p, lr=0.1)], ids=["SparseAdam", "SGD-momentum", "Adagrad"])
@pytest.mark.parametrize("bag", [False, True], ids=["Embedding", "EmbeddingBag"])
def test_training_with_sparse_embedding_gradients_matches_cpu(optimizer, bag):
    def train(device):
        torch.manual_seed(0)
        table = (torch.nn.EmbeddingBag(20, 4, mode="mean", sparse=True) if bag
                 else torch.nn.Embedding(20, 4, sparse=True)).to(device)
        opt = optimizer(list(table.parameters()))
        losses = []
        for step in range(3):
            indices = torch.randint(0, 20, (5, 3)).to(device)
            opt.zero_grad()
            rows = table(indices) if bag else table(indices).sum(1)
            loss = (rows * rows.detach().flip(0)).sum() + table(indices[:, :2]).sum()  # two sparse gradients
            loss.backward()
            opt.step()
            losses.append(loss.detach())
        return torch.stack(losses), table.weight.detach()

    (cpu_losses, cpu_weight), (tpu_losses, tpu_weight) = train("cpu"), train("tpu")
    torch.testing.assert_close(tpu_losses.cpu(), cpu_losses, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(tpu_weight.cpu(), cpu_weight, rtol=1e-6, atol=1e-6)


def int_sparse(device):
    return torch.sparse_coo_tensor(torch.tensor([[0, 2]]), torch.tensor([1, 2]), (4,)).to(device)


def float_sparse(device):
    return torch.sparse_coo_tensor(torch.tensor([[0, 2]]), torch.tensor([1.0, 2.0]), (4,)).to(device)


@pytest.mark.parametrize("make", [
    lambda d: torch.zeros(4, dtype=torch.int64, device=d).add(int_sparse(d), alpha=0.5),
    lambda d: int_sparse(d).add(int_sparse(d), alpha=0.5),
    lambda d: float_sparse(d).add(float_sparse(d), alpha=1j),
    lambda d: torch.zeros(4, device=d).add(float_sparse(d), alpha=True),
    lambda d: torch.zeros(4, dtype=torch.int64, device=d).add_(float_sparse(d)),
    lambda d: int_sparse(d).add_(float_sparse(d)),
    lambda d: torch.add(torch.zeros(4, device=d), float_sparse(d), out=torch.zeros(4, dtype=torch.int64, device=d)),
    lambda d: torch.add(float_sparse(d), float_sparse(d), out=int_sparse(d)),
    lambda d: torch.zeros(4, device=d).add_(float_sparse(d), alpha=1e300),
    lambda d: float_sparse(d).add_(float_sparse(d), alpha=1j),
    lambda d: torch.sparse_coo_tensor(torch.tensor([[0, 2]]), torch.zeros(2, 3), (4, 3)).to(d)
    + torch.sparse_coo_tensor(torch.tensor([[0, 2], [1, 1]]), torch.zeros(2), (4, 3)).to(d),
], ids=["int_alpha", "sparse_int_alpha", "complex_alpha", "bool_alpha", "inplace_cast", "sparse_inplace_cast",
        "out_cast", "sparse_out_cast", "alpha_overflow", "inplace_complex_alpha", "density"])
def test_sparse_add_refuses_what_cpu_refuses(make):
    """tpu truncated a float alpha for integers, cast a float sum into an integer tensor and failed in index_copy_
    for tensors of different sparse dims, where CPU refuses."""
    check_same_error(make)


@pytest.mark.parametrize("make", [
    lambda d: torch.zeros(4, dtype=torch.int64, device=d).add_(int_sparse(d), alpha=1.7),
    lambda d: torch.add(torch.zeros(4, dtype=torch.int64, device=d), int_sparse(d), alpha=0.5,
                        out=torch.zeros(4, dtype=torch.int64, device=d)),
    lambda d: torch.add(float_sparse(d), float_sparse(d), out=torch.zeros(4, dtype=torch.float64, device=d).to_sparse()),
    lambda d: torch.zeros(4, 0, device=d)
    + torch.sparse_coo_tensor(torch.tensor([[0, 2]]), torch.zeros(2, 0), (4, 0)).to(d),
], ids=["inplace_truncates_alpha", "out_truncates_alpha", "wider_sparse_out", "empty_dense_part"])
def test_sparse_add_in_place_and_out_as_cpu(make):
    """CPU's in-place and out= adds convert alpha without add's check (1.7 adds once); an empty dense part adds
    nothing (tpu raised)."""
    cpu, tpu = both(make)
    if cpu.is_sparse:
        assert_same_sparse(cpu, tpu)
    else:
        assert torch.equal(tpu, cpu) and tpu.dtype == cpu.dtype
