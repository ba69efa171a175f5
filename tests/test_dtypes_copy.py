"""Factories and copies: every dtype bit-exact against torch CPU, including conversions."""

import functools
import itertools
import math
import tracemalloc
import warnings

import pytest
import torch

from differential import check, check_factory, check_same_error

DTYPES = [
    torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2,
    torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8, torch.bool, torch.complex64,
]

# Values that stress conversions: NaN of both signs, infinities, signed zeros, ties, fp8/fp16 overflow.
SPECIAL = [float("nan"), -float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 1e30, -1e30, 448.0, 449.0,
           464.0, 500.0, 57344.0, 61440.0, 65504.0, 65520.0, 70000.0, 1e-10, 2.5, -2.5, 3.5, 0.5, 1.5,
           127.6, -128.7, 255.9, 256.0, 1 + 2**-8, 1 + 2**-8 + 2**-20, 2**-9, 3e-5]


def as_bytes(t):
    """The tensor's elements as raw bytes (a NaN is equal only to the same NaN bits)."""
    t = t.resolve_conj().contiguous().reshape(-1)
    if t.dtype.is_complex:
        t = torch.view_as_real(t).contiguous()
    return t.view(torch.uint8) if t.dtype != torch.bool else t.to(torch.uint8)


def assert_bits_equal(got, expected):
    assert got.device.type == "cpu"
    assert (got.dtype, got.shape) == (expected.dtype, expected.shape)
    assert torch.equal(as_bytes(got), as_bytes(expected)), f"\n{got}\n!=\n{expected}"


