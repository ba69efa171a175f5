"""The tpu device itself: autoload, the chip table, torch.tpu's device functions."""

import os

import pytest
import torch

from conftest import run_python
from torch_tpu.tpu import legacy_types

GiB = 1 << 30


def test_import_torch_alone_gives_the_device():
    out = run_python("""
        import sys, torch
        print('torch_tpu' in sys.modules, torch._C._get_privateuse1_backend_name(), hasattr(torch, 'tpu'))
        print(torch.ones(2, device='tpu').device)
    """).stdout.split()
    assert out == ["True", "tpu", "True", "tpu:0"]


def test_autoload_can_be_turned_off():
    out = run_python("""
        import sys, torch
        print('torch_tpu' in sys.modules, torch._C._get_privateuse1_backend_name())
        import torch_tpu
        print(torch.ones(2, device='tpu').device)
    """, env={"TORCH_DEVICE_BACKEND_AUTOLOAD": "0"}).stdout.split()
    assert out == ["False", "privateuseone", "tpu:0"]


def test_a_tpu_checkpoint_loads_on_cpu_without_torch_tpu(tmp_path):
    path = tmp_path / "checkpoint.pt"
    weights = torch.nn.Linear(3, 2).to("tpu").state_dict()
    torch.save({"model": weights, "step": 7}, path)
    out = run_python(f"""
        import sys, torch
        loaded = torch.load({str(path)!r}, map_location="cpu")
        print('torch_tpu' in sys.modules, loaded["step"], loaded["model"]["weight"].device)
        print(*loaded["model"]["weight"].flatten().tolist())
    """, env={"TORCH_DEVICE_BACKEND_AUTOLOAD": "0"}).stdout.split("\n")
    assert out[0].split() == ["False", "7", "cpu"]
    assert [float(v) for v in out[1].split()] == weights["weight"].flatten().tolist()


def test_transposed_view_one_liner():
    code = "import torch; x = torch.arange(6.).to('tpu').view(2, 3).t(); print(x, x.stride(), x.storage_offset())"
    cpu = torch.arange(6.).view(2, 3).t()
    expected = f"{cpu!r} {cpu.stride()} {cpu.storage_offset()}\n".replace("5.]])", "5.]], device='tpu:0')")
    assert expected == "tensor([[0., 3.],\n        [1., 4.],\n        [2., 5.]], device='tpu:0') (1, 3) 0\n"
    assert run_python(code).stdout == expected


CHIP_QUERY = """
    import torch
    p = torch.tpu.get_device_properties()
    print(p.name, p.total_memory, torch.tpu.mem_get_info()[1], torch.tpu.get_device_name())
"""


def test_ironwood_is_the_default_chip():
    from torch_tpu import _C

    spec = _C.current_chip().spec
    if "TORCH_TPU_CHIP" not in os.environ:
        assert spec.name == "ironwood"
    assert torch.tpu.get_device_properties().name == spec.name
    assert spec.name in torch.tpu.get_device_name()


def test_chip_selection_and_hbm_override():
    words = run_python(CHIP_QUERY, env={"TORCH_TPU_CHIP": "V5E", "TORCH_TPU_HBM_BYTES": "123456"}).stdout.split()
    assert words[:3] == ["v5e", "123456", "123456"]
    assert "v5e" in " ".join(words[3:])


def test_unknown_chip_is_a_clear_error():
    process = run_python(CHIP_QUERY, env={"TORCH_TPU_CHIP": "v9z"}, check=False)
    assert process.returncode != 0
    assert "TORCH_TPU_CHIP='v9z' is not a known chip" in process.stderr
    assert "ironwood, v6e, v5p, v5e" in process.stderr


def test_device_module_basics():
    assert torch.tpu.is_available() and torch.tpu.device_count() == 1 and torch.tpu.current_device() == 0
    torch.tpu.set_device(0)
    torch.tpu.set_device("tpu:0")
    torch.tpu.synchronize()
    with torch.tpu.device(0):
        assert torch.ones(1, device="tpu").device == torch.device("tpu", 0)
    assert torch.tpu.is_bf16_supported()
    assert torch.bfloat16 in torch.tpu.get_amp_supported_dtype()


def test_device_module_has_torch_cuda_names_that_apply_to_one_chip():
    cuda_names = ["device_of", "StreamContext", "OutOfMemoryError", "memory_snapshot", "get_per_process_memory_fraction",
                  "set_per_process_memory_fraction", "memory_stats_as_nested_dict", "reset_max_memory_allocated",
                  "get_rng_state_all", "set_rng_state_all", "seed_all", "is_initialized", "init", "memory_cached",
                  "max_memory_cached", "reset_max_memory_cached"]
    assert [name for name in cuda_names if hasattr(torch.cuda, name) and not hasattr(torch.tpu, name)] == []
    assert torch.tpu.OutOfMemoryError is torch.cuda.OutOfMemoryError


