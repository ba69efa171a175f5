"""Exact HBM accounting, torch.cuda-style statistics, OOM and host RAM use."""

import gc
import sys

import expecttest
import pytest
import torch
import torch_tpu

from conftest import run_python

MiB = 1 << 20


def test_allocation_is_exact_storage_nbytes(memory_baseline):
    tensors = [
        torch.empty(3, device="tpu"),
        torch.empty(7, dtype=torch.bfloat16, device="tpu"),
        torch.empty(5, dtype=torch.bool, device="tpu"),
        torch.empty(1, dtype=torch.complex64, device="tpu"),
        torch.empty(2, 3, dtype=torch.float8_e5m2, device="tpu"),
        torch.empty((), dtype=torch.int64, device="tpu"),
        torch.empty(0, 4, device="tpu"),
        torch.empty_strided((2, 3), (1, 4), device="tpu"),  # storage spans 1 + 1*1 + 2*4 = 10 elements
    ]
    assert [t.untyped_storage().nbytes() for t in tensors] == [12, 14, 5, 8, 6, 8, 0, 40]
    assert memory_baseline.delta() == sum(t.untyped_storage().nbytes() for t in tensors) == 93
    del tensors


def test_views_do_not_allocate(memory_baseline):
    x = torch.empty(4, 6, device="tpu")
    before = torch.tpu.memory_allocated()
    views = [x.t(), x[::2, 1:], x.view(24), x.unsqueeze(0).expand(3, 4, 6), x.view(torch.int16), x.diagonal(),
             x.unfold(1, 2, 2), torch.view_as_complex(x.view(4, 3, 2)), x.as_strided((2, 2), (1, 2), 3)]
    assert torch.tpu.memory_allocated() == before
    del x
    gc.collect()
    assert memory_baseline.delta() == 96, "the views keep the whole storage alive"
    del views


def test_storage_freed_when_last_view_dies(memory_baseline):
    x = torch.empty(1000, device="tpu")
    tail = x[990:]
    del x
    assert memory_baseline.delta() == 4000
    del tail
    assert memory_baseline.delta() == 0


def test_create_and_drop_loop_returns_to_baseline(memory_baseline):
    for i in range(1000):
        x = torch.empty(i % 17 + 1, 3, device="tpu")
        y = x.t()[1:]
        z = torch.zeros(i % 5, dtype=torch.bfloat16, device="tpu").view(torch.int16)
        del x, y, z
    assert memory_baseline.delta() == 0


def test_peak_and_reset(memory_baseline):
    torch.tpu.reset_peak_memory_stats()
    start = torch.tpu.memory_allocated()
    assert torch.tpu.max_memory_allocated() == start
    big = torch.empty(1000, device="tpu")
    del big
    small = torch.empty(10, device="tpu")
    assert torch.tpu.max_memory_allocated() == start + 4000
    torch.tpu.reset_peak_memory_stats()
    assert torch.tpu.max_memory_allocated() == start + 40
    del small


def test_memory_stats_keys_and_values(memory_baseline):
    torch.tpu.reset_peak_memory_stats()
    torch.tpu.reset_accumulated_memory_stats()
    stats = torch.tpu.memory_stats()
    required = [
        f"{family}.all.{field}"
        for family in ("allocated_bytes", "allocation", "active_bytes", "active", "requested_bytes")
        for field in ("current", "peak", "allocated", "freed")
    ] + ["num_alloc_retries", "num_ooms", "reserved_bytes.all.current", "reserved_bytes.all.peak"]
    assert set(required) <= set(stats)
    base = stats["allocated_bytes.all.current"]
    count = stats["allocation.all.current"]
    x = torch.empty(100, device="tpu")
    y = torch.empty(50, dtype=torch.int8, device="tpu")
    del x
    stats = torch.tpu.memory_stats()
    assert stats["allocated_bytes.all.current"] == base + 50 == torch.tpu.memory_allocated()
    assert stats["allocated_bytes.all.peak"] == base + 450
    assert stats["allocated_bytes.all.allocated"] == 450
    assert stats["allocated_bytes.all.freed"] == 400
    assert (stats["allocation.all.current"], stats["allocation.all.allocated"], stats["allocation.all.freed"]) == (
        count + 1, 2, 1)
    assert stats["num_alloc_retries"] == 0
    assert stats["reserved_bytes.all.current"] >= stats["allocated_bytes.all.current"]
    assert stats["reserved_bytes.all.current"] == torch.tpu.memory_reserved()
    nested = torch.tpu.memory_stats_as_nested_dict()
    assert nested["allocated_bytes"]["all"]["current"] == base + 50
    del y


