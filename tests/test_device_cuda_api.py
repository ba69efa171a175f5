"""torch.tpu against torch.cuda: the names device-generic code calls through the device module, each with its
torch.cuda contract (types, keys, byte counts), or a clear refusal where it cannot mean anything on the chip."""

import importlib
import json
import warnings

import pytest
import torch

from conftest import run_python
from torch_tpu import _C

# torch.cuda's public names that torch.tpu lacked (round tpuapi15)
CUDA_NAMES = [
    "AcceleratorError", "FloatStorage", "DoubleStorage", "HalfStorage", "BFloat16Storage", "LongStorage", "IntStorage",
    "ShortStorage", "CharStorage", "ByteStorage", "BoolStorage", "ComplexFloatStorage", "ComplexDoubleStorage",
    "CUDAGraph", "graph", "graphs", "make_graphed_callables", "is_current_stream_capturing", "graph_pool_handle",
    "MemPool", "use_mem_pool", "caching_allocator_alloc", "caching_allocator_delete", "caching_allocator_enable",
    "caching_allocator_disabled", "change_current_allocator", "CUDAPluggableAllocator", "can_device_access_peer",
    "check_error", "clock_rate", "default_generators", "device_memory_used", "get_allocator_backend", "get_arch_list",
    "get_sync_debug_mode", "set_sync_debug_mode", "has_half", "host_memory_stats", "host_memory_stats_as_nested_dict",
    "reset_accumulated_host_memory_stats", "reset_peak_host_memory_stats", "ipc_collect", "is_tf32_supported",
    "list_gpu_processes", "memory_usage", "power_draw", "temperature", "utilization", "amp", "nvtx", "tunable",
    "jiterator", "nccl",
]


def test_the_device_module_has_torch_cudas_names():
    assert [name for name in CUDA_NAMES if hasattr(torch.cuda, name) and not hasattr(torch.tpu, name)] == []
    assert torch.tpu.AcceleratorError is torch.cuda.AcceleratorError
    for name in ("amp", "graphs", "nvtx", "tunable", "jiterator", "nccl"):  # importable by their torch.cuda paths
        assert importlib.import_module(f"torch.tpu.{name}") is getattr(torch.get_device_module("tpu"), name)


MEANINGLESS = [
    (lambda: torch.tpu.CUDAGraph(), "CUDAGraph"), (lambda: torch.tpu.graph(None), "graph"),
    (lambda: torch.tpu.make_graphed_callables(torch.nn.Linear(2, 2), (torch.ones(2),)), "make_graphed_callables"),
    (torch.tpu.graph_pool_handle, "graph_pool_handle"), (lambda: torch.tpu.MemPool(), "MemPool"),
    (lambda: torch.tpu.use_mem_pool(None), "use_mem_pool"), (lambda: torch.tpu.change_current_allocator(None),
                                                              "change_current_allocator"),
    (lambda: torch.tpu.check_error(1), "check_error"), (torch.tpu.clock_rate, "clock_rate"),
    (torch.tpu.power_draw, "power_draw"), (torch.tpu.temperature, "temperature"),
    (lambda: torch.tpu.jiterator._create_jit_fn("template <typename T> T f(T x) { return x; }"),
     "jiterator._create_jit_fn"),
    (lambda: torch.tpu.nccl.all_reduce([torch.ones(2)]), "nccl.all_reduce"),
    (lambda: torch.tpu.tunable.enable(True), "tunable.enable"),
    (lambda: torch.tpu.tunable.tune_gemm_in_file("x.csv"), "tunable.tune_gemm_in_file"),
]


@pytest.mark.parametrize("call, name", MEANINGLESS, ids=[name for _, name in MEANINGLESS])
def test_what_cannot_mean_anything_on_the_chip_is_refused_by_name(call, name):
    with pytest.raises(NotImplementedError, match=rf"torch\.tpu\.{name} is not available on the emulated TPU: \w"):
        call()


def test_nothing_captures_and_nothing_is_tuned():
    assert torch.tpu.is_current_stream_capturing() is False
    assert torch.tpu.tunable.is_enabled() is False and torch.tpu.nccl.is_available([torch.ones(2)]) is False
    assert not isinstance(object(), torch.tpu.CUDAGraph)


def test_caching_allocator_alloc_counts_exact_bytes_until_deleted(paused_collector):
    before = torch.tpu.memory_allocated()
    address = torch.tpu.caching_allocator_alloc(1000, stream=torch.tpu.current_stream())
    assert isinstance(address, int) and address != 0
    assert torch.tpu.memory_allocated() - before == 1000
    assert torch.tpu.memory_stats()["allocation.all.current"] >= 1
    torch.tpu.caching_allocator_delete(address)
    assert torch.tpu.memory_allocated() == before
    with pytest.raises(RuntimeError, match="invalid device pointer"):
        torch.tpu.caching_allocator_delete(address)


