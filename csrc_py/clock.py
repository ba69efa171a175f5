"""The roofline clock: how long each kernel would take on the real chip.

A kernel's simulated time is

    max(sum over MXU input types of flops / peak[type], (bytes read + written) / HBM bandwidth)
    + LAUNCH_OVERHEAD_SECONDS

Peaks come from the chip table. A float32 matmul runs as bf16 passes on the MXU, so its
peak is the bf16 peak divided by the number of passes (1 for "medium", 3 for "high", 6 for
"highest", the precision a TPU needs to match float32). Input types with no MXU path on the
chip (float16, float64, complex, integers, int8 on Ironwood) are charged like float32 at six
passes: XLA upcasts them and runs the HIGHEST-precision float32 algorithm.
VPU element operations are counted and reported but not timed on their own: elementwise
work is bound by HBM traffic on every TPU generation in the table.

The host is modelled as infinitely fast: kernels on one stream run back to back, a stream
that has nothing to do is idle, and a new stream starts at the last point the host waited
for the device (``synchronize``). Each chip keeps per-kernel-name totals from process start,
which ``torch_tpu.report()`` and ``python -m torch_tpu.smi`` read.

Collectives run over the ICI on streams of their own, one per process group (as NCCL gives each
communicator a stream): a collective starts once the stream that issued it has finished the work
before it, and takes the time ``csrc_py/ici.py`` gives it. Compute streams go on meanwhile; they
wait for it only when asked (``work.wait()``), so communication overlaps computation.
"""

import dataclasses

from .trace import now_ns

# Fixed cost of every kernel launch on top of its roofline time: issuing the program, filling
# the MXU/VPU pipelines and the DMA round trip for the first tile. About one microsecond is
# what a tiny fused XLA op costs on a TPU; it is what makes thousands of small kernels slow.
LAUNCH_OVERHEAD_SECONDS = 1e-6
FLOAT32_DEFAULT_PASSES = 6
PROGRESS_EVERY_KERNELS = 1000  # how often progress hooks (the smi publisher) are called
COLLECTIVE_STREAM_BASE = 1 << 32  # ids of collective streams, clear of torch.tpu.Stream's


@dataclasses.dataclass(slots=True)
class KernelCost:
    name: str
    mxu_flops: dict = dataclasses.field(default_factory=dict)  # input type name -> FLOPs
    vpu_ops: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    shapes: tuple = ()
    float32_passes: int = FLOAT32_DEFAULT_PASSES
    dtypes: tuple = ()  # element type names of the tensor inputs (filled in when profiling)

    @property
    def flops(self):
        return sum(self.mxu_flops.values())

    @property
    def bytes(self):
        return self.bytes_read + self.bytes_written


@dataclasses.dataclass(slots=True)
class CollectiveCost(KernelCost):
    """A collective over the ICI: it moves ``ici_bytes`` (V, the whole array) over torus ``axes``."""

    ici_bytes: int = 0
    seconds: float = 0.0
    axes: tuple = ()  # e.g. ("x:4 ring", "y:2 line")
    algorithm: str = ""
    group: str = ""


@dataclasses.dataclass(slots=True)
class KernelRecord:
    cost: KernelCost
    stream: int
    start: float  # simulated seconds
    end: float
    host_start_ns: int = 0  # host wall clock around the emulated kernel (perf_counter_ns)
    host_end_ns: int = 0
    thread: int = 0

    @property
    def seconds(self):
        return self.end - self.start


@dataclasses.dataclass(slots=True)
class OpTotals:
    """Everything the launches of one kernel name have cost."""

    count: int = 0
    seconds: float = 0.0  # simulated device time, launch overhead included
    compute_seconds: float = 0.0  # MXU time at peak
    flops: int = 0
    bytes: int = 0
    host_seconds: float = 0.0  # emulation wall time (profiled launches only)

    def add(self, seconds, compute, nbytes, flops):
        self.count += 1
        self.seconds += seconds
        self.compute_seconds += compute
        self.bytes += nbytes
        self.flops += flops

    def minus(self, earlier):
        return OpTotals(*(getattr(self, f) - getattr(earlier, f) for f in OpTotals.__slots__))

    def copy(self):
        return OpTotals(*(getattr(self, f) for f in OpTotals.__slots__))