def sample(dtype, n=64):
    """Random values plus SPECIAL, made with CPU's own conversion into ``dtype``."""
    g = torch.Generator().manual_seed(n)
    values = torch.cat([torch.randn(n, generator=g, dtype=torch.float64) * 300, torch.tensor(SPECIAL, dtype=torch.float64)])
    if dtype.is_complex:
        return torch.complex(values, values.flip(0)).to(dtype)
    if not dtype.is_floating_point:
        values = values.nan_to_num(0.0, 0.0, 0.0).clamp(-100, 100)
    return values.to(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_round_trip_is_bit_exact(dtype):
    cpu = sample(dtype)
    assert_bits_equal(cpu.to("tpu").cpu(), cpu)
    assert_bits_equal(cpu.reshape(5, -1).to("tpu").t().contiguous().cpu(), cpu.reshape(5, -1).t().contiguous())


@pytest.mark.filterwarnings("ignore:Casting complex values to real")
@pytest.mark.parametrize("source, destination", itertools.product(DTYPES, DTYPES))
def test_converting_copies_match_cpu(source, destination):
    cpu = sample(source)
    expected = cpu.to(destination)
    tpu = cpu.to("tpu")
    assert_bits_equal(tpu.to(destination).cpu(), expected)  # tpu -> tpu
    assert_bits_equal(cpu.to("tpu", destination).cpu(), expected)  # CPU -> tpu
    host = torch.empty(cpu.shape, dtype=destination)
    host.copy_(tpu)  # tpu -> CPU
    assert_bits_equal(host, expected)


def test_float_to_float8_saturation_and_nan():
    cpu = torch.tensor([1e6, -1e6, 449.0, 464.0, float("inf"), float("nan"), -float("nan"), 60000.0, 1e-9])
    for dtype in (torch.float8_e4m3fn, torch.float8_e5m2, torch.bfloat16, torch.float16):
        assert_bits_equal(cpu.to("tpu").to(dtype).cpu(), cpu.to(dtype))
    assert cpu.to("tpu").to(torch.float8_e4m3fn).cpu().view(torch.uint8)[:2].tolist() == [0x7E, 0xFE]


def test_float64_to_half_rounds_through_float32_like_cpu():
    cpu = torch.tensor([1 + 2**-11 + 2**-40, 1 + 2**-8 + 2**-40, -(1 + 2**-11 + 2**-40)], dtype=torch.float64)
    for dtype in (torch.float16, torch.bfloat16):
        assert_bits_equal(cpu.to("tpu").to(dtype).cpu(), cpu.to(dtype))


SOURCE_VIEWS = {
    "transposed": lambda t: t.transpose(0, 2),
    "stepped": lambda t: t[::2, 1::2, ::3],
    "expanded": lambda t: t[:, :1].expand(3, 4, 5),
    "offset": lambda t: t[1:, 2:],
    "zero_d": lambda t: t[1, 2, 3],
    "empty": lambda t: t[:, 4:],
}


def _reversed_layout(base, shape):
    """A non-contiguous destination of ``shape`` (memory order reversed, offset 1) inside ``base``."""
    inner = base[1:1 + math.prod(shape)].view(tuple(reversed(shape)))
    return inner.permute(tuple(reversed(range(len(shape)))))


@pytest.mark.parametrize("name", SOURCE_VIEWS)
@pytest.mark.parametrize("source_device, destination_device", [("cpu", "tpu"), ("tpu", "cpu"), ("tpu", "tpu")])
def test_non_contiguous_copies_with_conversion(name, source_device, destination_device):
    make_view = SOURCE_VIEWS[name]
    values = torch.linspace(-70, 70, 60, dtype=torch.float64).reshape(3, 4, 5)
    expected_source = make_view(values)
    source = make_view(values.to(source_device))
    expected_base = torch.full((64,), -1.0, dtype=torch.bfloat16)
    base = expected_base.to(destination_device)
    _reversed_layout(expected_base, expected_source.shape).copy_(expected_source)
    _reversed_layout(base, source.shape).copy_(source)
    assert_bits_equal(base.cpu(), expected_base)


def test_copy_broadcasts_the_source():
    expected = torch.zeros(3, 4).copy_(torch.arange(4.0))
    got = torch.zeros(3, 4, device="tpu").copy_(torch.arange(4.0))
    assert_bits_equal(got.cpu(), expected)
    got = torch.zeros(3, 4, device="tpu").copy_(torch.tensor(5.0, device="tpu"))
    assert_bits_equal(got.cpu(), torch.full((3, 4), 5.0))


@pytest.mark.parametrize("destination, source", [((2,), (3,)), ((2,), (2, 1)), ((2, 3), (2,))])
@pytest.mark.parametrize("source_device", ["cpu", "tpu"])
def test_copy_size_mismatch_is_cpus_error(destination, source, source_device):
    with pytest.raises(RuntimeError) as expected:
        torch.zeros(destination).copy_(torch.zeros(source))
    with pytest.raises(RuntimeError) as got:
        torch.zeros(destination, device="tpu").copy_(torch.zeros(source, device=source_device))
    assert str(got.value) == str(expected.value)


@pytest.mark.parametrize("case", [
    lambda t: t[1:].copy_(t[:-1]),  # partial overlap
    lambda t: t.view(2, 3).t().copy_(t.view(3, 2)),  # same bytes, different strides
    lambda t: t[:1].expand(3).copy_(t[3:]),  # written-to tensor overlaps itself
])
def test_overlapping_copies_are_cpus_error(case):
    with pytest.raises(RuntimeError) as expected:
        case(torch.arange(6.0))
    with pytest.raises(RuntimeError) as got:
        case(torch.arange(6.0, device="tpu"))
    assert str(got.value) == str(expected.value)


def test_allowed_aliasing_copies():
    for device in ("cpu", "tpu"):
        t = torch.arange(6.0, device=device)
        t.copy_(t)
        t[:3].copy_(t[3:])
        t.view(2, 3).copy_(t.view(2, 3))
        assert t.cpu().tolist() == [3, 4, 5, 3, 4, 5]


@pytest.mark.parametrize("copy", [
    lambda z: z.float(),
    lambda z: torch.empty(2, device="tpu").copy_(z),
    lambda z: torch.empty(2).copy_(z),
    lambda z: torch.empty(2, dtype=torch.int32, device="tpu").copy_(z.cpu()),
], ids=["to_float", "into_tpu", "into_cpu", "from_cpu_into_tpu"])
def test_copying_complex_into_real_warns_like_cpu(copy):
    z = torch.tensor([1 + 2j, 3 - 1j], device="tpu")
    before = torch.is_warn_always_enabled()
    torch.set_warn_always(True)  # the warning is TORCH_WARN_ONCE's: once per process otherwise
    try:
        with pytest.warns(UserWarning, match="Casting complex values to real discards the imaginary part"):
            assert copy(z).cpu().tolist() == [1, 3]
    finally:
        torch.set_warn_always(before)


@pytest.mark.parametrize("device", ["cpu", "tpu"])
def test_copying_complex_into_real_warns_once_per_process_as_cpu_does(device):
    def warnings_of_a_copy():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.zeros(2, device=device).copy_(torch.ones(2, dtype=torch.complex64, device=device))
        return [str(w.message) for w in caught]

    warnings_of_a_copy()
    assert warnings_of_a_copy() == []


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int8,
                                   torch.uint8, torch.bool, torch.complex64])
@pytest.mark.parametrize("number", [float("inf"), float("nan"), -1.5, 1e300, 3, -7, True, 2 + 3j])
def test_copy_of_a_python_number_fills_as_cpu_does(number, dtype):
    """``grad.copy_(float("inf"))`` (GradScaler tests break gradients so): the binding wraps the number in a 0-d
    tensor, which reaches a Python kernel as the number again."""
    expected = torch.zeros(3, dtype=dtype).copy_(number)
    result = torch.zeros(3, dtype=dtype, device="tpu").copy_(number).cpu()
    assert result.tolist() == expected.tolist() or (result.isnan().all() and expected.isnan().all())
    if dtype.is_floating_point:
        assert torch.equal(result.view(torch.uint8), expected.view(torch.uint8))