def test_caching_allocator_disabled_frees_blocks_straight_back(paused_collector):
    torch.tpu.empty_cache()
    with torch.tpu.caching_allocator_disabled():
        block = torch.empty(1000, device="tpu")
        del block
        assert torch.tpu.memory_reserved() == torch.tpu.memory_allocated()
    block = torch.empty(1000, device="tpu")
    del block  # cached again: reserved but not allocated
    assert torch.tpu.memory_reserved() - torch.tpu.memory_allocated() == 4000
    torch.tpu.empty_cache()
    assert torch.tpu.get_allocator_backend() == "native"


def test_device_memory_is_what_this_process_holds():
    assert torch.tpu.device_memory_used() == torch.tpu.memory_reserved()
    pid_line = torch.tpu.list_gpu_processes().splitlines()
    assert pid_line[0] == "TPU:0"
    import os
    megabytes = torch.tpu.memory_reserved() / 2**20
    assert pid_line[1] == f"process {os.getpid():>10d} uses {megabytes:12.3f} MB TPU memory"


HOST_STAT_FAMILIES = ("allocations", "allocated_bytes", "active_requests", "active_bytes")
HOST_STAT_FIELDS = ("current", "peak", "allocated", "freed")
HOST_STAT_KEYS = {f"{family}.{field}" for family in HOST_STAT_FAMILIES for field in HOST_STAT_FIELDS} \
    | {f"host_{kind}_time.{field}" for kind in ("alloc", "free") for field in ("total", "max", "min", "count", "avg")} \
    | {"num_host_alloc", "num_host_free"}


def test_host_memory_stats_count_pinned_bytes_with_cudas_keys():
    torch.tpu.reset_accumulated_host_memory_stats()
    torch.tpu.reset_peak_host_memory_stats()
    start = torch.tpu.host_memory_stats()
    assert set(start) == HOST_STAT_KEYS and list(start) == sorted(start)
    first, second = torch.ones(100).pin_memory(), torch.ones(3, 5, dtype=torch.float64).pin_memory()
    stats = torch.tpu.host_memory_stats()
    assert stats["allocated_bytes.current"] - start["allocated_bytes.current"] == 400 + 120
    assert stats["allocations.allocated"] == stats["num_host_alloc"] == stats["host_alloc_time.count"] == 2
    assert stats["active_bytes.current"] == stats["allocated_bytes.current"]
    del first
    stats = torch.tpu.host_memory_stats()
    assert stats["allocated_bytes.freed"] == 400 and stats["num_host_free"] == 1
    assert stats["allocated_bytes.peak"] - start["allocated_bytes.current"] == 520
    torch.tpu.reset_peak_host_memory_stats()
    stats = torch.tpu.host_memory_stats()
    assert stats["allocated_bytes.peak"] == stats["allocated_bytes.current"]
    torch.tpu.reset_accumulated_host_memory_stats()
    nested = torch.tpu.host_memory_stats_as_nested_dict()
    assert nested["allocated_bytes"]["allocated"] == nested["allocated_bytes"]["freed"] == 0
    assert nested["host_alloc_time"]["count"] == 0
    del second


def test_sync_debug_mode_warns_and_refuses_where_the_host_waits():
    x = torch.arange(6.0, device="tpu")
    try:
        torch.tpu.set_sync_debug_mode("warn")
        assert torch.tpu.get_sync_debug_mode() == 1
        for waits in (lambda: x.sum().item(), lambda: x.cpu(), lambda: torch.nonzero(x), lambda: x.tolist()):
            with pytest.warns(UserWarning, match="called a synchronizing TPU operation") as caught:
                waits()
            assert caught[0].filename == __file__  # the user's line, not torch_tpu's
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            x + 1, x.to("cpu", non_blocking=True), x.sum()  # no wait: no warning
        torch.tpu.set_sync_debug_mode(2)
        with pytest.raises(RuntimeError, match="called a synchronizing TPU operation"):
            x.max().item()
        with pytest.raises(RuntimeError, match="invalid value of debug_mode, expected one of `default`, `warn`"):
            torch.tpu.set_sync_debug_mode("loud")
    finally:
        torch.tpu.set_sync_debug_mode("default")
    assert torch.tpu.get_sync_debug_mode() == 0 and x.sum().item() == 15.0


