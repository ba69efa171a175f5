"""Views alias their base exactly as on CPU: same sizes, strides, offsets, _base; writes go through."""

import pytest
import torch

from differential import check, check_same_error, make

VIEWS = {
    "t": lambda x: x.t(),
    "slice_steps": lambda x: x[::2, 1::3],
    "expand": lambda x: x[:1].expand(3, 4, 6),
    "diagonal": lambda x: x.diagonal(1),
    "diagonal_negative": lambda x: x.diagonal(-2),
    "unfold": lambda x: x.unfold(1, 2, 2),
    "as_strided": lambda x: x.as_strided((2, 2), (3, 1), 5),
    "permute": lambda x: x.reshape(2, 2, 6).permute(2, 0, 1),
    "transpose": lambda x: x.transpose(0, 1),
    "select": lambda x: x.select(1, 2),
    "select_negative": lambda x: x[-1],
    "narrow": lambda x: x.narrow(1, 1, 3),
    "unsqueeze": lambda x: x.unsqueeze(1),
    "squeeze": lambda x: x[:1].squeeze(0),
    "squeeze_all": lambda x: x.reshape(1, 4, 1, 6).squeeze(),
    "view": lambda x: x.view(3, 8),
    "view_dtype_same_width": lambda x: x.view(torch.int32),
    "view_dtype_narrower": lambda x: x.view(torch.int16),
    "view_dtype_wider": lambda x: x.view(torch.float64),
    "view_as_real": lambda x: torch.view_as_real(x.view(torch.complex64)),
    "view_as_complex": lambda x: torch.view_as_complex(x.reshape(4, 3, 2)),
    "complex_real": lambda x: x.view(torch.complex64).real,
    "complex_imag": lambda x: x.view(torch.complex64).imag,
    "flatten": lambda x: x.flatten(),
    "unflatten": lambda x: x.unflatten(1, (2, 3)),
    "movedim": lambda x: x.movedim(0, 1),
    "mT": lambda x: x.mT,
    "split": lambda x: x.split(2)[1],
    "chunk": lambda x: x.chunk(3, 1)[2],
    "unbind": lambda x: x.unbind(1)[3],
    "index_0d": lambda x: x[1, 2],
    "none_ellipsis": lambda x: x[None, ..., None],
    "expand_as": lambda x: x[0].expand_as(x),
    "view_of_view": lambda x: x[1:].t()[2:, ::2],
    "detach": lambda x: x.detach(),
}


def _geometry(t):
    return tuple(t.shape), t.stride(), t.storage_offset(), t.dtype, t._is_view()


@pytest.fixture
def bases():
    cpu = torch.arange(24.0).reshape(4, 6)
    return cpu, cpu.to("tpu")


@pytest.mark.parametrize("name", VIEWS)
def test_view_geometry_and_values_match_cpu(name, bases):
    cpu, tpu = bases
    expected, got = VIEWS[name](cpu), VIEWS[name](tpu)
    assert got.device.type == "tpu"
    assert _geometry(got) == _geometry(expected)
    torch.testing.assert_close(got.cpu(), expected, rtol=0, atol=0, equal_nan=True)
    assert got.untyped_storage().data_ptr() == tpu.untyped_storage().data_ptr()


@pytest.mark.parametrize("name", VIEWS)
def test_writes_through_a_view_reach_the_base(name, bases):
    cpu, tpu = bases
    expected, got = VIEWS[name](cpu), VIEWS[name](tpu)
    if torch._debug_has_internal_overlap(expected) == 1:
        expected, got = expected[(0,) * expected.dim()], got[(0,) * got.dim()]
    expected.fill_(-1)
    got.fill_(-1)
    torch.testing.assert_close(tpu.cpu(), cpu, rtol=0, atol=0, equal_nan=True)


def test_base_is_the_root_tensor(bases):
    _, tpu = bases
    assert tpu._base is None and not tpu._is_view() or tpu._base is not None
    base = torch.zeros(4, 6, device="tpu")
    view = base.t()[1:]
    assert view._base is base and view._is_view()
    assert base._base is None and not base._is_view()