def test_copy_to_cpu_keeps_the_cpu_tensor_resizable():
    cpu = torch.arange(4.0)
    cpu.to("tpu")
    torch.zeros(4, device="tpu").cpu()
    host = torch.empty(4)
    host.copy_(torch.ones(4, device="tpu"))
    cpu.resize_(8)
    host.resize_(8)


def test_conj_and_neg_views_are_resolved():
    z = torch.tensor([1 + 2j, -3 - 4j], dtype=torch.complex64)
    assert_bits_equal(z.conj().to("tpu").cpu(), z.conj().resolve_conj())
    assert_bits_equal(z.to("tpu").conj().cpu(), z.conj().resolve_conj())


# Factories: every one against CPU, values and geometry.
FACTORIES = {
    "empty_shape": lambda d: torch.empty(2, 0, 3, device=d).shape,
    "empty_strided": lambda d: torch.empty_strided((2, 3), (1, 2), device=d).stride(),
    "empty_channels_last": lambda d: torch.empty(1, 2, 3, 4, device=d, memory_format=torch.channels_last).stride(),
    "zeros": lambda d: torch.zeros(2, 3, device=d, dtype=torch.int16),
    "ones": lambda d: torch.ones(4, device=d, dtype=torch.bfloat16),
    "ones_0d": lambda d: torch.ones((), device=d),
    "full_float": lambda d: torch.full((2, 2), 1.25, device=d),
    "full_int": lambda d: torch.full((3,), 7, device=d),
    "full_bool": lambda d: torch.full((3,), True, device=d),
    "full_complex": lambda d: torch.full((2,), 3 - 1j, device=d),
    "full_negative_uint8": lambda d: torch.full((2,), -1, device=d, dtype=torch.uint8),
    "arange_int": lambda d: torch.arange(7, device=d),
    "arange_start_end": lambda d: torch.arange(-3, 4, device=d),
    "arange_negative_step": lambda d: torch.arange(10, 0, -3, device=d),
    "arange_float": lambda d: torch.arange(0, 1, 0.1, device=d),
    "arange_float_negative": lambda d: torch.arange(1.5, -2.0, -0.5, device=d),
    "arange_bfloat16": lambda d: torch.arange(0, 300, 7, device=d, dtype=torch.bfloat16),
    "arange_empty": lambda d: torch.arange(3, 3, device=d),
    "eye": lambda d: torch.eye(3, device=d),
    "eye_rectangular": lambda d: torch.eye(2, 4, device=d, dtype=torch.int64),
    "tensor_nested": lambda d: torch.tensor([[1, 2], [3, 4]], device=d, dtype=torch.float16),
    "tensor_scalar": lambda d: torch.tensor(3.5, device=d),
    "tensor_bool": lambda d: torch.tensor([True, False], device=d),
    "zeros_like": lambda d: torch.zeros_like(torch.ones(2, 3, device=d).t()),
    "ones_like_dtype": lambda d: torch.ones_like(torch.ones(2, 3, device=d), dtype=torch.complex64),
    "full_like": lambda d: torch.full_like(torch.ones(2, 3, device=d), 5, dtype=torch.int8),
    "empty_like_strides": lambda d: torch.empty_like(torch.ones(2, 3, device=d).t()).stride(),
    "new_zeros": lambda d: torch.ones(2, device=d).new_zeros(3, 2),
    "new_full": lambda d: torch.ones(2, device=d, dtype=torch.int32).new_full((2,), 9),
    "new_tensor": lambda d: torch.ones(2, device=d).new_tensor([1.5, 2.5]),
}


@pytest.mark.parametrize("name", FACTORIES)
def test_factories_match_cpu(name):
    expected, got = FACTORIES[name]("cpu"), FACTORIES[name]("tpu")
    if isinstance(expected, torch.Tensor):
        assert got.device == torch.device("tpu:0")
        assert (got.stride(), got.storage_offset()) == (expected.stride(), expected.storage_offset())
        assert_bits_equal(got.cpu(), expected)
    else:
        assert got == expected


def test_arange_float64_last_ulp_matches_cpu():
    """CPU's vectorised arange computes (start + step*chunk) + step*lane per vector, fused: not start + step*i."""
    expected = torch.arange(-1, 1, 0.3, dtype=torch.float64)
    assert_bits_equal(torch.arange(-1, 1, 0.3, device="tpu", dtype=torch.float64).cpu(), expected)


