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


class Stat:
    """One counter family, as torch.cuda.memory_stats reports it.

    Its peak is kept in two parts, so that a size class's share of it can be worked out afterwards
    (``SizeClasses``): ``window_peak``, the highest ``current`` since ``open_window`` (what each allocation
    updates), and ``earlier_peak``, the highest before."""

    __slots__ = ("current", "window_peak", "earlier_peak", "allocated", "freed")

    def __init__(self):
        self.current = self.window_peak = self.earlier_peak = self.allocated = self.freed = 0

    @property
    def peak(self):
        return max(self.window_peak, self.earlier_peak)

    def open_window(self):
        """Start a new window at ``current``; the old window's peak."""
        window = self.window_peak
        self.earlier_peak = max(self.earlier_peak, window)
        self.window_peak = self.current
        return window

    def add(self, amount):
        """Count ``amount`` more (negative: fewer), off the allocation path (which counts inline)."""
        self.current += amount
        if amount > 0:
            self.allocated += amount
            self.window_peak = max(self.window_peak, self.current)
        else:
            self.freed -= amount

    def reset_peak(self):
        self.window_peak = self.earlier_peak = self.current

    def reset_accumulated(self):
        self.allocated = self.freed = 0

    def as_dict(self):
        return {"current": self.current, "peak": self.peak, "allocated": self.allocated, "freed": self.freed}


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
    off the allocation path, which reuses cached blocks."""

    POOLS = ("all", "small_pool", "large_pool")

    def __init__(self):
        self.bytes = {pool: Stat() for pool in self.POOLS}
        self.segments = {pool: Stat() for pool in self.POOLS}

    def change(self, nbytes, blocks):
        """``blocks`` blocks of ``nbytes`` each made (negative: dropped)."""
        pool = "large_pool" if nbytes > SMALL_SIZE else "small_pool"
        for stats, amount in ((self.bytes, nbytes * blocks), (self.segments, blocks)):
            stats["all"].add(amount)
            stats[pool].add(amount)

    def stats(self):
        return [*self.bytes.values(), *self.segments.values()]


class Buffer:
    """Device bytes behind one storage. Freed when the last reference (the storage) drops it.

    ``array`` is None for an allocation without bytes (bufferless mode)."""

    __slots__ = ("array", "nbytes", "allocator", "id")

    def __init__(self, array, nbytes, allocator, buffer_id):
        self.array, self.nbytes, self.allocator, self.id = array, nbytes, allocator, buffer_id

    def __del__(self):
        if self.allocator is not None:
            self.allocator.release(self)


def aligned_block(nbytes):
    """``nbytes`` of fresh host memory starting at a multiple of ``HOST_ALIGNMENT`` (NumPy aligns to 16 bytes)."""
    raw = np.empty(nbytes + HOST_ALIGNMENT, dtype=np.uint8)
    start = -raw.ctypes.data % HOST_ALIGNMENT
    return raw[start:start + nbytes]


class HostPool:
    """Aligned host blocks, reused by exact size."""

    def __init__(self, reservations):
        self._free = collections.defaultdict(list)
        self.cached_bytes = 0
        self.reservations = reservations  # counts the blocks made and dropped
        self.enabled = True  # False: freed blocks go straight back (torch.tpu.caching_allocator_enable(False))

    def take(self, nbytes):
        blocks = self._free.get(nbytes)
        if blocks:
            self.cached_bytes -= nbytes
            return blocks.pop()
        block = aligned_block(nbytes)
        self.reservations.change(nbytes, 1)
        return block

    def give_back(self, block, nbytes):
        """Keep ``block`` (of ``nbytes``, which the caller knows: a NumPy attribute read costs as much as this)."""
        if self.enabled and nbytes <= POOL_BLOCK_LIMIT and self.cached_bytes + nbytes <= POOL_TOTAL_LIMIT:
            self._free[nbytes].append(block)
            self.cached_bytes += nbytes
        else:
            self.reservations.change(nbytes, -1)

    def clear(self):
        for nbytes, blocks in self._free.items():
            self.reservations.change(nbytes, -len(blocks))
        self._free.clear()
        self.cached_bytes = 0


class HBM:
    def __init__(self, capacity, chip_name, events=None):
        self.capacity = capacity
        self.chip_name = chip_name
        self.events = events if events is not None else EventLog()
        self._log = self.events.append_raw
        self.reservations = Reservations()
        self.pool = HostPool(self.reservations)
        # ids of the live allocations whose host blocks are not the pool's (``rehome`` moved them, or ``allocate``
        # was given them): not pooled when freed
        self.unpooled = set()
        self.bufferless_blocks = BufferlessBlocks(self.reservations)
        self.take_block = self.pool.take  # where new allocations get their host block
        self.allocated_bytes = Stat()
        self.allocations = Stat()
        self.bytes_by_pool, self.allocations_by_pool = SizeClasses(self.allocated_bytes), SizeClasses(self.allocations)
        self.num_ooms = 0
        self.live = {}  # buffer id -> host block, for every live allocation
        self.history = None  # a trace.MemoryHistory while history recording is on
        self._next_id = 0

    def allocate(self, nbytes, home=None):
        """A new allocation of ``nbytes``, backed by a pooled host block or, with ``home``, by that block of
        ``nbytes`` its caller owns and reuses (a compiled program's planned buffer, whose NumPy views it makes
        once): counted as every allocation, never pooled. Not in bufferless mode, where no program runs."""
        if nbytes <= 0:
            if nbytes < 0:
                raise ValueError(f"cannot allocate a negative number of bytes: {nbytes}")
            return Buffer(_NO_BYTES, 0, None, -1)
        allocated = self.allocated_bytes
        if allocated.current + nbytes > self.capacity:
            self.num_ooms += 1
            self.events.record("oom", -1, nbytes, allocated.current)
            if self.history is not None:
                self.history.oom(nbytes, max(self.capacity - allocated.current, 0))
            raise HBMOutOfMemory(nbytes, allocated.current, self.capacity, self.chip_name)
        try:
            block = self.take_block(nbytes) if home is None else home
        except MemoryError:  # before any counter moves: the accounting stays exact
            raise HostOutOfMemory(nbytes, allocated.current, self.capacity, self.chip_name) from None
        self._next_id = buffer_id = self._next_id + 1
        if home is not None:
            self.unpooled.add(buffer_id)
            self.reservations.change(nbytes, 1)
        if nbytes > SMALL_SIZE:  # before the counters move: the small pool's peak is read off their window
            self.bytes_by_pool.change(nbytes)
            self.allocations_by_pool.change(1)
        # both counters and the event log updated inline, not through methods: this runs for every
        # kernel's output, and each Python call would cost as much as the work it does
        allocated.current += nbytes
        allocated.allocated += nbytes
        if allocated.current > allocated.window_peak:
            allocated.window_peak = allocated.current
        count = self.allocations
        count.current += 1
        count.allocated += 1
        if count.current > count.window_peak:
            count.window_peak = count.current
        self._log(("alloc", _now_ns(), buffer_id, nbytes, allocated.current))
        self.live[buffer_id] = block
        if self.history is not None:
            self.history.alloc(host_address(block), nbytes)
        return Buffer(block if block.__class__ is not Bufferless else None, nbytes, self, buffer_id)

    def release(self, buffer):
        nbytes = buffer.nbytes
        allocated = self.allocated_bytes
        allocated.current -= nbytes
        allocated.freed += nbytes
        count = self.allocations
        count.current -= 1
        count.freed += 1
        if nbytes > SMALL_SIZE:
            self.bytes_by_pool.change(-nbytes)
            self.allocations_by_pool.change(-1)
        buffer_id = buffer.id
        block = self.live.pop(buffer_id)
        if self.history is not None:
            self.history.free(host_address(block), nbytes)
        if self.unpooled and buffer_id in self.unpooled:
            # a part of a compiled program's flat array (``rehome``), or a program's own block: pooled, the next
            # allocation of its size would share it with that program, or keep its whole array alive
            self.unpooled.discard(buffer_id)
            self.reservations.change(nbytes, -1)
        elif block.__class__ is not Bufferless:
            self.pool.give_back(block, nbytes)
        else:
            self.reservations.change(nbytes, -1)
        self._log(("free", _now_ns(), buffer_id, nbytes, allocated.current))

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
        self.take_block = self.bufferless_blocks.take if bufferless else self.pool.take

    def drop_bytes(self, buffer):
        """Forget the values of a live allocation (written while bufferless): it stays allocated, unreadable."""
        block = buffer.array
        if block is None or not buffer.nbytes:
            return
        self.live[buffer.id] = Bufferless(buffer.nbytes, host_address(block), retired=block)
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
        return self.allocated_bytes.current + self.pool.cached_bytes

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