def test_sync_debug_mode_does_not_take_a_kernels_own_scalar_read_for_a_wait():
    # CUDA fills from a 0-d device tensor and reads fake quantization's parameters on the device: no host wait
    x, value = torch.randn(4, device="tpu"), torch.tensor(2.0, device="tpu")
    scale, zero_point = torch.tensor(0.1, device="tpu"), torch.tensor(0, dtype=torch.int32, device="tpu")
    try:
        torch.tpu.set_sync_debug_mode("error")
        filled = x.clone().fill_(value)
        quantized = torch.fake_quantize_per_tensor_affine(x, scale, zero_point, 0, 255)
    finally:
        torch.tpu.set_sync_debug_mode("default")
    assert filled.tolist() == [2.0] * 4
    assert torch.equal(quantized.cpu(), torch.fake_quantize_per_tensor_affine(x.cpu(), 0.1, 0, 0, 255))


def test_sync_debug_mode_catches_every_op_whose_output_size_is_the_data_as_cuda_does():
    # the host must read the data to size these results: CUDA's synchronizing ops of test_cuda's sync-debug test
    x = torch.arange(4.0, device="tpu")
    mask, repeats = torch.tensor([True, False, True, True], device="tpu"), torch.tensor([2, 1, 0, 3], device="tpu")
    size_is_the_data = {
        "x[mask]": lambda: x[mask], "x[mask, None]": lambda: x[mask, None],
        "index.Tensor_out": lambda: torch.ops.aten.index.Tensor_out(x, [mask], out=torch.empty(0, device="tpu")),
        "masked_select": lambda: torch.masked_select(x, mask), "unique": lambda: torch.unique(x, return_counts=True),
        "unique(dim)": lambda: torch.unique(x, dim=0), "unique_consecutive": lambda: torch.unique_consecutive(x),
        "repeat_interleave(repeats)": lambda: torch.repeat_interleave(repeats),
        "repeat_interleave(x, repeats)": lambda: torch.repeat_interleave(x, repeats),
    }
    size_is_known = (lambda: x[repeats], lambda: torch.repeat_interleave(x, repeats, output_size=6),
                     lambda: torch.repeat_interleave(x, 2), lambda: x.masked_fill(mask, 1.0),
                     lambda: x.clone().__setitem__(mask, 1.0))
    try:
        torch.tpu.set_sync_debug_mode("warn")
        for name, waits in size_is_the_data.items():
            with pytest.warns(UserWarning, match="called a synchronizing TPU operation") as caught:
                waits()
            assert caught[0].filename == __file__, name  # the user's line, past torch's own Python wrappers
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            for no_wait in size_is_known:
                no_wait()
        torch.tpu.set_sync_debug_mode("error")
        for name, waits in size_is_the_data.items():
            with pytest.raises(RuntimeError, match="called a synchronizing TPU operation"):
                waits()
    finally:
        torch.tpu.set_sync_debug_mode("default")
    assert torch.equal(x[mask].cpu(), x.cpu()[mask.cpu()])
    assert torch.equal(torch.repeat_interleave(repeats).cpu(), torch.repeat_interleave(repeats.cpu()))


@pytest.mark.parametrize("mode, message", [(5, "invalid value of debug_mode, expected one of 0,1,2"),
                                           (-1, "invalid value of debug_mode, expected one of 0,1,2"),
                                           (1.0, "invalid argument to set_sync_debug_mode"),
                                           (None, "invalid argument to set_sync_debug_mode")])
def test_sync_debug_mode_refuses_what_torch_cuda_refuses(mode, message):
    with pytest.raises(RuntimeError, match=message):
        torch.tpu.set_sync_debug_mode(mode)
    assert torch.tpu.get_sync_debug_mode() == 0


def test_caching_allocator_gives_no_bytes_a_null_address_and_refuses_non_integer_sizes(paused_collector):
    before = torch.tpu.memory_allocated()
    first, second = torch.tpu.caching_allocator_alloc(0), torch.tpu.caching_allocator_alloc(0)
    assert first == second == 0 and torch.tpu.memory_allocated() == before
    torch.tpu.caching_allocator_delete(first)
    torch.tpu.caching_allocator_delete(second)
    with pytest.raises(TypeError, match="size must be an int, not float"):
        torch.tpu.caching_allocator_alloc(1.5)
    assert torch.tpu.memory_allocated() == before


def test_switching_off_what_the_chip_never_turns_on_is_harmless():
    torch.tpu.tunable.enable(False)
    torch.tpu.tunable.tuning_enable(False)
    torch.tpu.tunable.record_untuned_enable(False)
    with pytest.raises(NotImplementedError, match="tunable.enable"):
        torch.tpu.tunable.enable(True)
    torch.tpu.nvtx.range_end(10 ** 9)  # an unknown handle, ignored as NVTX ignores it
    with pytest.raises(RuntimeError, match="GraphSafe RNG operations not supported for device 'tpu'"):
        torch.tpu.default_generators[0].graphsafe_get_state()


