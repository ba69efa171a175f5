"""High-bandwidth memory: one allocation per storage, exact byte accounting.

Accounting is exact: ``allocated_bytes`` is the sum of the sizes asked for, with
no rounding, so ``memory_allocated()`` equals the sum of live storages' nbytes.
The host memory behind an allocation is 64-byte aligned (NumPy's vector loops
run fastest on aligned data). Freed host blocks are kept in a small pool so a
training loop does not page-fault fresh memory every step; the pool counts as
*reserved*, like CUDA's caching allocator, and ``empty_cache`` returns it.

An allocation's address is the address of its host block (what
``storage.data_ptr()`` returns). ``live`` lists every allocation for memory
snapshots; while ``history`` is set (``torch.tpu.memory._record_memory_history``)
every allocation, free and OOM is also reported to it with its Python stack.

In bufferless mode (abstract execution, ``torch_tpu.abstract()``) allocations are counted
exactly as always but get no host memory: their buffer's ``array`` is None, and ``live`` holds a
``Bufferless`` record of their size and a unique address, so a model far larger than the host fits.
"""

import collections
import functools
from types import MappingProxyType

import numpy as np

from .trace import EventLog, now_ns as _now_ns

HOST_ALIGNMENT = 64
POOL_BLOCK_LIMIT = 64 << 20  # larger blocks go straight back to the OS
POOL_TOTAL_LIMIT = 256 << 20
SMALL_SIZE = 1 << 20  # CUDA's kSmallSize: its small pool serves allocations of at most this many bytes
_NO_BYTES = np.empty(0, np.uint8)


class HBMOutOfMemory(MemoryError):
    """An allocation did not fit in HBM. The integration layer maps it to torch.OutOfMemoryError."""

    def __init__(self, requested, allocated, capacity, chip_name):
        self.requested, self.allocated, self.capacity = requested, allocated, capacity
        free = max(capacity - allocated, 0)
        super().__init__(
            f"TPU out of memory. Tried to allocate {format_bytes(requested)} ({requested} bytes) "
            f"on {chip_name}; {format_bytes(allocated)} ({allocated} bytes) already allocated, "
            f"{format_bytes(free)} free, total capacity {format_bytes(capacity)} ({capacity} bytes)."
        )


class HostOutOfMemory(MemoryError):
    """The host could not provide the memory behind an allocation that fits in HBM: the emulated
    chip keeps HBM contents in this machine's RAM. Nothing was allocated in HBM."""

    def __init__(self, requested, allocated, capacity, chip_name):
        self.requested = requested
        free = max(capacity - allocated, 0)
        super().__init__(
            f"Host out of memory: the host could not provide {format_bytes(requested)} ({requested} bytes) of RAM "
            f"to back an HBM allocation on {chip_name}. HBM itself is not full ({format_bytes(free)} of "
            f"{format_bytes(capacity)} free): the emulator keeps HBM contents in this machine's memory, so the "
            "host's RAM (or a limit on this process) is what ran out."
        )


def format_bytes(n):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024


BUFFERLESS_ADDRESS_BASE = 1 << 47  # far above any host mapping, so the two kinds of address never meet


def host_address(block):
    return block.address if block.__class__ is Bufferless else block.ctypes.data


class Bufferless:
    """What ``live`` holds for an allocation with no bytes: its size and an address no other has.

    ``retired`` keeps the host block of an allocation whose bytes were dropped (written in abstract
    mode) until the allocation dies, so that its address cannot be handed out again meanwhile.
    """

    __slots__ = ("nbytes", "address", "retired")

    def __init__(self, nbytes, address, retired=None):
        self.nbytes, self.address, self.retired = nbytes, address, retired