@pytest.mark.parametrize("method, args", [("fill_", (3.0,)), ("zero_", ()), ("copy_", (torch.ones(3),))])
def test_in_place_ops_on_a_view(method, args):
    cpu = torch.arange(12.0).reshape(3, 4)
    tpu = cpu.to("tpu")
    getattr(cpu[:, 1], method)(*args)
    getattr(tpu[:, 1], method)(*(a.to("tpu") if isinstance(a, torch.Tensor) else a for a in args))
    torch.testing.assert_close(tpu.cpu(), cpu, rtol=0, atol=0)


def test_add_in_place_on_a_view():
    cpu = torch.arange(12.0).reshape(3, 4)
    tpu = cpu.to("tpu")
    try:
        tpu.t()[1:].add_(torch.ones(3, 3, device="tpu"))
    except NotImplementedError:
        pytest.skip("pointwise add has no tpu kernel yet")
    cpu.t()[1:].add_(torch.ones(3, 3))
    torch.testing.assert_close(tpu.cpu(), cpu, rtol=0, atol=0)


def test_copy_into_a_non_contiguous_view_of_a_different_dtype():
    cpu = torch.zeros(4, 6, dtype=torch.bfloat16)
    tpu = cpu.to("tpu")
    source = torch.linspace(-3, 3, 12).reshape(6, 2)
    cpu.t()[::2, 1::2].copy_(source.view(3, 2, 2)[:, :, 0])
    tpu.t()[::2, 1::2].copy_(source.view(3, 2, 2)[:, :, 0].to("tpu"))
    torch.testing.assert_close(tpu.cpu(), cpu, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.int16, torch.bfloat16])
def test_resize_grow_keeps_old_data(dtype):
    cpu = torch.arange(6, dtype=dtype)
    tpu = cpu.to("tpu")
    cpu.resize_(3, 4)
    tpu.resize_(3, 4)
    assert _geometry(tpu) == _geometry(cpu)
    assert tpu.untyped_storage().nbytes() == cpu.untyped_storage().nbytes()
    torch.testing.assert_close(tpu.cpu().flatten()[:6], cpu.flatten()[:6], rtol=0, atol=0)


def test_resize_shrink_and_empty():
    cpu, tpu = torch.arange(10.0), torch.arange(10.0).to("tpu")
    for size in [(2, 2), (0,), (5,), ()]:
        cpu.resize_(size)
        tpu.resize_(size)
        assert _geometry(tpu) == _geometry(cpu)
        assert tpu.untyped_storage().nbytes() == cpu.untyped_storage().nbytes()
        torch.testing.assert_close(tpu.cpu(), cpu, rtol=0, atol=0)
    empty_cpu, empty_tpu = torch.empty(0), torch.empty(0, device="tpu")
    empty_cpu.resize_(2, 3)
    empty_tpu.resize_(2, 3)
    assert _geometry(empty_tpu) == _geometry(empty_cpu)


def test_resize_of_an_offset_view_grows_the_shared_storage():
    cpu, tpu = torch.arange(6.0), torch.arange(6.0).to("tpu")
    cpu_view, tpu_view = cpu[4:], tpu[4:]
    cpu_view.resize_(5)
    tpu_view.resize_(5)
    assert _geometry(tpu_view) == _geometry(cpu_view)
    assert tpu.untyped_storage().nbytes() == cpu.untyped_storage().nbytes() == 36
    tpu_view.fill_(7)
    cpu_view.fill_(7)
    torch.testing.assert_close(tpu.cpu(), cpu, rtol=0, atol=0)


def test_resize_negative_is_cpus_error():
    check_same_error(lambda device: torch.empty(2, device=device).resize_(-1))


def test_resize_memory_format():
    cpu = torch.empty(0).resize_(2, 3, 4, 5, memory_format=torch.channels_last)
    tpu = torch.empty(0, device="tpu").resize_(2, 3, 4, 5, memory_format=torch.channels_last)
    assert _geometry(tpu) == _geometry(cpu)


def test_set_storage_offset_size_stride():
    source = torch.arange(10.0).to("tpu")
    target = torch.empty(0, device="tpu")
    target.set_(source.untyped_storage(), 2, (2, 3), (1, 2))
    expected = torch.arange(10.0).as_strided((2, 3), (1, 2), 2)
    assert _geometry(target)[:3] == _geometry(expected)[:3]
    torch.testing.assert_close(target.cpu(), expected, rtol=0, atol=0)
    target.fill_(0)
    assert source.cpu().tolist() == [0, 1, 0, 0, 0, 0, 0, 0, 8, 9]