def mxu_peak(spec, type_name, float32_passes=FLOAT32_DEFAULT_PASSES):
    """FLOP/s the MXU reaches for ``type_name`` inputs."""
    if type_name in spec.peak_flops:
        return spec.peak_flops[type_name]
    passes = float32_passes if type_name == "float32" else FLOAT32_DEFAULT_PASSES
    return spec.peak_flops["bfloat16"] / passes


def ridge_point(spec, type_name="bfloat16", float32_passes=FLOAT32_DEFAULT_PASSES):
    """FLOP/byte above which a kernel with ``type_name`` inputs is compute-bound."""
    return mxu_peak(spec, type_name, float32_passes) / spec.hbm_bandwidth


def mxu_seconds(mxu_flops, float32_passes, spec):
    """Seconds of MXU work: the FLOPs of each input type at the MXU's peak for that type."""
    return sum(flops / mxu_peak(spec, name, float32_passes) for name, flops in mxu_flops.items())


def compute_seconds(cost, spec):
    return mxu_seconds(cost.mxu_flops, cost.float32_passes, spec)


def memory_seconds(cost, spec):
    return (cost.bytes_read + cost.bytes_written) / spec.hbm_bandwidth


def kernel_seconds(cost, spec):
    return max(compute_seconds(cost, spec), memory_seconds(cost, spec)) + LAUNCH_OVERHEAD_SECONDS


