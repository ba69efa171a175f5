"""The emulated chip (csrc_py, installed as torch_tpu._C), tested without torch.

The chip layer must never import torch; it is loaded here straight from its
source folder so these tests do not depend on the torch integration.
"""

import importlib.util
import pathlib
import sys
from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest

from conftest import run_python

CHIP_SOURCE = pathlib.Path(__file__).resolve().parents[1] / "csrc_py"


def _load_chip_package():
    spec = importlib.util.spec_from_file_location(
        "tpu_chip_under_test", CHIP_SOURCE / "__init__.py", submodule_search_locations=[str(CHIP_SOURCE)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


chip = _load_chip_package()
GiB = 1 << 30


def test_chip_layer_never_imports_torch():
    out = run_python(f"""
        import sys
        sys.path.insert(0, {str(CHIP_SOURCE.parent)!r})
        import csrc_py
        csrc_py.current_chip().hbm.allocate(10)
        print('torch' in sys.modules)
    """).stdout.split()
    assert out == ["False"]


@pytest.mark.parametrize(
    "name, hbm, bf16_tflops, has_fp8, has_int8",
    [("ironwood", 192 * GiB, 2307, True, False), ("v6e", 32 * GiB, 918, True, True),
     ("v5p", 95 * GiB, 459, True, True), ("v5e", 16 * GiB, 197, False, True)],
)
def test_chip_table(name, hbm, bf16_tflops, has_fp8, has_int8):
    spec = chip.CHIPS[name]
    assert spec.hbm_bytes == hbm
    assert spec.peak_flops["bfloat16"] == bf16_tflops * 1e12
    assert spec.supports_mxu_dtype("float8_e4m3fn") == has_fp8
    assert spec.supports_mxu_dtype("int8") == has_int8
    assert spec.ridge_point() == pytest.approx(spec.peak_flops["bfloat16"] / spec.hbm_bandwidth)


def test_ironwood_is_the_default(monkeypatch):
    monkeypatch.delenv("TORCH_TPU_CHIP", raising=False)
    assert chip.chips.chip_from_environment().name == "ironwood"
    assert chip.chips.chip_from_environment().peak_flops["float8_e4m3fn"] == 4614e12


def test_chip_from_environment(monkeypatch):
    monkeypatch.setenv("TORCH_TPU_CHIP", " V6E ")
    assert chip.chips.chip_from_environment().name == "v6e"
    monkeypatch.setenv("TORCH_TPU_CHIP", "tpu9")
    with pytest.raises(ValueError, match="TORCH_TPU_CHIP='tpu9' is not a known chip"):
        chip.chips.chip_from_environment()


def test_hbm_capacity_from_environment(monkeypatch):
    spec = chip.CHIPS["v5e"]
    monkeypatch.delenv("TORCH_TPU_HBM_BYTES", raising=False)
    assert chip.chips.hbm_capacity_from_environment(spec) == 16 * GiB
    monkeypatch.setenv("TORCH_TPU_HBM_BYTES", "1e6")
    assert chip.chips.hbm_capacity_from_environment(spec) == 1_000_000
    monkeypatch.setenv("TORCH_TPU_HBM_BYTES", "-1")
    with pytest.raises(ValueError, match="must not be negative"):
        chip.chips.hbm_capacity_from_environment(spec)


def test_memory_fraction_scales_the_physical_capacity():
    device = chip.Chip(chip.CHIPS["v5e"], 1000)
    device.set_memory_fraction(0.25)
    assert device.hbm.capacity == 250
    device.set_memory_fraction(1.0)
    assert device.hbm.capacity == 1000
    with pytest.raises(ValueError, match="within"):
        device.set_memory_fraction(1.5)


def _replayed_pool_figures(events, small_size):
    """Each pool's (current, peak, allocated, freed) bytes and counts, by replaying ``events`` one by one: the
    oracle for the pools HBM derives without counting the small one."""
    figures = {}
    for pool in ("all", "small_pool", "large_pool"):
        for unit in ("bytes", "count"):
            figures[pool, unit] = [0, 0, 0, 0]
    for kind, nbytes in events:
        pool = "large_pool" if nbytes > small_size else "small_pool"
        for name in ("all", pool):
            for unit, amount in (("bytes", nbytes), ("count", 1)):
                f = figures[name, unit]
                if kind == "reset_peak":
                    f[1] = f[0]
                elif kind == "alloc":
                    f[0] += amount
                    f[2] += amount
                    f[1] = max(f[1], f[0])
                else:
                    f[0] -= amount
                    f[3] += amount
    return {key: tuple(value) for key, value in figures.items()}


def test_hbm_pools_match_a_replay_of_every_event():
    rng = np.random.default_rng(0)
    hbm = chip.hbm.HBM(1 << 40, "test")
    hbm.set_bufferless(True)
    small = chip.hbm.SMALL_SIZE
    live, events = [], []
    for step in range(600):
        if step == 300:
            hbm.reset_peak_stats()
            events += [("reset_peak", 0), ("reset_peak", small + 1)]  # both pools' peaks
        if live and rng.random() < 0.45:
            buffer = live.pop(rng.integers(len(live)))
            events.append(("free", buffer.nbytes))
            del buffer
        else:
            nbytes = int(rng.choice([rng.integers(1, small + 1), rng.integers(small + 1, 4 * small), small]))
            live.append(hbm.allocate(nbytes))
            events.append(("alloc", nbytes))
    expected = _replayed_pool_figures(events, small)
    for unit, classes in (("bytes", hbm.bytes_by_pool), ("count", hbm.allocations_by_pool)):
        got = classes.as_dict()
        for pool in ("all", "small_pool", "large_pool"):
            assert tuple(got[pool].values()) == expected[pool, unit], (pool, unit)


def test_hbm_accounting_is_exact():
    hbm = chip.hbm.HBM(10_000, "test")
    a, b = hbm.allocate(7), hbm.allocate(1001)
    assert (a.nbytes, b.nbytes, a.array.nbytes) == (7, 1001, 7)
    assert hbm.allocated_bytes.as_dict() == {"current": 1008, "peak": 1008, "allocated": 1008, "freed": 0}
    del a
    assert hbm.allocated_bytes.as_dict() == {"current": 1001, "peak": 1008, "allocated": 1008, "freed": 7}
    assert hbm.allocations.as_dict() == {"current": 1, "peak": 2, "allocated": 2, "freed": 1}
    hbm.reset_peak_stats()
    assert hbm.allocated_bytes.peak == 1001
    hbm.reset_accumulated_stats()
    assert (hbm.allocated_bytes.allocated, hbm.allocated_bytes.freed, hbm.allocated_bytes.current) == (0, 0, 1001)
    del b
    assert hbm.allocated_bytes.current == 0


def test_zero_byte_allocations_are_free():
    hbm = chip.hbm.HBM(0, "test")
    buffer = hbm.allocate(0)
    assert buffer.nbytes == 0 and hbm.allocations.current == 0


def test_hbm_out_of_memory_leaves_state_unchanged():
    hbm = chip.hbm.HBM(100, "tiny")
    kept = hbm.allocate(60)
    with pytest.raises(chip.HBMOutOfMemory) as caught:
        hbm.allocate(41)
    oom = caught.value
    assert isinstance(oom, MemoryError)
    assert (oom.requested, oom.allocated, oom.capacity) == (41, 60, 100)
    assert "41 bytes" in str(oom) and "60 bytes" in str(oom) and "100 bytes" in str(oom) and "tiny" in str(oom)
    assert hbm.num_ooms == 1 and hbm.allocated_bytes.current == 60
    assert hbm.allocate(40).nbytes == 40  # exactly full is fine
    assert kept.nbytes == 60


def test_host_blocks_are_aligned_and_reused():
    hbm = chip.hbm.HBM(1 << 30, "test")
    first = hbm.allocate(1000)
    address = first.array.ctypes.data
    assert address % chip.hbm.HOST_ALIGNMENT == 0
    del first
    assert hbm.pool.cached_bytes == 1000 and hbm.reserved_bytes == 1000
    second = hbm.allocate(1000)
    assert second.array.ctypes.data == address and hbm.pool.cached_bytes == 0
    del second
    hbm.empty_cache()
    assert hbm.reserved_bytes == 0


def test_events_record_allocations_and_ooms():
    hbm = chip.hbm.HBM(10, "test")
    buffer = hbm.allocate(4)
    with pytest.raises(chip.HBMOutOfMemory):
        hbm.allocate(11)
    del buffer
    kinds = [e["kind"] for e in hbm.events.events()]
    assert kinds == ["alloc", "oom", "free"]
    assert hbm.events.events("free")[0]["nbytes"] == 4


def test_event_log_is_bounded():
    log = chip.trace.EventLog(capacity=3)
    for i in range(5):
        log.record("alloc", i, 8, 8 * i)
    assert [e["id"] for e in log.events()] == [2, 3, 4]


def test_format_bytes():
    fmt = chip.hbm.format_bytes
    assert [fmt(1023), fmt(1024), fmt(3 << 20), fmt(192 * GiB)] == ["1023 B", "1.00 KiB", "3.00 MiB", "192.00 GiB"]


def test_counter_rng_is_reproducible_and_restorable():
    rng = chip.rng.CounterRNG(seed=1234)
    state = rng.get_state()
    first = [rng.next_stream().random(3) for _ in range(2)]
    assert not np.array_equal(first[0], first[1])
    rng.set_state(state)
    assert all(np.array_equal(a, rng.next_stream().random(3)) for a in first)
    with pytest.raises(ValueError):
        rng.set_state(np.zeros(3, np.uint8))


def test_numpy_dtypes_by_name():
    assert chip.dtypes.numpy_dtype("bfloat16") == np.dtype(ml_dtypes.bfloat16)
    with pytest.raises(TypeError):
        chip.dtypes.numpy_dtype("float4")


def _cast(values, source, destination, **kwargs):
    out = np.empty(len(values), chip.dtypes.numpy_dtype(destination))
    chip.dtypes.cast_into(out, np.array(values, dtype=source), destination, **kwargs)
    return out


def test_cast_saturates_e4m3fn_and_overflows_e5m2_to_inf():
    big = [1e6, -1e6, 449.0, np.inf]
    assert _cast(big, np.float32, "float8_e4m3fn").view(np.uint8).tolist() == [0x7E, 0xFE, 0x7E, 0x7E]
    assert _cast(big, np.float32, "float8_e5m2").view(np.uint8).tolist() == [0x7C, 0xFC, 0x5F, 0x7C]
    # integers reach float8 through float32 and saturate the same way
    assert _cast([1000, -1000], np.int64, "float8_e4m3fn").view(np.uint8).tolist() == [0x7E, 0xFE]


def test_cast_nan_bit_patterns():
    nans = [np.nan, -np.nan]
    assert _cast(nans, np.float32, "float8_e4m3fn").view(np.uint8).tolist() == [0x7F, 0xFF]
    assert _cast(nans, np.float32, "bfloat16").view(np.uint16).tolist() == [0xFFFF, 0xFFFF]
    assert _cast(nans, np.float16, "bfloat16").view(np.uint16).tolist() == [0x7FC0, 0x7FC0]
    assert _cast(nans, np.float32, "bfloat16", scalar_source=True).view(np.uint16).tolist() == [0x7FC0, 0x7FC0]


def test_cast_float8_nan_widens_with_c10_payloads():
    e4m3 = np.array([0x7F, 0xFF], np.uint8).view(ml_dtypes.float8_e4m3fn)
    e5m2 = np.array([0x7F, 0xFE], np.uint8).view(ml_dtypes.float8_e5m2)
    assert _cast(e4m3, e4m3.dtype, "float32").view(np.uint32).tolist() == [0x7FF00000, 0xFFF00000]
    assert _cast(e5m2, e5m2.dtype, "float32").view(np.uint32).tolist() == [0x7FE00000, 0xFFC00000]
    assert _cast(e4m3, e4m3.dtype, "int32").tolist() == [-(2**31)] * 2


def test_cast_float64_to_float16_rounds_through_float32():
    # 1 + 2^-11 + 2^-40 rounds up to 1 + 2^-10 directly, but ties to 1.0 through float32, as c10 does
    assert _cast([1 + 2**-11 + 2**-40], np.float64, "float16").tolist() == [1.0]


def test_cast_same_dtype_keeps_bits():
    codes = np.arange(256, dtype=np.uint8)
    e5m2 = codes.view(ml_dtypes.float8_e5m2)
    assert np.array_equal(_cast(e5m2, e5m2.dtype, "float8_e5m2").view(np.uint8), codes)


def test_cast_is_silent(recwarn):
    _cast([np.nan, np.inf, 1e30], np.float32, "int32")
    _cast([1 + 2j], np.complex64, "float32")
    assert not recwarn.list


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_multiply_add_rounds_once(dtype):
    """Against exact rational arithmetic, on near-cancelling sums where two roundings go wrong."""
    rng = np.random.default_rng(0)
    a = (rng.standard_normal(3000) * 10.0 ** rng.integers(-5, 5, 3000)).astype(dtype)
    b = rng.standard_normal(3000).astype(dtype)
    c = (-(a.astype(np.float64) * b) * (1 + rng.standard_normal(3000) * 1e-7)).astype(dtype)
    result = chip.vpu.fused_multiply_add(a, b, c)
    exact = [Fraction(float(x)) * Fraction(float(y)) + Fraction(float(z)) for x, y, z in zip(a, b, c)]
    # the nearest representable value (ties to even) among the three around a float64 first guess
    def nearest(value):
        guess = dtype(float(value))
        candidates = [np.nextafter(guess, dtype(-np.inf)), guess, np.nextafter(guess, dtype(np.inf))]
        return min(candidates, key=lambda x: (abs(Fraction(float(x)) - value), int(np.array(x).view(f"u{x.itemsize}")) & 1))
    assert [nearest(v) for v in exact] == list(result)
    assert (result != (a * b + c)).any()  # the case mattered: unfused arithmetic differs