def test_empty_cache_releases_reserved_bytes(memory_baseline):
    x = torch.empty(12345, dtype=torch.uint8, device="tpu")
    del x
    assert torch.tpu.memory_reserved() >= torch.tpu.memory_allocated() + 12345
    torch.tpu.empty_cache()
    assert torch.tpu.memory_reserved() == torch.tpu.memory_allocated()


def test_mem_get_info(memory_baseline):
    capacity = torch.tpu.get_device_properties().total_memory
    x = torch.empty(25, device="tpu")
    assert torch.tpu.mem_get_info() == (capacity - torch.tpu.memory_allocated(), capacity)
    assert torch.tpu.mem_get_info("tpu:0") == torch.tpu.mem_get_info(0)
    del x


def test_resize_accounts_exactly(memory_baseline):
    x = torch.empty(0, device="tpu")
    x.resize_(10)
    assert memory_baseline.delta() == 40
    x.resize_(3, 3)  # shrinking keeps the storage, as on CPU
    assert memory_baseline.delta() == 40
    x.resize_(20)
    assert memory_baseline.delta() == 80
    del x


CUDA_POOL_FAMILIES = ("allocation", "segment", "active", "inactive_split", "allocated_bytes", "reserved_bytes",
                      "active_bytes", "inactive_split_bytes", "requested_bytes")
FIGURES = ("current", "peak", "allocated", "freed")


def test_memory_stats_has_every_key_torch_cuda_reports():
    # torch.cuda.memory_stats' documented keys (its docstring; CUDACachingAllocator's DeviceStats)
    cuda_keys = {f"{family}.{pool}.{figure}" for family in CUDA_POOL_FAMILIES
                 for pool in ("all", "small_pool", "large_pool") for figure in FIGURES}
    cuda_keys |= {f"{family}.{figure}" for family in ("oversize_allocations", "oversize_segments") for figure in FIGURES}
    cuda_keys |= {"max_split_size", "num_alloc_retries", "num_ooms", "num_oom_rejections", "num_sync_all_streams",
                  "num_device_alloc", "num_device_free"}
    stats = torch.tpu.memory_stats()
    assert set(stats) == cuda_keys | {"hbm_capacity_bytes"}
    assert stats["max_split_size"] == -1  # CUDA's value when no split size is configured
    assert all(stats[key] == 0 for key in stats if key.startswith(("inactive_split", "oversize_")))
    assert dict(torch.accelerator.memory_stats()) == dict(stats)


def _pools(family):
    stats = torch.tpu.memory_stats()
    return {pool: tuple(stats[f"{family}.{pool}.{figure}"] for figure in FIGURES)
            for pool in ("small_pool", "large_pool", "all")}


def _uint8(nbytes):
    return torch.empty(nbytes, dtype=torch.uint8, device="tpu")


def test_memory_stats_pools_hand_counted(memory_baseline):
    """Allocations of at most 1 MiB are the small pool's, larger ones the large pool's, as in CUDA's allocator;
    the small pool's peak falls between two large allocations' lifetimes."""
    torch.tpu.reset_peak_memory_stats()
    torch.tpu.reset_accumulated_memory_stats()
    before, count_before = _pools("allocated_bytes"), _pools("allocation")
    s0, l0 = before["small_pool"][0], before["large_pool"][0]
    n0, m0 = count_before["small_pool"][0], count_before["large_pool"][0]
    a = _uint8(1000)
    b = _uint8(2 * MiB)
    c = _uint8(3000)  # everything's peak: s0 + l0 + 2 MiB + 4000
    del a
    del b
    d = _uint8(MiB)  # exactly kSmallSize: small. The small pool's peak: s0 + 3000 + 1 MiB
    e = _uint8(MiB + 1)
    del d, e, c
    small_total, large_total = 1000 + 3000 + MiB, 2 * MiB + MiB + 1
    assert _pools("allocated_bytes") == {
        "small_pool": (s0, s0 + 3000 + MiB, small_total, small_total),
        "large_pool": (l0, l0 + 2 * MiB, large_total, large_total),
        "all": (s0 + l0, s0 + l0 + 2 * MiB + 4000, small_total + large_total, small_total + large_total),
    }
    assert _pools("allocation") == {
        "small_pool": (n0, n0 + 2, 3, 3), "large_pool": (m0, m0 + 1, 2, 2), "all": (n0 + m0, n0 + m0 + 3, 5, 5),
    }
    for family in ("active_bytes", "requested_bytes"):
        assert _pools(family) == _pools("allocated_bytes")
    assert _pools("active") == _pools("allocation")

    kept = _uint8(MiB + 7)
    torch.tpu.reset_peak_memory_stats()
    assert _pools("allocated_bytes")["large_pool"][:2] == (l0 + MiB + 7,) * 2
    assert _pools("allocated_bytes")["small_pool"][:2] == (s0, s0)
    torch.tpu.reset_accumulated_memory_stats()
    assert _pools("allocation")["large_pool"] == (m0 + 1, m0 + 1, 0, 0)
    assert _pools("allocated_bytes")["small_pool"] == (s0, s0, 0, 0)
    del kept