@pytest.mark.parametrize("start, end, step, dtype", [(0, 1, 0.1, None), (0, 1, 0.1, torch.float64), (-3, 7, 2, torch.int8),
                                                     (1.5, -2, -0.25, torch.bfloat16), (0, 10, 3, torch.int64),
                                                     (0, 3, 0, None), (3, 0, 1, None), (0, float("inf"), 1, None)])
@pytest.mark.filterwarnings("ignore:torch.range is deprecated")
def test_deprecated_inclusive_range(start, end, step, dtype):
    check_factory(torch.range, start, end, step, dtype=dtype)


def test_linspace_and_logspace_refuse_an_out_that_aliases_itself():
    for space in (torch.linspace, torch.logspace):
        check_same_error(lambda d: space(1, 10, 10, out=torch.zeros(1, device=d).expand(10)))


@pytest.mark.parametrize("end, step", [(100 * 1449629115440469, 1449629115440469), (2**62 + 7, 2**60 + 1),
                                       (-(2**62), -(2**59) - 3)])
def test_int64_arange_counts_in_integers_beyond_doubles_precision(end, step):
    # CPU counts an int64 range's length from the int64 bounds; through doubles it came out one too long
    assert_bits_equal(torch.arange(0, end, step, device="tpu").cpu(), torch.arange(0, end, step))


@pytest.mark.parametrize("start, end, step", [(0, 10, 0), (0, 10, -1), (5, 0, 1), (0, float("inf"), 1)])
def test_arange_errors(start, end, step):
    with pytest.raises(RuntimeError):
        torch.arange(start, end, step)
    with pytest.raises(RuntimeError):
        torch.arange(start, end, step, device="tpu")


def test_eye_negative_is_an_error():
    with pytest.raises(RuntimeError):
        torch.eye(-1, device="tpu")


FILL_VALUES = [300, -1, -200, 2**31, 2**63 - 1, 1.5, -1.5, 255.5, 1e6, 1e39, 1e300, float("inf"), float("nan"),
               True, 1 + 1j, 3 + 0j, 70000.0, 65504.5, 448.5, 60000.0, -129, 128.7]


@pytest.mark.parametrize("dtype", DTYPES)
def test_fill_converts_and_overflows_like_cpu(dtype):
    for value in FILL_VALUES:
        try:
            expected = torch.zeros(3, dtype=dtype).fill_(value)
        except RuntimeError as error:
            with pytest.raises(RuntimeError) as got:
                torch.zeros(3, dtype=dtype, device="tpu").fill_(value)
            assert str(got.value) == str(error), value
            continue
        assert_bits_equal(torch.zeros(3, dtype=dtype, device="tpu").fill_(value).cpu(), expected)


@pytest.mark.parametrize("dtype", [torch.int8, torch.int32, torch.uint32, torch.float16, torch.bool])
def test_fill_converts_its_number_once_not_per_element(dtype):
    # torch.ones fills with the float 1.0: a per-element float -> integer conversion took 13 bytes of
    # temporaries per element, so a 2**31-element int8 tensor needed 28 GB of host memory to be created
    tensor = torch.empty(1 << 22, dtype=dtype, device="tpu")
    tracemalloc.start()
    try:
        tensor.fill_(1.0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024, peak
    assert_bits_equal(tensor[-3:].cpu(), torch.ones(3, dtype=dtype))


def test_fill_with_a_tensor_value():
    assert_bits_equal(torch.zeros(3, device="tpu").fill_(torch.tensor(2.5)).cpu(), torch.full((3,), 2.5))
    assert_bits_equal(torch.zeros(3, device="tpu").fill_(torch.tensor(2.5, device="tpu")).cpu(), torch.full((3,), 2.5))
    with pytest.raises(RuntimeError, match="0-dimension"):
        torch.zeros(3, device="tpu").fill_(torch.ones(2, device="tpu"))


@pytest.mark.parametrize("dtype", DTYPES + [torch.complex32, torch.complex128, torch.uint16, torch.uint32, torch.uint64])
def test_item_and_tolist(dtype):
    cpu = sample(dtype, n=4)
    tpu = cpu.to("tpu")
    assert str(tpu.tolist()) == str(cpu.tolist())
    assert str(tpu[2].item()) == str(cpu[2].item())


def test_untyped_storage_apis():
    x = torch.arange(6.0).to("tpu")
    storage = x.untyped_storage()
    assert storage.device.type == "tpu" and storage.nbytes() == 24 == len(storage)
    assert storage.tolist() == torch.arange(6.0).untyped_storage().tolist()
    assert storage.cpu().tolist() == storage.tolist() and storage.cpu().device.type == "cpu"
    assert storage[4:8].tolist() == [0, 0, 128, 63]
    storage[0] = 7
    assert x.cpu().view(torch.uint8)[0].item() == 7
    fresh = torch.UntypedStorage(10, device="tpu")
    assert fresh.device.type == "tpu" and fresh.nbytes() == 10
    fresh.fill_(3)
    assert fresh.tolist() == [3] * 10
    fresh.copy_(torch.UntypedStorage(10).fill_(4))
    assert fresh.tolist() == [4] * 10
    assert storage.data_ptr() != 0 and storage.data_ptr() != fresh.data_ptr()
    on_cpu = torch.UntypedStorage(10).copy_(fresh)
    assert on_cpu.tolist() == [4] * 10


# --- regressions from the OpInfo sweep: range factories ----------------------------------------------------------

RANGE_DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16,
                torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8]