@pytest.mark.usefixtures("paused_collector")
def test_deprecated_cached_names_warn_and_answer_as_on_cuda():
    x = torch.ones(1000, device="tpu")
    with pytest.warns(FutureWarning, match="memory_reserved"):
        assert torch.tpu.memory_cached() == torch.tpu.memory_reserved() >= x.nbytes
    with pytest.warns(FutureWarning, match="max_memory_reserved"):
        assert torch.tpu.max_memory_cached() == torch.tpu.max_memory_reserved()
    del x
    with pytest.warns(FutureWarning, match="reset_peak_memory_stats"):
        torch.tpu.reset_max_memory_cached()
    assert torch.tpu.max_memory_allocated() == torch.tpu.memory_allocated()


def test_device_of_selects_the_tensors_chip_and_ignores_other_devices():
    with torch.tpu.device_of(torch.ones(1, device="tpu")):
        assert torch.ones(1, device="tpu").device == torch.device("tpu", 0)
    with torch.tpu.device_of(torch.ones(1)):  # a CPU tensor selects nothing, as torch.cuda.device_of
        pass


def test_stream_context_is_a_class_as_on_cuda():
    side = torch.tpu.Stream()
    context = torch.tpu.stream(side)
    assert isinstance(context, torch.tpu.StreamContext) and context.stream is side
    with context as entered:
        assert entered is side and torch.tpu.current_stream() == side
        with torch.tpu.StreamContext(None):  # None keeps the current stream
            assert torch.tpu.current_stream() == side
    assert torch.tpu.current_stream() == torch.tpu.default_stream()


def test_device_properties_follow_the_chip_table():
    from torch_tpu import _C

    spec = _C.current_chip().spec
    props = torch.tpu.get_device_properties(0)
    assert (props.name, props.tensorcores, props.mxu_shape) == (spec.name, spec.tensorcores, spec.mxu_shape)
    assert props.multi_processor_count == spec.tensorcores
    assert props.total_memory == _C.current_chip().hbm.capacity
    assert props.name in repr(props)


def test_tensor_device_attributes():
    x = torch.ones(2, 3).to("tpu")
    assert x.device == torch.device("tpu:0") and x.device.type == "tpu"
    assert x.is_tpu and not torch.ones(1).is_tpu
    assert x.get_device() == 0
    assert torch.ones(2).tpu().device == torch.device("tpu:0")
    assert x.to("tpu") is x


def test_data_ptr_is_the_hbm_address_plus_the_offset():
    """Libraries detect aliasing by comparing pointers: distinct tensors must never compare equal."""
    x, y = torch.ones(4, device="tpu"), torch.ones(4, device="tpu")
    assert x.data_ptr() != 0 and x.data_ptr() != y.data_ptr()
    assert x.data_ptr() == x.untyped_storage().data_ptr() != y.untyped_storage().data_ptr()
    assert x[1:].data_ptr() == x.data_ptr() + 4 and x.view(2, 2)[1].data_ptr() == x.data_ptr() + 8
    assert torch.ones(2, dtype=torch.float64, device="tpu")[1:].element_size() == 8
    many = [torch.ones(3, device="tpu") for _ in range(50)]
    assert len({t.data_ptr() for t in many}) == 50
    assert torch.empty(0, device="tpu").data_ptr() == 0  # as an empty CPU tensor's


def test_to_cpu_round_trip_values():
    cpu = torch.randn(4, 5, generator=torch.Generator().manual_seed(0))
    back = cpu.to("tpu").cpu()
    assert back.device.type == "cpu"
    assert torch.equal(back, cpu)


def test_dataloader_pin_memory_feeds_the_device():
    """tpu is the accelerator, so DataLoader(pin_memory=True) pins; pinning is a plain host copy here."""
    from torch.utils.data import DataLoader, TensorDataset

    data = torch.randn(10, 3)
    batches = [x.to("tpu", non_blocking=True) for x, _ in
               DataLoader(TensorDataset(data, torch.arange(10)), batch_size=4, pin_memory=True)]
    assert torch.equal(torch.cat(batches).cpu(), data)
    source = torch.arange(4.0)
    pinned = source.pin_memory()
    assert torch.equal(pinned, source) and pinned.data_ptr() != source.data_ptr()