def test_reserved_bytes_and_segments_count_host_blocks_made_and_dropped(memory_baseline):
    """Each allocation gets a host block of its own (a segment); a freed block stays cached, reserved, until
    empty_cache, or goes at once if larger than the cache keeps (64 MiB)."""
    torch.tpu.empty_cache()
    torch.tpu.reset_peak_memory_stats()
    torch.tpu.reset_accumulated_memory_stats()
    bytes0, segments0 = _pools("reserved_bytes"), _pools("segment")
    rs, rl = bytes0["small_pool"][0], bytes0["large_pool"][0]
    ns, nl = segments0["small_pool"][0], segments0["large_pool"][0]
    a, b = _uint8(1000), _uint8(2 * MiB)  # two blocks made
    del a, b  # both cached: still reserved
    a = _uint8(1000)  # the cached block again
    c = _uint8(3 * MiB)
    del c
    d = _uint8(65 * MiB)
    del d  # too large to cache: dropped at once
    assert torch.tpu.memory_stats()["reserved_bytes.large_pool.current"] == rl + 5 * MiB == \
        torch.tpu.memory_reserved() - rs - 1000
    torch.tpu.empty_cache()  # drops the 2 MiB and 3 MiB blocks
    large_total = 70 * MiB
    assert _pools("reserved_bytes") == {
        "small_pool": (rs + 1000, rs + 1000, 1000, 0),
        "large_pool": (rl, rl + 65 * MiB + 5 * MiB, large_total, large_total),
        "all": (rs + rl + 1000, rs + rl + 1000 + 70 * MiB, 1000 + large_total, large_total),
    }
    assert _pools("segment") == {
        "small_pool": (ns + 1, ns + 1, 1, 0), "large_pool": (nl, nl + 3, 3, 3), "all": (ns + nl + 1, ns + nl + 4, 4, 3),
    }
    stats = torch.tpu.memory_stats()
    assert (stats["num_device_alloc"], stats["num_device_free"]) == (4, 3)
    assert stats["reserved_bytes.all.current"] == torch.tpu.memory_reserved()
    assert torch.tpu.max_memory_reserved() == rs + rl + 1000 + 70 * MiB
    del a
    torch.tpu.empty_cache()
    assert torch.tpu.memory_reserved() == torch.tpu.memory_allocated()


