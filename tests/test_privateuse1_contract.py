"""The PrivateUse1 contract PyTorch's reference backend (OpenReg) is tested for, as it applies to one chip.

Ported from OpenReg's Python tests (test_streams, test_event, test_storage, test_device, test_misc,
test_autocast in PyTorch's test/cpp_extensions/open_registration_extension/torch_openreg/tests):
where OpenReg has two devices, tpu has one per process, so index 1 must be refused with the
one-chip error. Streams and events follow the simulated clock, so times are checked against the
roofline formula (traffic / HBM bandwidth + launch overhead).
"""

import warnings

import pytest
import torch

from torch_tpu import _C
from torch_tpu._C.clock import LAUNCH_OVERHEAD_SECONDS

ONE_CHIP = "tpu:1 is not available in this process"
clock = _C.current_chip().clock


def copy_seconds(nbytes_read, nbytes_written):
    """The simulated time of one memory-bound kernel, by the roofline formula."""
    return (nbytes_read + nbytes_written) / torch.tpu.get_device_properties().hbm_bandwidth + LAUNCH_OVERHEAD_SECONDS


@pytest.fixture(autouse=True)
def default_stream_after():
    yield
    torch.tpu.set_stream(torch.tpu.default_stream())


# --- the backend module and generated methods (OpenReg test_misc) ----------------------------

def test_backend_name_and_aliases():
    assert torch._C._get_privateuse1_backend_name() == "tpu"
    torch.utils.rename_privateuse1_backend("tpu")  # the same name again is allowed
    with pytest.raises(RuntimeError, match="has already been set"):
        torch.utils.rename_privateuse1_backend("dev")
    from torch._C._autograd import DeviceType
    from torch._C._profiler import ProfilerActivity

    assert ProfilerActivity.TPU == ProfilerActivity.PrivateUse1
    assert DeviceType.TPU == DeviceType.PrivateUse1
    assert torch.utils.backend_registration._get_custom_mod_func("device_count")() == 1
    with pytest.raises(RuntimeError, match="Try to call torch.tpu"):
        torch.utils.backend_registration._get_custom_mod_func("no_such_function")


def test_generated_methods_cover_tensors_modules_packed_sequences_and_storages():
    for owner, names in [(torch.Tensor, ("is_tpu", "tpu")), (torch.nn.Module, ("tpu",)),
                         (torch.nn.utils.rnn.PackedSequence, ("is_tpu", "tpu")),
                         (torch.UntypedStorage, ("is_tpu", "tpu")), (torch.TypedStorage, ("is_tpu", "tpu"))]:
        for name in names:
            assert hasattr(owner, name), (owner, name)
    sequence = torch.nn.utils.rnn.PackedSequence(torch.rand(5, 3), torch.tensor([1, 1, 1, 1, 1]))
    assert not sequence.is_tpu and sequence.tpu().is_tpu and sequence.tpu().data.is_tpu
    x = torch.empty(4, 4)
    assert not x.is_tpu and x.tpu().is_tpu and x.tpu(0).is_tpu and x.tpu(torch.device("tpu:0")).is_tpu
    with pytest.raises(RuntimeError, match=ONE_CHIP):
        x.tpu(1)


@pytest.mark.parametrize("dtype, name", [
    (torch.bool, "BoolTensor"), (torch.float64, "DoubleTensor"), (torch.float32, "FloatTensor"),
    (torch.float16, "HalfTensor"), (torch.int32, "IntTensor"), (torch.int64, "LongTensor"),
    (torch.int8, "CharTensor"), (torch.int16, "ShortTensor"), (torch.uint8, "ByteTensor"),
])
def test_tensor_type_strings(dtype, name):
    assert torch.empty(4, 4, dtype=dtype, device="tpu").type() == f"torch.tpu.{name}"


# --- device index: one chip per process (OpenReg test_device) --------------------------------