def test_pinned_memory_is_reported_as_cuda_reports_it():
    """is_pinned answers from the pinned bytes, as CUDA's host allocator answers from the pointer."""
    from torch.utils.data import DataLoader, TensorDataset

    source = torch.arange(10.0)
    pinned = source.pin_memory()
    assert pinned.is_pinned() and not source.is_pinned()
    assert pinned.pin_memory() is pinned  # already pinned: returned as it is
    assert pinned[3:].is_pinned() and pinned.untyped_storage().is_pinned()
    # OpenReg's test_rewrapped_storage: a tensor set on a slice of the pinned storage shares its bytes
    rewrapped = torch.tensor((), dtype=torch.float32).set_(pinned.untyped_storage()[8:], 0, (5,), (1,))
    assert rewrapped.is_pinned() and rewrapped.data_ptr() != pinned.data_ptr()
    assert torch.randn(4).untyped_storage().pin_memory().is_pinned()
    untyped = torch.randn(4).untyped_storage()  # OpenReg's test_pin_memory: storages, naming the device
    assert not untyped.is_pinned("tpu") and untyped.pin_memory("tpu").is_pinned("tpu")
    assert not torch.ones(2, device="tpu").is_pinned()
    for x, y in DataLoader(TensorDataset(torch.randn(6, 3), torch.arange(6)), batch_size=4, pin_memory=True):
        assert x.is_pinned() and y.is_pinned()


def test_a_non_blocking_copy_to_the_host_lands_in_pinned_memory_as_atens_does():
    """ATen's _to_copy pins the host side of a non-blocking copy from an accelerator (CUDA's and PrivateUse1's)."""
    source = torch.arange(12.0).view(3, 4)
    on_tpu = source.to("tpu")
    landed = on_tpu.t().to("cpu", non_blocking=True)
    assert landed.is_pinned() and torch.equal(landed, source.t()) and landed.stride() == source.t().stride()
    assert not on_tpu.to("cpu").is_pinned()
    assert not on_tpu.to(torch.float64, non_blocking=True).is_cpu


def test_a_freed_pinned_buffer_is_forgotten():
    from torch_tpu import _pinned

    before = len(_pinned._ranges)
    pinned = torch.randn(100).pin_memory()
    assert len(_pinned._ranges) == before + 1
    del pinned
    assert len(_pinned._ranges) == before


@pytest.mark.parametrize("name", sorted(legacy_types.LEGACY_DTYPES))
def test_legacy_tensor_types_tell_tpu_tensors_as_cpus_tell_cpu_tensors(name):
    for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.uint8, torch.int8, torch.int16,
                  torch.int32, torch.int64, torch.bool, torch.complex64):
        host = torch.zeros(3, dtype=dtype)
        assert isinstance(host.to("tpu"), getattr(torch.tpu, name)) == isinstance(host, getattr(torch, name))
        assert not isinstance(host, getattr(torch.tpu, name))
    made = getattr(torch.tpu, name)([1, 0, 2])
    expected = getattr(torch, name)([1, 0, 2])
    assert made.device.type == "tpu" and made.dtype == expected.dtype
    assert torch.equal(made.cpu(), expected)
    assert getattr(torch.tpu, name)(2, 3).shape == getattr(torch, name)(2, 3).shape
    converted = torch.zeros(2, device="tpu").type(getattr(torch.tpu, name))  # Tensor.type reads the class's name
    assert converted.device.type == "tpu" and converted.dtype == expected.dtype
    assert converted.type() == getattr(torch.tpu, name).__name__


def test_legacy_tpu_types_take_a_tpu_device_and_refuse_others_as_cpus_refuse_cuda():
    made = torch.tpu.FloatTensor(2, 3, device="tpu")
    assert made.device.type == "tpu" and made.shape == (2, 3) and made.dtype == torch.float32
    assert torch.equal(torch.tpu.LongTensor([1, 2], device=torch.device("tpu:0")).cpu(), torch.LongTensor([1, 2]))
    with pytest.raises(RuntimeError) as cpu_error:
        torch.FloatTensor(2, device="tpu")
    with pytest.raises(RuntimeError) as tpu_error:
        torch.tpu.FloatTensor(2, device="cpu")
    assert str(tpu_error.value) == str(cpu_error.value).replace("cpu", "@").replace("tpu", "cpu").replace("@", "tpu")


def test_a_module_moved_to_tpu_holds_tensors_of_the_legacy_tpu_types():
    linear = torch.nn.Linear(4, 2).to("tpu", torch.float64)
    assert isinstance(linear.weight.data, torch.tpu.DoubleTensor)
    assert not isinstance(linear.weight.data, torch.DoubleTensor)