ENDPOINTS = [(4.3, -3), (-8.000001, 5.000001), (0, 1), (1, 100.5), (10, 2.1), (2.1, 2.1), (-3, -10000.0)]


@pytest.mark.parametrize("dtype", RANGE_DTYPES, ids=str)
def test_linspace_matches_cpu_bit_for_bit(dtype):
    for (start, end), steps in itertools.product(ENDPOINTS, (0, 1, 2, 5, 50, 129, 1000)):
        check_factory(torch.linspace, start, end, steps, dtype=dtype)
    check_factory(torch.linspace, torch.tensor(-2.5), torch.tensor(7), 33, dtype=dtype)  # tensor endpoints
    out = torch.empty(7, 2, device="tpu", dtype=dtype)[:, 0]
    torch.linspace(0, 10, 7, out=out)  # non-contiguous out
    assert out.cpu().tolist() == torch.linspace(0, 10, 7, dtype=dtype).tolist()


@pytest.mark.parametrize("dtype", RANGE_DTYPES, ids=str)
def test_logspace_matches_cpu_bit_for_bit(dtype):
    scale = 0.1 if dtype.is_floating_point else 1  # integer exponents stay small
    for (start, end), steps, base in itertools.product(ENDPOINTS[:5], (0, 1, 2, 31, 100), (10.0, 2.0, 0.5)):
        check_factory(torch.logspace, start * scale, end * scale, steps, base=base, dtype=dtype)


@pytest.mark.parametrize("dtype", RANGE_DTYPES, ids=str)
def test_arange_matches_cpu_bit_for_bit(dtype):
    for (start, end), step in itertools.product(ENDPOINTS, (1, 0.5, -0.3, 3.7, 0.01, -2)):
        check_factory(torch.arange, start, end, step, dtype=dtype)
    check_factory(torch.arange, 0.0, 100_000.0, 0.7, dtype=dtype)  # split across threads like CPU


@pytest.mark.parametrize("call", [
    lambda d: torch.arange(0, 5, 0, device=d),
    lambda d: torch.arange(0, 5, 0.5, dtype=torch.int64, device=d),  # the int64 step truncates to 0
    lambda d: torch.arange(1, -3, 0.5, device=d),
    lambda d: torch.arange(0, float("nan"), device=d),
    lambda d: torch.arange(0, 1e30, 1e-30, device=d),
    lambda d: torch.arange(0, 3, dtype=torch.bool, device=d),
    lambda d: torch.linspace(0, 1, -1, device=d),
    lambda d: torch.linspace(0, 1e6, 3, dtype=torch.int8, device=d),
    lambda d: torch.linspace(0, 1, 5, dtype=torch.bool, device=d),
    lambda d: torch.logspace(0, 1, 5, dtype=torch.bool, device=d),
], ids=lambda _: "")
def test_range_factory_errors_match_cpu(call):
    check_same_error(call)


def test_complex32_is_stored_as_float16_pairs():
    source = torch.tensor([1.5, -2.25, 70000.0, float("nan"), 1e-8])
    for x in (source, source.to(torch.bfloat16), source.to(torch.int64), source > 0, source * (1 + 2j), source.double()):
        actual = x.to("tpu").chalf()
        assert actual.dtype == torch.complex32 and actual.device.type == "tpu"
        assert_bits_equal(actual.cpu().view(torch.float16), x.chalf().view(torch.float16))
    back = torch.randn(4, 3).chalf().to("tpu")
    torch.testing.assert_close(back.to(torch.complex64).cpu(), back.cpu().to(torch.complex64), atol=0, rtol=0)


def _on(x, *positions):
    return torch.tensor(positions, device=x.device)