def test_device_index_zero_works_and_others_are_refused():
    torch.accelerator.set_device_index(0)
    torch.tpu.set_device(0)
    assert torch.accelerator.current_device_index() == 0 == torch.tpu.current_device()
    with torch.accelerator.device_index(0):
        assert torch.accelerator.current_device_index() == 0
    with torch.accelerator.device_index(None):
        assert torch.accelerator.current_device_index() == 0
    for refuse in (lambda: torch.accelerator.set_device_index(1), lambda: torch.tpu.set_device(1),
                   lambda: torch.accelerator.device_index(1).__enter__(), lambda: torch.tpu.device(1),
                   lambda: torch.accelerator.set_device_index("tpu:1")):
        with pytest.raises(RuntimeError, match=ONE_CHIP):
            refuse()
    with pytest.warns(FutureWarning), pytest.raises(RuntimeError, match=ONE_CHIP):
        torch.accelerator.set_device_idx(1)
    assert torch.accelerator.current_device_index() == 0
    assert torch.randn(2, device="tpu").device.index == 0


def test_device_capability_and_initialization():
    torch.tpu.init()
    assert torch.tpu.is_initialized() and not torch.tpu._is_in_bad_fork()
    supported = torch.accelerator.get_device_capability("tpu:0")["supported_dtypes"]
    assert {torch.float32, torch.bfloat16, torch.float8_e4m3fn, torch.int64, torch.bool} <= supported
    with pytest.raises(RuntimeError, match=ONE_CHIP):
        torch.accelerator.get_device_capability("tpu:1")


# --- streams (OpenReg test_streams) -----------------------------------------------------------

def test_streams_have_distinct_ids_and_are_torch_streams():
    streams = [torch.tpu.Stream() for _ in range(3)]
    ids = {s.stream_id for s in streams} | {torch.tpu.default_stream().stream_id}
    assert len(ids) == 4 and all(isinstance(s, torch.Stream) for s in streams)
    s = streams[0]
    assert s.device == torch.device("tpu:0") and s.device_index == 0 and s.device_type == torch.tpu.default_stream().device_type
    same = torch.Stream(stream_id=s.stream_id, device_type=s.device_type, device_index=s.device_index)
    assert same == s and same != streams[1]
    assert f"torch.Stream device_type=tpu, device_index=0, stream_id={s.stream_id}" in repr(s)
    assert torch.tpu.Stream(device="tpu:0").device_index == 0 and torch.tpu.Stream(0).device_index == 0
    with pytest.raises(RuntimeError, match=ONE_CHIP):
        torch.tpu.Stream(device="tpu:1")


def test_stream_context_and_accelerator_current_stream():
    assert torch.accelerator.current_stream() == torch.tpu.current_stream() == torch.tpu.default_stream()
    assert isinstance(torch.accelerator.current_stream(), torch.tpu.Stream)
    outer, inner = torch.tpu.Stream(), torch.tpu.Stream()
    with outer as entered:
        assert entered is outer and torch.accelerator.current_stream() == outer
        with inner:
            assert torch.tpu.current_stream() == inner and clock.current_stream == inner.stream_id
        assert torch.tpu.current_stream() == outer
    assert torch.accelerator.current_stream() == torch.tpu.default_stream() and clock.current_stream == 0


def test_accelerator_set_stream_routes_kernels_to_the_stream():
    side = torch.tpu.Stream()
    x = torch.ones(1 << 16, device="tpu")
    torch.tpu.synchronize()
    before = clock.now(side.stream_id)
    torch.accelerator.set_stream(side)
    assert torch.accelerator.current_stream().stream_id == side.stream_id
    x * 2
    assert clock.now(side.stream_id) == pytest.approx(before + copy_seconds(x.nbytes, x.nbytes), rel=1e-12)
    torch.accelerator.set_stream(torch.tpu.default_stream())
    assert torch.accelerator.current_stream().stream_id == 0