def test_utilization_and_memory_usage_follow_the_simulated_clock():
    """A fresh chip runs one 16 MiB float32 add: HBM-bound, so memory was busy for all of it but the launch."""
    result = run_python("""
        import json, torch
        a, b = torch.empty(1 << 22, device="tpu"), torch.empty(1 << 22, device="tpu")
        before = (torch.tpu.utilization(), torch.tpu.memory_usage())
        torch.add(a, b)
        print(json.dumps([before, torch.tpu.utilization(), torch.tpu.memory_usage()]))
    """)
    before, utilization, memory_usage = json.loads(result.stdout)
    spec = _C.CHIPS["ironwood"]
    moved_seconds = 3 * 4 * (1 << 22) / spec.hbm_bandwidth
    assert before == [0, 0] and utilization == 100
    assert memory_usage == int(100 * moved_seconds / (moved_seconds + _C.clock.LAUNCH_OVERHEAD_SECONDS))


def test_legacy_storage_types_are_tpu_typed_storages():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # TypedStorage's deprecation, as on CPU and CUDA
        storage = torch.tpu.FloatStorage(3)
        assert storage.device == torch.device("tpu", 0) and storage.dtype == torch.float32 and storage.size() == 3
        assert isinstance(storage, torch.tpu.FloatStorage) and not isinstance(storage, torch.tpu.DoubleStorage)
        assert isinstance(torch.ones(2, device="tpu", dtype=torch.bfloat16).storage(), torch.tpu.BFloat16Storage)
        assert not isinstance(torch.ones(2).storage(), torch.tpu.FloatStorage)
        assert torch.tpu.LongStorage([1, 2, 3]).tolist() == [1, 2, 3]
        assert torch.tpu.ComplexFloatStorage.dtype == torch.complex64  # (warns TypedStorage's once per process)


def test_amp_aliases_warn_and_autocast_the_tpu():
    x = torch.randn(4, 4, device="tpu")
    with pytest.warns(FutureWarning, match=r"torch\.amp\.autocast\('tpu'"):
        context = torch.tpu.amp.autocast()
    with context:
        assert (x @ x).dtype == torch.bfloat16
    with pytest.warns(FutureWarning, match=r"torch\.amp\.GradScaler\('tpu'"):
        scaler = torch.tpu.amp.GradScaler(init_scale=8.0)
    assert scaler._device == "tpu" and scaler.get_scale() == 8.0
    with pytest.warns(FutureWarning):
        in_float32 = torch.tpu.amp.custom_fwd(cast_inputs=torch.float32)

    class Double(torch.autograd.Function):
        @staticmethod
        @in_float32
        def forward(ctx, a):
            return a.dtype, a * 2

    with torch.autocast("tpu"):
        dtype, _ = Double.apply(x.bfloat16())
    assert dtype == torch.float32


def test_nvtx_ranges_are_profiler_ranges():
    nvtx = torch.tpu.nvtx
    x = torch.ones(4, device="tpu")
    with torch.profiler.profile() as prof:
        assert nvtx.range_push("outer") == 0 and nvtx.range_push("inner") == 1
        x + 1
        assert nvtx.range_pop() == 1 and nvtx.range_pop() == 0 and nvtx.range_pop() == -1
        handle = nvtx.range_start("started")
        nvtx.range_end(handle)
        with nvtx.range("step {}", 3):
            x * 2
        nvtx.mark("here")
    names = {event.name for event in prof.events()}
    assert {"outer", "inner", "started", "step 3", "here"} <= names


def test_default_generator_is_the_chips_rng():
    generator, = torch.tpu.default_generators
    assert generator.device == torch.device("tpu", 0)
    assert generator.manual_seed(7) is generator and generator.initial_seed() == torch.tpu.initial_seed() == 7
    state = generator.get_state()
    first = torch.rand(3, device="tpu").cpu()
    generator.set_state(state)
    assert torch.equal(torch.rand(3, device="tpu").cpu(), first)
    chosen = generator.seed()
    assert torch.tpu.initial_seed() == chosen


def test_capability_and_device_facts():
    assert torch.tpu.get_device_capability() == (9, 0)  # Ironwood's MXU takes FP8, as Hopper's tensor cores do
    props = torch.tpu.get_device_properties()
    assert (props.major, props.minor) == torch.tpu.get_device_capability()
    from torch_tpu.tpu import capability_of
    assert capability_of(_C.CHIPS["v5e"].peak_flops) == (8, 0)  # bfloat16 MXU without FP8: Ampere's
    assert torch.tpu.is_tf32_supported() and torch.tpu.has_half
    assert torch.tpu.get_arch_list() == list(_C.CHIPS) and "ironwood" in torch.tpu.get_arch_list()
    assert torch.tpu.can_device_access_peer(0, 0) is False
    with pytest.raises(RuntimeError, match="tpu:1 is not available in this process"):
        torch.tpu.can_device_access_peer(0, 1)
    assert torch.tpu.ipc_collect() is None