def test_the_cache_keeps_at_most_its_limit_and_reserved_is_allocated_plus_cached(memory_baseline):
    """The pool's cached bytes are not counted on the free path but derived (reserved less allocated): the cache
    still stops at POOL_TOTAL_LIMIT, and every figure agrees with the blocks it holds."""
    hbm = torch_tpu._C.current_chip().hbm
    torch.tpu.empty_cache()
    limit, block = torch_tpu._C.hbm.POOL_TOTAL_LIMIT, 60 * MiB
    blocks = [_uint8(block) for _ in range(limit // block + 1)]  # one more than the cache holds
    allocated = torch.tpu.memory_allocated()
    del blocks
    cached = (limit // block) * block
    assert hbm.pool.cached_bytes == cached == sum(nbytes * len(kept) for nbytes, kept in hbm.pool.cached.items())
    assert torch.tpu.memory_reserved() == torch.tpu.memory_stats()["reserved_bytes.all.current"] == \
        allocated - (limit // block + 1) * block + cached
    torch.tpu.empty_cache()
    assert hbm.pool.cached_bytes == 0 and torch.tpu.memory_reserved() == torch.tpu.memory_allocated()


def test_an_abstract_allocation_never_takes_a_cached_block(memory_baseline):
    """Allocations look in the pool's cache first; a bufferless one must not find the real block a tensor freed."""
    hbm = torch_tpu._C.current_chip().hbm
    real = _uint8(4096)
    del real  # its block cached
    cached = hbm.pool.cached_bytes
    with torch_tpu.abstract():
        ghost = _uint8(4096)
        assert not torch_tpu._tensor.tensor_has_values(ghost) and hbm.pool.cached_bytes == cached
        del ghost
    again = _uint8(4096)
    assert torch_tpu._tensor.tensor_has_values(again) and hbm.pool.cached_bytes == cached - 4096
    del again


def test_a_new_tensor_is_allocated_and_freed_in_three_python_frames(memory_baseline):
    """Every kernel's output pays this path: ``_new`` allocates in ``HBM.allocate`` (pool, counters and Buffer
    inline), the storage's death frees in ``HBM.release`` (the Buffer's ``__del__``). Nine frames before."""
    calls = []

    def profile(frame, event, arg):
        if event == "call":
            calls.append(frame.f_code.co_name)

    def new_and_dropped():
        torch_tpu._tensor.empty((16,), torch.float32)

    new_and_dropped()  # the pool holds a block of its size now
    sys.setprofile(profile)
    try:
        new_and_dropped()
    finally:
        sys.setprofile(None)
    assert calls == ["new_and_dropped", "empty", "_new", "allocate", "release"]


def test_snapshot_segment_type_follows_the_pools(memory_baseline):
    sizes = {MiB: "small", MiB + 1: "large"}
    tensors = [_uint8(nbytes) for nbytes in sizes]
    segments = {segment["total_size"]: segment["segment_type"] for segment in torch.tpu.memory_snapshot()}
    assert {nbytes: segments[nbytes] for nbytes in sizes} == sizes
    del tensors


class TestMemorySummary(expecttest.TestCase):
    def test_golden_summary(self):
        out = run_python("""
            import torch
            a = torch.empty(1000, device='tpu')
            b = torch.empty(100, dtype=torch.float16, device='tpu')
            del a
            c = torch.empty(10, device='tpu')
            try:
                torch.empty(1 << 20, device='tpu')
            except torch.OutOfMemoryError:
                pass
            print(torch.tpu.memory_summary(), end='')
        """, env={"TORCH_TPU_HBM_BYTES": str(MiB)}).stdout
        self.assertExpectedInline(out, """\
===========================================================================
 TPU HBM summary, ironwood (TPU7x), device tpu:0
---------------------------------------------------------------------------
 Capacity: 1.00 MiB   Free: 1023.77 KiB   OOMs: 1
---------------------------------------------------------------------------
Metric                      Current         Peak   Tot. Alloc   Tot. Freed
---------------------------------------------------------------------------
Allocated memory              240 B     4.10 KiB     4.14 KiB     3.91 KiB
  from large pool               0 B          0 B          0 B          0 B
  from small pool             240 B     4.10 KiB     4.14 KiB     3.91 KiB
Active memory                 240 B     4.10 KiB     4.14 KiB     3.91 KiB
  from large pool               0 B          0 B          0 B          0 B
  from small pool             240 B     4.10 KiB     4.14 KiB     3.91 KiB
Requested memory              240 B     4.10 KiB     4.14 KiB     3.91 KiB
  from large pool               0 B          0 B          0 B          0 B
  from small pool             240 B     4.10 KiB     4.14 KiB     3.91 KiB
Reserved memory            4.14 KiB     4.14 KiB     4.14 KiB          0 B
  from large pool               0 B          0 B          0 B          0 B
  from small pool          4.14 KiB     4.14 KiB     4.14 KiB          0 B
Non-releasable memory           0 B          0 B          0 B          0 B
  from large pool               0 B          0 B          0 B          0 B
  from small pool               0 B          0 B          0 B          0 B
Allocations                       2            2            3            1
  from large pool                 0            0            0            0
  from small pool                 2            2            3            1
Active allocs                     2            2            3            1
  from large pool                 0            0            0            0
  from small pool                 2            2            3            1
Reserved segments                 3            3            3            0
  from large pool                 0            0            0            0
  from small pool                 3            3            3            0
Non-releasable allocs             0            0            0            0
  from large pool                 0            0            0            0
  from small pool                 0            0            0            0
===========================================================================
""")


OOM_SCRIPT = """
    import torch
    keep = torch.empty(600, dtype=torch.uint8, device='tpu')
    before = torch.tpu.memory_stats()
    try:
        torch.empty(500, dtype=torch.uint8, device='tpu')
    except torch.OutOfMemoryError as error:
        print(type(error).__name__, isinstance(error, RuntimeError))
        print(str(error))
    after = torch.tpu.memory_stats()
    print(after['num_ooms'] - before['num_ooms'], after['allocated_bytes.all.current'] - before['allocated_bytes.all.current'])
    fits = torch.ones(400, dtype=torch.uint8, device='tpu')
    print(torch.tpu.memory_allocated(), fits.cpu().sum().item())
    del fits
    try:
        torch.ones(300, dtype=torch.float32).to('tpu')  # a copy to tpu that does not fit
    except torch.OutOfMemoryError:
        print('OOM', torch.tpu.memory_allocated())
"""


def test_out_of_memory_with_env_capacity():
    lines = run_python(OOM_SCRIPT, env={"TORCH_TPU_HBM_BYTES": "1000"}).stdout.splitlines()
    assert lines[0] == "OutOfMemoryError True"
    assert "500 bytes" in lines[1] and "600 bytes" in lines[1] and "1000 bytes" in lines[1]
    assert lines[2] == "1 0"
    assert lines[3] == "1000 400"
    assert lines[4] == "OOM 600"


def test_out_of_memory_with_memory_fraction():
    torch.tpu.set_per_process_memory_fraction(1.0)
    capacity = torch.tpu.get_device_properties().total_memory
    allocated = torch.tpu.memory_allocated()
    fraction = (allocated + 4096) / capacity
    ooms = torch.tpu.memory_stats()["num_ooms"]
    try:
        torch.tpu.set_per_process_memory_fraction(fraction)
        limit = torch.tpu.mem_get_info()[1]
        assert limit == int(capacity * fraction)
        assert torch.tpu.get_per_process_memory_fraction() == limit / capacity
        free = limit - allocated
        with pytest.raises(torch.tpu.OutOfMemoryError) as caught:  # torch.OutOfMemoryError, as torch.cuda's
            torch.empty(free + 1, dtype=torch.uint8, device="tpu")
        message = str(caught.value)
        assert f"({free + 1} bytes)" in message and f"({allocated} bytes)" in message and f"({limit} bytes)" in message
        assert torch.tpu.memory_stats()["num_ooms"] == ooms + 1
        assert torch.tpu.memory_allocated() == allocated
        exactly_full = torch.empty(free, dtype=torch.uint8, device="tpu")
        assert torch.tpu.mem_get_info()[0] == 0
        del exactly_full
    finally:
        torch.tpu.set_per_process_memory_fraction(1.0)
    assert torch.tpu.mem_get_info()[1] == capacity and torch.tpu.get_per_process_memory_fraction() == 1.0
    with pytest.raises(ValueError):
        torch.tpu.set_per_process_memory_fraction(2.0)


def test_host_ram_is_one_copy_of_hbm():
    out = run_python("""
        import torch
        def rss():
            for line in open('/proc/self/status'):
                if line.startswith('VmRSS:'):
                    return int(line.split()[1]) * 1024
        before = rss()
        x = torch.ones(256 << 20, dtype=torch.uint8, device='tpu')
        grown = rss() - before
        del x
        shrunk = rss() - before
        print(grown, shrunk)
    """).stdout.split()
    grown, shrunk = (int(v) for v in out)
    assert 0.9 * 256 * MiB < grown < 1.2 * 256 * MiB
    assert shrunk < 0.2 * 256 * MiB, "a freed large buffer goes back to the OS"


def test_torch_accelerator_answers_from_the_chip(memory_baseline):
    """Device-generic code (torch.accelerator.*) sees the same HBM numbers as torch.tpu."""
    accelerator = torch.accelerator
    assert accelerator.current_accelerator().type == "tpu"
    x = torch.empty(1000, device="tpu")
    assert accelerator.memory_allocated() == torch.tpu.memory_allocated()
    assert accelerator.memory_stats() == torch.tpu.memory_stats()
    assert accelerator.get_memory_info() == torch.tpu.mem_get_info()
    accelerator.reset_peak_memory_stats()
    del x
    y = torch.empty(10, device="tpu")
    assert accelerator.max_memory_allocated() == torch.tpu.max_memory_allocated() == memory_baseline.bytes + 4000
    assert accelerator.memory_reserved() == torch.tpu.memory_reserved()
    accelerator.synchronize()
    accelerator.empty_cache()
    assert torch.float8_e4m3fn in accelerator.get_device_capability()["supported_dtypes"]
    with pytest.raises(RuntimeError, match="one chip per process"):
        accelerator.synchronize("tpu:1")
    del y