# Kernels that move complex32 elements (float16 pairs in HBM, which NumPy cannot compute with) or read them
# through a conj/neg bit: each once wrote the real part into both halves or failed where CPU works.
COMPLEX32_CASES = {
    "index_put": lambda x: x.index_put_((_on(x, 2, 0),), x[1].clone()),
    "index_put_accumulate": lambda x: x.index_put_((_on(x, 0, 0, 2),), x[:3].clone(), accumulate=True),
    "setitem_mask": lambda x: x.__setitem__(x.real > 0, x[0, 0].clone()),
    "index_copy": lambda x: x.index_copy_(1, _on(x, 2, 0), x[:, :2].clone()),
    "index_add": lambda x: x.index_add_(0, _on(x, 1, 1), x[:2].clone()),
    "index_select": lambda x: x.index_select(1, _on(x, 3, 0, 3)),
    "any_all": lambda x: (x.any(), x.all(1)),
    "std_var_mean": lambda x: (x.std(), torch.var_mean(x, 0)),
    "conj_to_cpu_and_back": lambda x: x.conj().cpu().to(x.device),
    "conj_clone": lambda x: x.conj().clone(),
    "neg_view_resolved": lambda x: torch._neg_view(x).resolve_neg(),
    "copy_into_conj": lambda x: x[:2].conj().copy_(x[2:]),
    "item": lambda x: x[1, 2].item(),
}


@pytest.mark.parametrize("name", list(COMPLEX32_CASES))
def test_complex32_kernels_match_cpu(name):
    x = torch.complex(torch.randn(4, 4), torch.randn(4, 4)).to(torch.complex32)
    x[0, 1] = 0
    check(COMPLEX32_CASES[name], x)


def test_complex32_random_fills_both_halves():
    values = torch.empty(2000, dtype=torch.complex32, device="tpu").normal_().cpu().to(torch.complex64)
    assert not torch.equal(values.real, values.imag)
    assert abs(values.real.std().item() - 0.5**0.5) < 0.05 and abs(values.imag.std().item() - 0.5**0.5) < 0.05


# --- casts are CPU's bit for bit, for every bit pattern -----------------------------------------------------------

ALL_DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2,
              torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8, torch.uint16, torch.uint32,
              torch.uint64, torch.bool, torch.complex32, torch.complex64, torch.complex128]
NARROW_DTYPES = [d for d in ALL_DTYPES if d.itemsize <= 2]
WIDE_DTYPES = [d for d in ALL_DTYPES if d.itemsize > 2]
_BITS = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
# signalling and quiet NaNs with payloads, of both signs, as integer bit patterns
NAN_PATTERNS = {
    torch.float32: [0x7F800001, 0x7FA00000, 0x7FC00000, 0x7FD12345, 0xFF800001, 0xFFC12345],
    torch.float64: [0x7FF0000000000001, 0x7FF4000000000000, 0x7FF8000000000000, 0x7FF8123456789ABC,
                    0xFFF0000000000001, 0xFFF8123456789ABC],
}
WIDE_SPECIALS = SPECIAL + [2.0**31, -2.0**31, -2.0**31 - 256, 3e9, -3e9, 5e9, 2.0**32, 2.0**63, -2.0**63, 2.0**64,
                           1e19, -1e19, -3.5e16, 1.2e18, 5e-324, 1e-40, 3e38, 4e38, -1.0, -0.5]


def bit_patterns(dtype, values):
    """Integers (wrapping) reinterpreted as ``dtype``'s bits."""
    bits = _BITS[dtype.itemsize]
    wrapped = [v - (1 << 8 * dtype.itemsize) if v >= 1 << (8 * dtype.itemsize - 1) else v for v in values]
    return torch.tensor(wrapped, dtype=torch.int64).to(bits).view(dtype)


def every_bit_pattern(dtype):
    if dtype == torch.bool:
        return torch.tensor([False, True])
    return bit_patterns(dtype, range(1 << 8 * dtype.itemsize))


def wide_sample(dtype, n=40_000):
    """Random bit patterns (NaNs with payloads, subnormals, huge values included) plus the special values."""
    g = torch.Generator().manual_seed(dtype.itemsize)
    random = torch.randint(0, 256, (n * dtype.itemsize,), dtype=torch.uint8, generator=g).view(dtype)
    if not (dtype.is_floating_point or dtype.is_complex):
        info = torch.iinfo(dtype)
        return torch.cat([random, torch.tensor([0, 1, info.max, info.max - 1], dtype=dtype),
                          torch.tensor([info.min], dtype=dtype)])
    values = torch.tensor(WIDE_SPECIALS, dtype=torch.float64)
    specials = torch.complex(values, values.flip(0)).to(dtype) if dtype.is_complex else values.to(dtype)
    nans = [bit_patterns(dtype, NAN_PATTERNS[dtype])] if dtype in NAN_PATTERNS else []
    return torch.cat([random, specials, *nans])


def assert_cast_matches_cpu(cpu, destination):
    """``cpu`` converted to ``destination`` on tpu (tpu -> tpu and tpu -> CPU) has CPU's bits."""
    expected = cpu.to(destination)
    tpu = cpu.to("tpu")
    assert_bits_equal(tpu.to(destination).cpu(), expected)
    host = torch.empty(cpu.shape, dtype=destination)
    host.copy_(tpu)
    assert_bits_equal(host, expected)