class BufferlessBlocks:
    """Where allocations take their record in bufferless mode: addresses bumped, never reused."""

    def __init__(self, reservations):
        self.next_address = BUFFERLESS_ADDRESS_BASE
        self.reservations = reservations

    def take(self, nbytes):
        self.reservations.change(nbytes, 1)
        address = self.next_address
        self.next_address += -(-nbytes // HOST_ALIGNMENT) * HOST_ALIGNMENT
        return Bufferless(nbytes, address)


class Figures:
    """One counter family's four figures, as torch.cuda.memory_stats reports them, over its ``current``,
    ``allocated`` and ``window_peak`` (kept by ``Stat``; by the HBM itself for ``LiveBytes`` and ``LiveCount``).

    Its peak is kept in two parts, so that a size class's share of it can be worked out afterwards
    (``SizeClasses``): ``window_peak``, the highest ``current`` since ``open_window`` (what each allocation
    updates), and ``earlier_peak``, the highest before. ``freed`` is not counted but derived: ``base`` (what was
    current at the last ``reset_accumulated``) and what was allocated since, less what is current."""

    __slots__ = ("earlier_peak", "base")

    def __init__(self):
        self.earlier_peak = self.base = 0

    @property
    def peak(self):
        return max(self.window_peak, self.earlier_peak)

    @property
    def freed(self):
        return self.base + self.allocated - self.current

    def open_window(self):
        """Start a new window at ``current``; the old window's peak."""
        window = self.window_peak
        self.earlier_peak = max(self.earlier_peak, window)
        self.window_peak = self.current
        return window

    def reset_peak(self):
        self.window_peak = self.earlier_peak = self.current

    def as_dict(self):
        return {"current": self.current, "peak": self.peak, "allocated": self.allocated, "freed": self.freed}


class Stat(Figures):
    """A counter family counted as it moves (``add``)."""

    __slots__ = ("current", "allocated", "window_peak")

    def __init__(self):
        super().__init__()
        self.current = self.allocated = self.window_peak = 0

    def add(self, amount):
        """Count ``amount`` more (negative: fewer), off the allocation path (which counts inline)."""
        self.current += amount
        if amount > 0:
            self.allocated += amount
            if self.current > self.window_peak:
                self.window_peak = self.current

    def reset_accumulated(self):
        self.allocated, self.base = 0, self.current


class LiveBytes(Figures):
    """``HBM.allocated_bytes``, over the HBM's own counters (``bytes_current``, ``bytes_allocated``,
    ``bytes_peak``), which the allocation path moves without looking this up."""

    __slots__ = ("hbm",)

    def __init__(self, hbm):
        super().__init__()
        self.hbm = hbm

    @property
    def current(self):
        return self.hbm.bytes_current

    @property
    def allocated(self):
        return self.hbm.bytes_allocated

    @property
    def window_peak(self):
        return self.hbm.bytes_peak

    @window_peak.setter
    def window_peak(self, value):
        self.hbm.bytes_peak = value

    def reset_accumulated(self):
        self.hbm.bytes_allocated, self.base = 0, self.current


class LiveCount(Figures):
    """``HBM.allocations``: ``current`` is the number of live allocations and ``allocated`` the number of buffer ids
    handed out since the last reset, so that an allocation only moves its peak (``HBM.count_peak``) and a free
    nothing."""

    __slots__ = ("hbm", "first_id")

    def __init__(self, hbm):
        super().__init__()
        self.hbm, self.first_id = hbm, 0

    @property
    def current(self):
        return len(self.hbm.live)

    @property
    def allocated(self):
        return self.hbm.last_id - self.first_id

    @property
    def window_peak(self):
        return self.hbm.count_peak

    @window_peak.setter
    def window_peak(self, value):
        self.hbm.count_peak = value

    def reset_accumulated(self):
        self.first_id, self.base = self.hbm.last_id, self.current


class SizeClasses:
    """torch.cuda's small pool (allocations of at most ``SMALL_SIZE`` bytes) and large pool (the rest), for one
    counter family ``every`` of all allocations.

    Only the large pool is counted, when an allocation of its joins or leaves (``change``); the small pool is
    every allocation less the large ones. Its peak follows without counting: between two large events the large
    pool's ``current`` is constant, so the small pool's highest is ``every``'s highest in that window less it."""

    def __init__(self, every):
        self.every, self.large = every, Stat()
        self.small_earlier_peak = 0  # the small pool's peak before ``every``'s window opened

    def change(self, amount):
        """A large allocation of ``amount`` (negative: freed): before ``every`` counts an allocation, after a free."""
        self.small_earlier_peak = max(self.small_earlier_peak, self.every.open_window() - self.large.current)
        self.large.add(amount)

    def small(self):
        every, large = self.every, self.large
        current = every.current - large.current
        return {"current": current, "peak": max(self.small_earlier_peak, every.window_peak - large.current),
                "allocated": every.allocated - large.allocated, "freed": every.freed - large.freed}

    def as_dict(self):
        """``{"all": ..., "small_pool": ..., "large_pool": ...}``, each torch.cuda's four figures."""
        return {"all": self.every.as_dict(), "small_pool": self.small(), "large_pool": self.large.as_dict()}

    def reset_peak(self):
        self.every.reset_peak()
        self.large.reset_peak()
        self.small_earlier_peak = self.every.current - self.large.current

    def reset_accumulated(self):
        self.every.reset_accumulated()
        self.large.reset_accumulated()


class Reservations:
    """The host blocks held for HBM, live allocations' and the cache's (torch.cuda's segments and reserved bytes),
    per pool. Counted when a block is made or dropped, never when the cache hands one out or takes one back: that is
    off the allocation path, which reuses cached blocks (a compiled program's call makes and drops a block for each
    of its planned buffers, though: ``change`` finds the four counters a block moves in one look-up)."""

    POOLS = ("all", "small_pool", "large_pool")

    def __init__(self):
        self.bytes = {pool: Stat() for pool in self.POOLS}
        self.segments = {pool: Stat() for pool in self.POOLS}
        # whether a block is large -> its counters: (bytes, its pool's bytes, segments, its pool's segments)
        self._counters = {large: (self.bytes["all"], self.bytes[pool], self.segments["all"], self.segments[pool])
                          for large, pool in ((False, "small_pool"), (True, "large_pool"))}

    def change(self, nbytes, blocks):
        """``blocks`` blocks of ``nbytes`` each made (negative: dropped)."""
        all_bytes, pool_bytes, all_segments, pool_segments = self._counters[nbytes > SMALL_SIZE]
        if blocks < 0:  # only ``current`` falls (``freed`` is derived from it): no ``Stat.add`` frames
            all_bytes.current += nbytes * blocks
            pool_bytes.current += nbytes * blocks
            all_segments.current += blocks
            pool_segments.current += blocks
        else:
            all_bytes.add(nbytes * blocks)
            pool_bytes.add(nbytes * blocks)
            all_segments.add(blocks)
            pool_segments.add(blocks)

    def stats(self):
        return [*self.bytes.values(), *self.segments.values()]


class Buffer:
    """Device bytes behind one storage: a NumPy ``array`` over them (None for an allocation without bytes, in
    bufferless mode), their ``nbytes``, the ``allocator`` (an ``HBM``) and the allocation's ``id``. This one is an
    allocation of no bytes: nothing allocated, nothing to free."""

    __slots__ = ("array", "nbytes", "allocator", "id")

    def __init__(self):
        self.array, self.nbytes, self.allocator, self.id = _NO_BYTES, 0, None, -1


class AllocatedBuffer(Buffer):
    """A Buffer of HBM bytes, freed when the last reference (the storage) drops it: its ``__del__`` is
    ``HBM.release``. Made by ``HBM.allocate``, which sets its four attributes itself: an ``__init__`` frame would
    cost as much as the rest."""

    __slots__ = ()


_bare_buffer = functools.partial(object.__new__, AllocatedBuffer)  # a Buffer whose attributes its maker sets


def aligned_block(nbytes):
    """``nbytes`` of fresh host memory starting at a multiple of ``HOST_ALIGNMENT`` (NumPy aligns to 16 bytes)."""
    raw = np.empty(nbytes + HOST_ALIGNMENT, dtype=np.uint8)
    start = -raw.ctypes.data % HOST_ALIGNMENT
    return raw[start:start + nbytes]


class HostPool:
    """Aligned host blocks, reused by exact size. ``HBM`` hands a cached block out and takes a freed one back itself
    (``cached``, ``limit``): every allocation and free passes there; ``make`` is the rest. Nothing counts the bytes
    cached on that path: they are the reserved bytes less the allocated ones (``HBM.release``). A block larger than
    ``POOL_BLOCK_LIMIT`` is never cached (``HBM.unpooled``)."""

    def __init__(self, reservations):
        self.cached = collections.defaultdict(list)  # nbytes -> the cached blocks of that size
        self.reservations = reservations  # counts the blocks made and dropped
        self.limit = POOL_TOTAL_LIMIT  # the bytes it may cache; -1 while the cache is off

    @property
    def enabled(self):
        """False: freed blocks go straight back (torch.tpu.caching_allocator_enable(False))."""
        return self.limit >= 0

    @enabled.setter
    def enabled(self, enabled):
        self.limit = POOL_TOTAL_LIMIT if enabled else -1

    @property
    def cached_bytes(self):
        return sum(nbytes * len(blocks) for nbytes, blocks in self.cached.items())

    def make(self, nbytes):
        """A fresh block, where none of its size is cached."""
        block = aligned_block(nbytes)
        self.reservations.change(nbytes, 1)
        return block

    def clear(self):
        for nbytes, blocks in self.cached.items():
            self.reservations.change(nbytes, -len(blocks))
        self.cached.clear()


_NOTHING_CACHED = MappingProxyType({})  # the cached blocks a bufferless allocation may take: none


class HBM:
    def __init__(self, capacity, chip_name, events=None):
        self.capacity = capacity
        self.chip_name = chip_name
        self.events = events if events is not None else EventLog()
        self._log = self.events.append_raw
        self.reservations = Reservations()
        self.pool = HostPool(self.reservations)
        # ids of the live allocations whose host blocks are not the pool's (``rehome`` moved them, or ``allocate``
        # was given them) or that have none (bufferless): not pooled when freed
        self.unpooled = set()
        self.bufferless_blocks = BufferlessBlocks(self.reservations)
        # where a new allocation gets its host block: first a cached one of its size (``reusable``), else
        # ``take_block`` makes one (both swapped while bufferless, ``set_bufferless``)
        self.reusable, self.take_block = self.pool.cached, self.pool.make
        self.reserved = self.reservations.bytes["all"]  # every live allocation's block and the pool's cached ones
        self.live = {}  # buffer id -> host block, for every live allocation
        self.last_id = 0  # the last buffer id handed out
        # the allocated bytes (``allocated_bytes``) and the allocations' peak count, kept here for the allocation path
        self.bytes_current = self.bytes_allocated = self.bytes_peak = self.count_peak = 0
        self.allocated_bytes, self.allocations = LiveBytes(self), LiveCount(self)
        self.bytes_by_pool, self.allocations_by_pool = SizeClasses(self.allocated_bytes), SizeClasses(self.allocations)
        self.num_ooms = 0
        self.history = None  # a trace.MemoryHistory while history recording is on

    def allocate(self, nbytes, home=None):
        """A new allocation of ``nbytes``, backed by a pooled host block or, with ``home``, by that block of
        ``nbytes`` its caller owns and reuses (a compiled program's planned buffer, whose NumPy views it makes
        once): counted as every allocation, never pooled. Not in bufferless mode, where no program runs.

        Every kernel's output comes here and every Python call would cost as much as the work it does, so the pool
        is read, the counters moved and the AllocatedBuffer made inline; the allocation count moves by itself
        (``live``)."""
        if nbytes <= 0:
            if nbytes < 0:
                raise ValueError(f"cannot allocate a negative number of bytes: {nbytes}")
            return Buffer()
        current = self.bytes_current + nbytes
        if current > self.capacity:
            self.num_ooms += 1
            self.events.record("oom", -1, nbytes, self.bytes_current)
            if self.history is not None:
                self.history.oom(nbytes, max(self.capacity - self.bytes_current, 0))
            raise HBMOutOfMemory(nbytes, self.bytes_current, self.capacity, self.chip_name)
        if home is None:
            try:
                block = self.reusable[nbytes].pop()
            except (IndexError, KeyError):  # none of its size cached (or, bufferless, none to take)
                try:
                    block = self.take_block(nbytes)
                except MemoryError:  # before any counter moves: the accounting stays exact
                    raise HostOutOfMemory(nbytes, self.bytes_current, self.capacity, self.chip_name) from None
            self.last_id = buffer_id = self.last_id + 1
        else:
            block = home
            self.last_id = buffer_id = self.last_id + 1
            self.unpooled.add(buffer_id)
            self.reservations.change(nbytes, 1)
        live = self.live
        if nbytes > SMALL_SIZE:  # before the counters move: the small pool's peak is read off their window
            self.bytes_by_pool.change(nbytes)
            self.allocations_by_pool.change(1)
            if nbytes > POOL_BLOCK_LIMIT:  # its block goes straight back to the OS when freed
                self.unpooled.add(buffer_id)
        self.bytes_current = current
        self.bytes_allocated += nbytes
        if current > self.bytes_peak:
            self.bytes_peak = current
        live[buffer_id] = block
        if len(live) > self.count_peak:
            self.count_peak = len(live)
        self._log(("alloc", _now_ns(), buffer_id, nbytes, current))
        if self.history is not None:
            self.history.alloc(host_address(block), nbytes)
        buffer = _bare_buffer()
        if block.__class__ is Bufferless:  # no bytes (bufferless mode): nothing to pool when freed
            self.unpooled.add(buffer_id)
            buffer.array = None
        else:
            buffer.array = block
        buffer.nbytes = nbytes
        buffer.allocator = self
        buffer.id = buffer_id
        return buffer

    @staticmethod
    def release(buffer):
        """Free ``buffer``'s allocation in its HBM: its block back to the pool's cache, or dropped. Every
        AllocatedBuffer's ``__del__``, so that a free costs one Python frame."""
        hbm = buffer.allocator
        nbytes = buffer.nbytes
        hbm.bytes_current = current = hbm.bytes_current - nbytes
        buffer_id = buffer.id
        block = hbm.live.pop(buffer_id)
        if nbytes > SMALL_SIZE:  # after the counters move, as an allocation's count before they do
            hbm.bytes_by_pool.change(-nbytes)
            hbm.allocations_by_pool.change(-1)
        if hbm.history is not None:
            hbm.history.free(host_address(block), nbytes)
        if hbm.unpooled and buffer_id in hbm.unpooled:
            # a part of a compiled program's flat array (``rehome``), or a program's own block: pooled, the next
            # allocation of its size would share it with that program, or keep its whole array alive; or no block
            hbm.unpooled.discard(buffer_id)
            hbm.reservations.change(nbytes, -1)
        elif hbm.reserved.current - current <= hbm.pool.limit:
            # cached while the cache is on and has room: it holds the reserved bytes not allocated, this block's too
            hbm.pool.cached[nbytes].append(block)
        else:
            hbm.reservations.change(nbytes, -1)
        hbm._log(("free", _now_ns(), buffer_id, nbytes, current))

    def lose(self, error):
        """Refuse every allocation from now on, raising ``error()``: the chip is lost to this process (a forked
        child's copy of its parent's), and whoever kept this HBM (``_tensor``, compiled programs) must not use it."""
        def refuse(nbytes, home=None):
            raise error()
        self.allocate = refuse

    def log_also_to(self, observer=None):
        """Hand every event tuple to ``observer`` too (a profiler attributing bytes to ops), or, with None, to the
        event log alone again: swapped in, so that the allocation path pays nothing while nobody observes."""
        append = self.events.append_raw
        if observer is None:
            self._log = append
        else:
            def log(event):
                append(event)
                observer(event)
            self._log = log

    @property
    def bufferless(self):
        return self.take_block == self.bufferless_blocks.take

    def set_bufferless(self, bufferless):
        """From now on, allocate without host memory (True) or with it (False)."""
        if bufferless:
            self.reusable, self.take_block = _NOTHING_CACHED, self.bufferless_blocks.take
        else:
            self.reusable, self.take_block = self.pool.cached, self.pool.make

    def drop_bytes(self, buffer):
        """Forget the values of a live allocation (written while bufferless): it stays allocated, unreadable."""
        block = buffer.array
        if block is None or not buffer.nbytes:
            return
        self.live[buffer.id] = Bufferless(buffer.nbytes, host_address(block), retired=block)
        self.unpooled.add(buffer.id)
        buffer.array = None

    def rehome(self, buffer, block):
        """Back the live allocation ``buffer`` by the host memory ``block`` (of its size), its bytes copied there, and
        say whether it moved. Nothing is allocated or freed: the counters and the event log stay as they are; only
        its address changes. A compiled program lays the buffers it updates together side by side this way
        (compile/batching.py, ``Colocation``). The old block is dropped, not pooled: views of it may still exist; nor is the new one when freed.
        Not while history is recorded (its frees must name the addresses its allocations did)."""
        if self.history is not None or buffer.array is None or block.nbytes != buffer.nbytes or \
                self.live.get(buffer.id) is not buffer.array:
            return False
        block[...] = buffer.array
        self.live[buffer.id] = buffer.array = block
        self.unpooled.add(buffer.id)
        return True

    def address(self, buffer):
        """The address of a live allocation, with or without bytes."""
        return host_address(buffer.array if buffer.array is not None else self.live[buffer.id])

    @property
    def reserved_bytes(self):
        return self.reserved.current

    def empty_cache(self):
        self.pool.clear()

    def reset_peak_stats(self):
        self.bytes_by_pool.reset_peak()
        self.allocations_by_pool.reset_peak()
        for stat in self.reservations.stats():
            stat.reset_peak()

    def reset_accumulated_stats(self):
        self.bytes_by_pool.reset_accumulated()
        self.allocations_by_pool.reset_accumulated()
        for stat in self.reservations.stats():
            stat.reset_accumulated()
        self.num_ooms = 0


AllocatedBuffer.__del__ = HBM.release