def test_set_tensor_and_storage_share_bytes():
    source = torch.arange(6.0).to("tpu").view(2, 3)
    a = torch.empty(0, device="tpu").set_(source)
    b = torch.empty(0, device="tpu").set_(source.untyped_storage())
    assert _geometry(a)[:3] == ((2, 3), (3, 1), 0) and _geometry(b)[:3] == ((6,), (1,), 0)
    source.fill_(5)
    assert a.cpu().sum().item() == 30 and b.cpu().sum().item() == 30
    c = torch.arange(3.0).to("tpu").set_()
    assert c.shape == (0,) and c.untyped_storage().nbytes() == 0


def test_set_with_a_cpu_storage_is_an_error():
    with pytest.raises(RuntimeError):
        torch.empty(0, device="tpu").set_(torch.arange(3.0).untyped_storage())


def test_set_beyond_the_storage_grows_it():
    source = torch.zeros(2, device="tpu")
    target = torch.empty(0, device="tpu").set_(source.untyped_storage(), 0, (4,), (1,))
    assert source.untyped_storage().nbytes() == 16
    target.fill_(1)
    assert target.cpu().tolist() == [1, 1, 1, 1]


def test_in_place_metadata_changes_without_dispatch():
    cpu, tpu = torch.arange(6.0).view(2, 3), torch.arange(6.0).to("tpu").view(2, 3)
    for t in (cpu, tpu):
        t.t_()
        t.unsqueeze_(0)
        t.squeeze_(0)
        t.as_strided_((2, 2), (1, 3), 1)
    assert _geometry(tpu)[:3] == _geometry(cpu)[:3]
    torch.testing.assert_close(tpu.cpu(), cpu, rtol=0, atol=0)


def test_data_assignment_swaps_storage():
    x = torch.zeros(3, device="tpu")
    x.data = torch.arange(4.0).to("tpu")
    assert x.cpu().tolist() == [0, 1, 2, 3]


def test_view_errors_match_cpu():
    for device in ("cpu", "tpu"):
        x = torch.arange(6.0, device=device).view(2, 3).t()
        with pytest.raises(RuntimeError, match="view size is not compatible"):
            x.view(6)
        with pytest.raises(RuntimeError, match="shape '\\[4\\]' is invalid for input of size 6"):
            x.reshape(4)


# --- writing into a tensor whose elements alias (an expanded view) --------------------------------------------

WRITES_INTO_EXPANDED = {
    "add_": lambda e, d: e.add_(1), "mul_": lambda e, d: e.mul_(2), "div_": lambda e, d: e.div_(2),
    "div_ floor": lambda e, d: e.div_(2, rounding_mode="floor"),
    "sin_": lambda e, d: e.sin_(), "clamp_": lambda e, d: e.clamp_(0, 1), "relu_": lambda e, d: e.relu_(),
    "copy_": lambda e, d: e.copy_(torch.ones(3, device=d)),
    "add out": lambda e, d: torch.add(torch.ones(3, device=d), 1, out=e),
    "exp out": lambda e, d: torch.exp(torch.ones(3, device=d), out=e),
    "normal_": lambda e, d: e.normal_(), "uniform_": lambda e, d: e.uniform_(), "bernoulli_": lambda e, d: e.bernoulli_(0.5),
    "_foreach_add_": lambda e, d: torch._foreach_add_([e], 1.0),
    "addcmul_": lambda e, d: e.addcmul_(torch.ones(3, device=d), torch.ones(3, device=d)),
    # CPU lets these write through aliasing elements; so must tpu
    "fill_": lambda e, d: e.fill_(1), "zero_": lambda e, d: e.zero_(),
    "masked_fill_": lambda e, d: e.masked_fill_(torch.tensor([True, False, True], device=d), 1.0),
    "index_put_": lambda e, d: e.index_put_((torch.tensor([0], device=d),), torch.tensor(1.0, device=d)),
    "sum out": lambda e, d: torch.sum(torch.ones(3, 3, device=d), 1, out=e),
    "_foreach_zero_": lambda e, d: torch._foreach_zero_([e]),
}