@pytest.mark.filterwarnings("ignore:Casting complex values to real", "ignore:ComplexHalf support is experimental")
@pytest.mark.parametrize("destination", ALL_DTYPES, ids=str)
@pytest.mark.parametrize("source", NARROW_DTYPES, ids=str)
def test_every_bit_pattern_converts_like_cpu(source, destination):
    assert_cast_matches_cpu(every_bit_pattern(source), destination)


@pytest.mark.filterwarnings("ignore:Casting complex values to real", "ignore:ComplexHalf support is experimental")
@pytest.mark.parametrize("destination", ALL_DTYPES, ids=str)
@pytest.mark.parametrize("source", WIDE_DTYPES, ids=str)
def test_wide_sources_convert_like_cpu(source, destination):
    assert_cast_matches_cpu(wide_sample(source), destination)


def test_half_nan_quieting_like_cpu():
    """float16 signalling NaNs are quieted on the way to float32 (and bfloat16's on the way to float16),
    keeping their payload; float32 -> float16 quiets and keeps the payload's top bits."""
    half = bit_patterns(torch.float16, [0x7C01, 0x7D00, 0xFC01] * 4)
    assert half.to("tpu").float().cpu().view(torch.int32)[:3].tolist() == [0x7FC02000, 0x7FE00000, 0xFFC02000 - 2**32]
    brain = bit_patterns(torch.bfloat16, [0x7F81, 0x7FA0, 0xFF81])
    assert brain.to("tpu").half().cpu().view(torch.int16).tolist() == [0x7E08, 0x7F00, 0xFE08 - 2**16]
    single = bit_patterns(torch.float32, [0x7F800001, 0x7FA00000, 0x7FD12345])
    assert single.to("tpu").half().cpu().view(torch.int16).tolist() == [0x7E00, 0x7F00, 0x7E89]


# Layouts decide which elements CPU's copy converts in SIMD vectors and which in its scalar loop;
# for a few pairs the two give different bits (NaN payloads, out-of-range floats to uint32).
LAYOUTS = {
    "contiguous_5": lambda x: x[:5],
    "contiguous_37": lambda x: x[:37],
    "strided": lambda x: x[:80:2],
    "rows": lambda x: x[:96].reshape(6, 16)[:, :11],
    "matrix": lambda x: x[:99].reshape(9, 11),
    "transposed": lambda x: x[:99].reshape(11, 9).t(),
    "expanded": lambda x: x[:1].expand(37),
    "zero_d": lambda x: x[3],
    "threads": lambda x: x,  # past at::parallel_for's grain: each thread's chunk has its own tail
    "threads_matrix": lambda x: x[:70_004].reshape(-1, 11),
}


@functools.cache
def _special_mix(dtype, n=70_007):
    """NaNs (signalling ones too), out-of-range and ordinary values at random places."""
    g = torch.Generator().manual_seed(n)
    values = torch.randn(n, generator=g, dtype=torch.float64) * 1e10
    kind = torch.randint(0, 4, (n,), generator=g)
    values[kind == 0] = float("nan")
    values[kind == 1] = -5e9
    x = torch.complex(values, values).to(dtype) if dtype.is_complex else values.to(dtype)
    if dtype in (torch.float16, torch.float32, torch.float64):
        signalling = {torch.float16: 0x7C01, torch.float32: 0x7F800101, torch.float64: 0x7FF0000000000101}[dtype]
        bits = x.view(_BITS[dtype.itemsize]).clone()
        bits[kind == 2] = signalling
        x = bits.view(dtype)
    return x


@pytest.mark.filterwarnings("ignore:Casting complex values to real")
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("source, destination", [
    (torch.float16, torch.float32), (torch.float64, torch.bfloat16), (torch.float32, torch.bfloat16),
    (torch.float32, torch.uint32), (torch.float64, torch.uint32), (torch.bfloat16, torch.uint32),
    (torch.complex64, torch.uint32), (torch.complex128, torch.uint32), (torch.float16, torch.uint32),
], ids=str)
def test_conversions_follow_cpus_simd_loops(source, destination, layout):
    x = _special_mix(source)
    make = LAYOUTS[layout]
    expected, tpu = make(x), make(x.to("tpu"))
    assert_bits_equal(tpu.to(destination).cpu(), expected.to(destination))
    out, expected_out = (torch.empty(expected.shape, dtype=destination, device=d) for d in ("tpu", "cpu"))
    assert_bits_equal(out.copy_(tpu).cpu(), expected_out.copy_(expected))
    if expected.dim() == 2:  # into a destination laid out the other way round
        out, expected_out = (torch.empty(expected.shape[::-1], dtype=destination, device=d).t() for d in ("tpu", "cpu"))
        assert_bits_equal(out.copy_(tpu).cpu(), expected_out.copy_(expected))