def test_plain_torch_streams_are_handles_of_the_default_stream():
    """C++ builds torch.Stream(device="tpu") through the Python device guard, which hands out stream 0."""
    generic = torch.Stream(device="tpu")
    assert generic.stream_id == 0 and generic.query()
    torch.tpu.set_stream(torch.tpu.Stream())
    torch.accelerator.set_stream(generic)
    assert torch.tpu.current_stream() == torch.tpu.default_stream()
    with pytest.raises(TypeError, match="expected a tpu stream"):
        torch.tpu.set_stream(torch.Stream(device="cpu"))


def test_plain_torch_events_carry_no_time():
    """C++ records a torch.Event on tpu through the Python device guard, which does nothing (docs/architecture.md)."""
    start, end = torch.Event(device="tpu", enable_timing=True), torch.Event(device="tpu", enable_timing=True)
    start.record(torch.Stream(device="tpu"))
    torch.ones(4, device="tpu") + 1
    end.record()
    assert start.event_id == 0 and start.query() and end.query()
    with pytest.raises(RuntimeError, match="Backend doesn't support elapsedTime"):
        start.elapsed_time(end)
    waiting = torch.tpu.Stream()
    before = clock.now(waiting.stream_id)
    waiting.wait_event(start)  # nothing to wait for
    assert clock.now(waiting.stream_id) == before


def test_stream_query_synchronize_wait_stream_and_wait_event():
    side = torch.tpu.Stream()
    x = torch.ones(1 << 18, device="tpu")
    torch.tpu.synchronize()
    with torch.tpu.stream(side):
        x + 1
    assert side.query() and torch.tpu.current_stream().query()
    assert clock.now(side.stream_id) > clock.now(0)
    torch.tpu.current_stream().wait_stream(side)
    assert clock.now(0) == clock.now(side.stream_id)
    with torch.tpu.stream(side):
        x + 1
    event = side.record_event()
    assert isinstance(event, torch.tpu.Event) and event.recorded_at == clock.now(side.stream_id)
    for waiting in (torch.tpu.Stream(), torch.tpu.Stream()):  # several streams may wait on one event
        waiting.wait_event(event)
        assert clock.now(waiting.stream_id) == event.recorded_at
    side.synchronize()
    assert clock.host_seconds == clock.now(side.stream_id)


# --- events (OpenReg test_event) --------------------------------------------------------------

def test_event_ids_and_device_before_and_after_recording():
    event = torch.tpu.Event()
    assert isinstance(event, torch.Event) and event.query()
    assert event.event_id == 0 and event.device == torch.device("tpu") and event.device.index is None
    event.record()
    first_id = event.event_id
    assert first_id != 0 and event.device == torch.device("tpu:0")
    event.record()  # an event can be recorded again: it keeps its id
    other = torch.tpu.current_stream().record_event()
    assert event.event_id == first_id and other.event_id not in (0, first_id)
    assert f"event_id={first_id}" in repr(event)


def test_elapsed_time_is_simulated_milliseconds():
    x = torch.ones(1 << 20, device="tpu")
    start, end = torch.tpu.Event(enable_timing=True), torch.tpu.Event(enable_timing=True)
    start.record()
    y = x * 2
    end.record()
    end.synchronize()
    assert start.query() and end.query()
    assert start.elapsed_time(end) == pytest.approx(copy_seconds(x.nbytes, y.nbytes) * 1e3, rel=1e-12)
    assert end.elapsed_time(start) == pytest.approx(-start.elapsed_time(end))


def test_elapsed_time_needs_timing_and_recording():
    untimed, timed = torch.tpu.Event(), torch.tpu.Event(enable_timing=True)
    untimed.record()
    timed.record()
    with pytest.raises(RuntimeError, match="Both events must be created with argument 'enable_timing=True'"):
        untimed.elapsed_time(timed)
    with pytest.raises(RuntimeError, match="Both events must be recorded"):
        timed.elapsed_time(torch.tpu.Event(enable_timing=True))
    with pytest.raises(TypeError, match="carries no simulated time"):
        timed.elapsed_time(torch.Event(device="tpu", enable_timing=True))