@pytest.mark.parametrize("name", WRITES_INTO_EXPANDED)
def test_writing_into_an_expanded_tensor_is_refused_like_cpu(name):
    write = WRITES_INTO_EXPANDED[name]
    results = {}
    for device in ("cpu", "tpu"):
        expanded = torch.zeros(1, device=device).expand(3)
        torch.manual_seed(0)
        try:
            write(expanded, device)
            results[device] = expanded.cpu()
        except RuntimeError as error:
            results[device] = str(error)
    if isinstance(results["cpu"], str):
        assert results["tpu"] == results["cpu"]
    else:
        torch.testing.assert_close(results["tpu"], results["cpu"])


IS_SET_TO_PAIRS = {
    "itself": lambda t: (t, t),
    "set_ to it": lambda t: (t, torch.tensor([], device=t.device).set_(t)),
    "same-shape view": lambda t: (t, t.view(t.shape)),
    "another shape": lambda t: (t, t.view(4, 6)),
    "offset view": lambda t: (t[1:], t[1:]),
    "other offset": lambda t: (t, t[1:]),
    "transposed": lambda t: (t, t.transpose(0, 1)),
    "a clone": lambda t: (t, t.clone()),
    "another tensor": lambda t: (t, torch.empty_like(t)),
}


@pytest.mark.parametrize("pair", IS_SET_TO_PAIRS)
def test_is_set_to_as_on_cpu(pair):
    """is_set_to: one storage, offset, sizes and strides, in both directions."""
    a, b = IS_SET_TO_PAIRS[pair](torch.zeros(2, 3, 4, device="tpu"))
    cpu_a, cpu_b = IS_SET_TO_PAIRS[pair](torch.zeros(2, 3, 4))
    assert (a.is_set_to(b), b.is_set_to(a)) == (cpu_a.is_set_to(cpu_b), cpu_b.is_set_to(cpu_a))


# The ops PyTorch's conjugate and negative fallbacks let through to the kernel with a lazily conjugated
# or negated output (ConjugateFallback.cpp's fallthroughs): the kernel must write values through the bit.
_A, _B, _BATCH, _V = (make(*shape, dtype=torch.complex64) for shape in ((3, 3), (3, 3), (2, 3, 3), (3,)))
OPS_WRITING_THROUGH_MATH_BITS = {
    "conj_physical_": (lambda y: torch.conj_physical_(y), (3, 3)),
    "mm.out": (lambda y: torch.mm(_A.to(y.device), _B.to(y.device), out=y), (3, 3)),
    "addmm_": (lambda y: y.addmm_(_A.to(y.device), _B.to(y.device), beta=0.5, alpha=2), (3, 3)),
    "addmm.out": (lambda y: torch.addmm(_B.to(y.device), _A.to(y.device), _B.to(y.device), out=y), (3, 3)),
    "bmm.out": (lambda y: torch.bmm(_BATCH.to(y.device), _BATCH.to(y.device), out=y), (2, 3, 3)),
    "baddbmm_": (lambda y: y.baddbmm_(_BATCH.to(y.device), _BATCH.to(y.device)), (2, 3, 3)),
    "dot.out": (lambda y: torch.dot(_V.to(y.device), _V.to(y.device).sin(), out=y), ()),
    "vdot.out": (lambda y: torch.vdot(_V.to(y.device), _V.to(y.device).sin(), out=y), ()),
    "linalg_solve_triangular.out": (
        lambda y: torch.linalg.solve_triangular(_A.triu().to(y.device) + 3, _B.to(y.device), upper=True, out=y), (3, 3)),
}


@pytest.mark.parametrize("bit", ["conj", "neg"])
@pytest.mark.parametrize("name", OPS_WRITING_THROUGH_MATH_BITS)
def test_ops_the_math_bit_fallbacks_let_through_write_through_a_lazy_output(name, bit):
    if (name, bit) == ("linalg_solve_triangular.out", "neg"):
        pytest.skip("CPU's kernel stores the negated solution into a negative view (tpu stores the solution)")
    op, shape = OPS_WRITING_THROUGH_MATH_BITS[name]
    lazy = torch.Tensor.conj if bit == "conj" else torch._neg_view

    def written_through(base):
        op(lazy(base))
        return base

    check(written_through, make(*shape, dtype=torch.complex64), atol=1e-5, rtol=1e-5)