@pytest.fixture
def deterministic_algorithms():
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(False)
    torch.utils.deterministic.fill_uninitialized_memory = True


def _bits(tensor):
    """The bytes of a tensor, so that NaNs compare equal when their bit patterns do."""
    return tensor.cpu().contiguous().view(-1).view(torch.uint8).tolist()


EMPTY_FACTORIES = {
    "empty": lambda dtype, device: torch.empty(2, 3, dtype=dtype, device=device),
    "empty_strided": lambda dtype, device: torch.empty_strided((2, 3), (1, 2), dtype=dtype, device=device),
    "empty_like": lambda dtype, device: torch.empty_like(torch.zeros(3, dtype=dtype, device=device)),
    "new_empty": lambda dtype, device: torch.zeros(1, dtype=dtype, device=device).new_empty(4),
    "channels_last": lambda dtype, device: torch.empty(1, 2, 2, 2, dtype=dtype, device=device,
                                                       memory_format=torch.channels_last),
}


@pytest.mark.parametrize("dtype", DTYPES + [torch.uint64, torch.complex128])
@pytest.mark.parametrize("factory", EMPTY_FACTORIES)
def test_deterministic_mode_fills_empty_tensors_as_cpu_does(deterministic_algorithms, factory, dtype):
    """use_deterministic_algorithms(True) fills new memory: NaN, or the largest value of the type."""
    make = EMPTY_FACTORIES[factory]
    assert _bits(make(dtype, "tpu")) == _bits(make(dtype, "cpu"))


def test_deterministic_mode_fills_what_resize_adds(deterministic_algorithms):
    on_cpu, on_tpu = torch.ones(2).resize_(5), torch.ones(2, device="tpu").resize_(5)
    assert _bits(on_tpu) == _bits(on_cpu)  # [1, 1, nan, nan, nan]
    shrunk = torch.ones(3, device="tpu").resize_(1).resize_(3)  # within the storage: nothing is new
    assert shrunk.tolist() == [1, 1, 1]


def test_fill_uninitialized_memory_off_leaves_memory_as_it_is(deterministic_algorithms):
    torch.utils.deterministic.fill_uninitialized_memory = False
    reused = torch.full((256,), 7.0, device="tpu")
    del reused
    assert not torch.empty(256, device="tpu").isnan().any()


@pytest.mark.parametrize("make", [lambda d: torch.empty(3, dtype=torch.chalf, device=d),
                                  lambda d: torch.zeros(3, dtype=torch.chalf, device=d),
                                  lambda d: torch.zeros(3, dtype=torch.chalf).to(d) + 1],
                         ids=["empty", "zeros", "a_result"])
def test_complex_half_tensors_warn_as_experimental_as_on_cpu(make):
    """ATen warns (once per process; every time under set_warn_always) for each new ComplexHalf tensor."""
    before = torch.is_warn_always_enabled()
    torch.set_warn_always(True)
    try:
        for device in ("cpu", "tpu"):
            with pytest.warns(UserWarning, match="^ComplexHalf support is experimental"):
                make(device)
    finally:
        torch.set_warn_always(before)


def _lazy_clone_story(device):
    """A lazy clone of a strided view, then writes on both sides: what each side holds, and the marks."""
    base = torch.arange(12.0, device=device)
    source = base[2:10:2]
    clone = source._lazy_clone()
    marks = (torch._C._is_cow_tensor(source), torch._C._is_cow_tensor(clone))
    base.view(3, 4)[0] += 100  # writes the source through another view of its storage
    clone[1] = -1
    return marks, source.tolist(), clone.tolist(), clone.stride(), clone.storage_offset()


def test_a_lazy_clone_is_a_working_copy_never_stale_with_cpus_marks():
    assert _lazy_clone_story("tpu") == _lazy_clone_story("cpu")


def test_a_lazy_clone_owns_exactly_its_storages_bytes_and_frees_them():
    source = torch.arange(10.0, device="tpu")[2:8]
    before = torch.tpu.memory_allocated()
    same_storage = torch.empty(10, device="tpu")
    storage_cost = torch.tpu.memory_allocated() - before
    del same_storage
    clone = source._lazy_clone()
    assert torch.tpu.memory_allocated() - before == storage_cost  # the whole storage, as CPU's copy would be
    del clone
    assert torch.tpu.memory_allocated() == before
    parameter = torch.ones(3, device="tpu", requires_grad=True)
    (parameter._lazy_clone() * 2).sum().backward()
    assert parameter.grad.tolist() == [2.0, 2.0, 2.0]