@pytest.mark.parametrize("blocking", [False, True])
def test_blocking_and_non_blocking_events_make_the_host_wait(blocking):
    side = torch.tpu.Stream()
    event = torch.tpu.Event(blocking=blocking)
    assert event.blocking == blocking and event.query()  # nothing recorded: complete
    with torch.tpu.stream(side):
        torch.ones(1 << 18, device="tpu") + 1
    event.record(side)
    assert event.query()  # emulated kernels have finished on the host
    event.synchronize()
    assert clock.host_seconds >= event.recorded_at == clock.now(side.stream_id)


def test_event_wait_makes_a_stream_wait():
    side, waiting = torch.tpu.Stream(), torch.tpu.Stream()
    with torch.tpu.stream(side):
        torch.ones(1 << 18, device="tpu") * 3
    event = torch.tpu.Event()
    event.record(side)
    event.wait(waiting)
    assert clock.now(waiting.stream_id) == event.recorded_at
    with pytest.raises(ValueError, match="does not match recording stream's device type cpu"):
        event.record(torch.Stream(device="cpu"))


def test_get_device_module_streams_and_events():
    """Device-generic code (FSDP2, checkpointing) reaches streams through torch.get_device_module."""
    module = torch.get_device_module("tpu")
    assert module is torch.tpu
    stream = module.Stream()
    with module.stream(stream):
        assert module.current_stream() == stream
    assert isinstance(module.Event(), torch.Event)


# --- storages (OpenReg test_storage, test_misc) -----------------------------------------------

def test_storage_device_predicates_and_types():
    x = torch.arange(4.0, device="tpu")
    untyped = x.untyped_storage()
    assert untyped.is_tpu and untyped.device == torch.device("tpu:0") and untyped.element_size() == 1
    assert untyped.type() == "torch.storage.UntypedStorage" and untyped.nbytes() == 16 == untyped.size()
    assert not torch.arange(4.0).untyped_storage().is_tpu
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # TypedStorage is deprecated
        typed = x.storage()
        assert typed.is_tpu and typed.device == torch.device("tpu:0") and typed.dtype == torch.float32
        assert typed.type() == "torch.tpu.FloatStorage"  # the device module's legacy class, as CUDA's storages name it
        assert typed.element_size() == 4 and typed.size() == 4 == x.numel()
        assert torch.arange(4, dtype=torch.int16).storage().tpu().element_size() == 2


def test_storage_to_tpu_copies_bytes():
    cpu = torch.tensor([1.5, -2.0, 3.25])
    moved = cpu.untyped_storage().tpu()
    assert moved.is_tpu and moved.nbytes() == 12
    assert moved.tolist() == cpu.untyped_storage().tolist()
    assert moved.tpu() is moved  # already there: no copy, as for CUDA
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        typed = cpu.storage().tpu()
        assert typed.is_tpu and typed.dtype == torch.float32 and typed.tolist() == [1.5, -2.0, 3.25]
        assert typed.cpu().tolist() == [1.5, -2.0, 3.25]
    with pytest.raises(RuntimeError, match=ONE_CHIP):
        cpu.untyped_storage().tpu(1)


def test_untyped_storage_on_another_chip_is_refused():
    with pytest.raises(RuntimeError, match=ONE_CHIP):
        torch.UntypedStorage(4, device="tpu:1")
    with pytest.raises(RuntimeError, match=ONE_CHIP):
        torch.UntypedStorage(4, device=torch.device("tpu", 1))
    assert torch.UntypedStorage(4, device="tpu:0").device == torch.device("tpu:0")