class Clock:
    """Simulated device time per stream, and running totals for monitors and reports."""

    def __init__(self, spec):
        self.spec = spec
        self.stream_seconds = {}
        self.host_seconds = 0.0  # the latest device time the host has waited for
        self.op_totals = {}  # kernel name -> OpTotals since process start
        self.kernels_run = 0
        self.recorders = []  # lists that profilers hand in to receive KernelRecords
        self.progress_hooks = []  # called every PROGRESS_EVERY_KERNELS kernels
        self.current_stream = 0
        self._next_progress = PROGRESS_EVERY_KERNELS
        self.stream_names = {}  # labels of the streams torch.tpu did not create (collective streams)
        self.collective_totals = {}  # collective name -> OpTotals (seconds on the ICI, bytes moved)
        self._peaks, self._peaks_of = {}, None  # (input type, float32 passes) -> MXU peak, for the chip ``_peaks_of``

    @property
    def busy_seconds(self):
        return sum(t.seconds for t in self.op_totals.values())

    @property
    def total_flops(self):
        return sum(t.flops for t in self.op_totals.values())

    def now(self, stream=0):
        return self.stream_seconds.get(stream, self.host_seconds)

    def device_now(self):
        return max(self.host_seconds, *self.stream_seconds.values()) if self.stream_seconds else self.host_seconds

    def charge(self, cost, stream=0, host_start_ns=0, host_end_ns=0, thread=0):
        """Run ``cost`` on ``stream``; returns (start, end) in simulated seconds."""
        compute = compute_seconds(cost, self.spec) if cost.mxu_flops else 0.0
        flops = cost.flops if cost.mxu_flops else 0
        start, end = self.advance(cost.name, cost.bytes_read + cost.bytes_written, stream, compute, flops)
        if self.recorders:
            record = KernelRecord(cost, stream, start, end, host_start_ns, host_end_ns, thread)
            for recorder in self.recorders:
                recorder.append(record)
        return start, end

    def advance_mxu(self, name, nbytes, mxu_flops, float32_passes, stream=0):
        """``advance`` for a kernel with MXU work (FLOPs by input type), as ``charge`` charges its KernelCost:
        ``mxu_seconds``' sum, term by term in the same order, of peaks looked up once per chip, input type and
        float32 passes (every ``mm``, ``addmm`` and ``bmm`` launch comes here)."""
        if self._peaks_of is not self.spec:  # a new clock, or its chip became another (``Chip.become``)
            self._peaks, self._peaks_of = {}, self.spec
        compute = flops = 0
        for type_name, type_flops in mxu_flops.items():
            peak = self._peaks.get((type_name, float32_passes))
            if peak is None:
                peak = self._peaks[type_name, float32_passes] = mxu_peak(self.spec, type_name, float32_passes)
            compute += type_flops / peak
            flops += type_flops
        return self.advance(name, nbytes, stream, compute, flops)

    def advance(self, name, nbytes, stream=0, compute=0.0, flops=0):
        """Run kernel ``name`` moving ``nbytes`` of HBM traffic (and ``compute`` seconds of MXU work).

        Called directly, with no KernelCost built, for the many launches without MXU work while
        nothing records (recorders need the full cost: use ``charge``)."""
        # kernel_seconds and OpTotals.add, written out: this runs on every launch
        memory = nbytes / self.spec.hbm_bandwidth
        seconds = (compute if compute > memory else memory) + LAUNCH_OVERHEAD_SECONDS
        start = self.stream_seconds.get(stream, self.host_seconds)
        end = self.stream_seconds[stream] = start + seconds
        totals = self.op_totals.get(name)
        if totals is None:
            totals = self.op_totals[name] = OpTotals()
        totals.count += 1
        totals.seconds += seconds
        totals.bytes += nbytes
        if compute:  # most launches move bytes alone: their zeros are not added
            totals.compute_seconds += compute
            totals.flops += flops
        self.kernels_run += 1
        if self.kernels_run >= self._next_progress:
            self._progress()
        return start, end

    def program_cost(self, kernels):
        """What a compiled program's ``kernels`` (KernelCosts, run back to back) add to the clock, summed
        once when the program is built: (seconds, kernel count, {name: OpTotals})."""
        totals, seconds = {}, 0.0
        for cost in kernels:
            compute = compute_seconds(cost, self.spec) if cost.mxu_flops else 0.0
            kernel = kernel_seconds(cost, self.spec)
            totals.setdefault(cost.name, OpTotals()).add(kernel, compute, cost.bytes, cost.flops)
            seconds += kernel
        return seconds, len(kernels), totals

    def run_program(self, program_cost, stream=0):
        """Run a compiled program's kernels on ``stream``: the clock ends where launching them one by one
        (``advance``) would end it, in one step. Profilers need each kernel's record: they use ``charge``."""
        seconds, count, totals = program_cost
        start = self.stream_seconds.get(stream, self.host_seconds)
        self.stream_seconds[stream] = start + seconds
        for name, added in totals.items():
            mine = self.op_totals.get(name)
            if mine is None:
                mine = self.op_totals[name] = OpTotals()
            mine.count += added.count
            mine.seconds += added.seconds
            mine.compute_seconds += added.compute_seconds
            mine.bytes += added.bytes
            mine.flops += added.flops
        self.kernels_run += count
        if self.kernels_run >= self._next_progress:
            self._progress()

    def collective_stream(self, label):
        """A new stream for the collectives of one process group, named ``label`` in traces."""
        stream = COLLECTIVE_STREAM_BASE + len(self.stream_names)
        self.stream_names[stream] = label
        return stream

    def charge_collective(self, cost, stream, issued_on):
        """Run collective ``cost`` on ``stream`` once ``issued_on`` has finished the work issued before it."""
        start = max(self.now(stream), self.now(issued_on))
        end = self.stream_seconds[stream] = start + cost.seconds
        key = f"{cost.name} [{cost.group}]" if cost.group else cost.name
        totals = self.collective_totals.get(key)
        if totals is None:
            totals = self.collective_totals[key] = OpTotals()
        totals.add(cost.seconds, 0.0, cost.ici_bytes, 0)
        if self.recorders:
            issued = now_ns()  # on the host a collective is only issued: a zero-length moment
            record = KernelRecord(cost, stream, start, end, issued, issued)
            for recorder in self.recorders:
                recorder.append(record)
        return start, end

    def _progress(self):
        self._next_progress = self.kernels_run + PROGRESS_EVERY_KERNELS
        for hook in self.progress_hooks:
            hook(self)

    def wait(self, stream, until):
        """Make ``stream`` wait for a point in simulated time (an event on another stream)."""
        if until > self.now(stream):
            self.stream_seconds[stream] = until

    def synchronize(self, stream=None):
        """The host waits for ``stream`` (or every stream); returns the time it waited for."""
        now = self.device_now() if stream is None else self.now(stream)
        self.host_wait(now)
        return now

    def host_wait(self, until):
        """The host blocks until ``until``: nothing it issues afterwards starts earlier."""
        if until <= self.host_seconds:
            return
        self.host_seconds = until
        for stream, time in self.stream_seconds.items():
            if time < until:
                self.stream_seconds[stream] = until

    def totals_snapshot(self):
        return {name: totals.copy() for name, totals in self.op_totals.items()}

    def collective_totals_snapshot(self):
        return {name: totals.copy() for name, totals in self.collective_totals.items()}