def test_storage_copies_in_every_direction_are_byte_exact():
    source = torch.arange(-8, 8, dtype=torch.int8)
    tpu = torch.UntypedStorage(16, device="tpu")
    tpu.copy_(source.untyped_storage())
    assert tpu.tolist() == source.untyped_storage().tolist()
    other = torch.UntypedStorage(16, device="tpu").copy_(tpu)
    back = torch.UntypedStorage(16).copy_(other)
    assert back.tolist() == source.untyped_storage().tolist()
    assert other.clone().tolist() == back.tolist() and other.clone().is_tpu
    assert other.cpu().tolist() == back.tolist()
    with pytest.raises(RuntimeError, match="size mismatch in storage copy_: 8 vs 16 bytes"):
        torch.UntypedStorage(8, device="tpu").copy_(tpu)


def test_serialization_location_tags():
    assert torch.serialization.location_tag(torch.UntypedStorage(4, device="tpu")) == "tpu:0"
    restored = torch.serialization.default_restore_location(torch.empty(4, 4).untyped_storage(), "tpu:0")
    assert restored.is_tpu
    with pytest.raises(RuntimeError, match="device_count"):
        torch.serialization.default_restore_location(torch.empty(4, 4).untyped_storage(), "tpu:1")


def test_storage_resize_keeps_bytes_and_hbm_accounting_exact(memory_baseline):
    storage = torch.UntypedStorage(4, device="tpu")
    storage.copy_(torch.tensor([1, 2, 3, 4], dtype=torch.uint8).untyped_storage())
    assert memory_baseline.delta() == 4
    assert storage.resize_(10) is storage
    assert storage.nbytes() == storage.size() == 10 and storage.tolist()[:4] == [1, 2, 3, 4]
    assert memory_baseline.delta() == 10
    storage.resize_(2)
    assert storage.nbytes() == 2 and storage.tolist() == [1, 2] and memory_baseline.delta() == 2
    with pytest.raises(RuntimeError, match="must not be negative"):
        storage.resize_(-1)
    del storage


def test_fsdp_style_free_and_reallocate_of_a_parameter_storage(memory_baseline):
    """FSDP2 frees an unsharded parameter with storage.resize_(0) and brings it back with resize_(n)."""
    weight = torch.arange(8.0, device="tpu")
    storage = weight.untyped_storage()
    storage.resize_(0)
    assert storage.nbytes() == 0 and memory_baseline.delta() == 0
    storage.resize_(32)
    weight.copy_(torch.arange(8.0) * 2)
    assert weight.tolist() == [2.0 * i for i in range(8)] and memory_baseline.delta() == 32
    del weight, storage


# --- autocast (OpenReg test_autocast) ----------------------------------------------------------

def test_autocast_default_dtype_is_bfloat16():
    assert torch.get_autocast_dtype("tpu") == torch.bfloat16
    assert torch.tpu.get_amp_supported_dtype() == [torch.bfloat16, torch.float16]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_runs_matmuls_in_a_supported_dtype(dtype):
    x = torch.randn(2, 3, device="tpu")
    with torch.autocast("tpu", dtype=dtype):
        assert torch.is_autocast_enabled("tpu")
        assert torch.mm(x, x.t()).dtype == dtype
        assert torch.dot(x[0].to(dtype), x[1].to(dtype)).dtype == dtype  # promote: the widest of the inputs ...
        assert torch.dot(x[0], x[1].to(dtype)).dtype == torch.float32  # ... and the autocast dtype
    assert torch.get_autocast_dtype("tpu") == torch.bfloat16


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.int32, torch.float8_e4m3fn])
def test_autocast_warns_and_disables_itself_for_an_unsupported_dtype(dtype):
    x = torch.randn(2, 3, device="tpu")
    with pytest.warns(UserWarning, match="In tpu autocast, but the target dtype is not supported. Disabling autocast."):
        context = torch.autocast(device_type="tpu", dtype=dtype)
    with context:
        assert not torch.is_autocast_enabled("tpu")
        assert torch.mm(x, x.t()).dtype == torch.float32
        assert torch.exp(x.half()).dtype == torch.float16  # the float32 policy is off too
    assert not torch.is_autocast_enabled("tpu") and torch.get_autocast_dtype("tpu") == torch.bfloat16
