"""The roofline clock: how long each kernel would take on the real chip.

A kernel's simulated time is

    max(sum over MXU input types of flops / peak[type], (bytes read + written) / HBM bandwidth)
    + LAUNCH_OVERHEAD_SECONDS

Peaks come from the chip table. A float32 matmul runs as bf16 passes on the MXU, so its
peak is the bf16 peak divided by the number of passes (one pass for the exact-float32 mode
is not available on hardware; we charge it as six, the HIGHEST precision a TPU offers).
float16 and float64 have no MXU path and are charged as float32 at six passes.
VPU element operations are counted and reported but not timed on their own: elementwise
work is bound by HBM traffic on every TPU generation in the table.

Each stream keeps its own time; kernels on a stream run back to back.
"""

import dataclasses

LAUNCH_OVERHEAD_SECONDS = 1e-6  # fixed per-kernel cost: issue, pipeline fill, sync
FLOAT32_DEFAULT_PASSES = 6


@dataclasses.dataclass(slots=True)
class KernelCost:
    name: str
    mxu_flops: dict = dataclasses.field(default_factory=dict)  # input type name -> FLOPs
    vpu_ops: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    shapes: tuple = ()
    float32_passes: int = FLOAT32_DEFAULT_PASSES

    @property
    def flops(self):
        return sum(self.mxu_flops.values())

    @property
    def bytes(self):
        return self.bytes_read + self.bytes_written


@dataclasses.dataclass(slots=True)
class KernelRecord:
    cost: KernelCost
    stream: int
    start: float  # simulated seconds
    end: float

    @property
    def seconds(self):
        return self.end - self.start


def mxu_peak(spec, type_name, float32_passes=FLOAT32_DEFAULT_PASSES):
    if type_name in spec.peak_flops:
        return spec.peak_flops[type_name]
    if type_name in ("float32", "float16", "float64", "complex64", "complex128"):
        passes = float32_passes if type_name == "float32" else FLOAT32_DEFAULT_PASSES
        return spec.peak_flops["bfloat16"] / passes
    raise ValueError(f"{spec.name} has no MXU path for {type_name} inputs")


def compute_seconds(cost, spec):
    return sum(flops / mxu_peak(spec, name, cost.float32_passes) for name, flops in cost.mxu_flops.items())


def memory_seconds(cost, spec):
    return cost.bytes / spec.hbm_bandwidth


def kernel_seconds(cost, spec):
    return max(compute_seconds(cost, spec), memory_seconds(cost, spec)) + LAUNCH_OVERHEAD_SECONDS


class Clock:
    """Simulated device time per stream, and running totals for monitors and reports."""

    def __init__(self, spec):
        self.spec = spec
        self.stream_seconds = {}
        self.kernels_run = 0
        self.busy_seconds = 0.0
        self.total_flops = 0
        self.recorders = []  # lists that profilers hand in to receive KernelRecords
        self.current_stream = 0

    def now(self, stream=0):
        return self.stream_seconds.get(stream, 0.0)

    def device_now(self):
        return max(self.stream_seconds.values(), default=0.0)

    def charge(self, cost, stream=0):
        """Run ``cost`` on ``stream``; returns (start, end) in simulated seconds."""
        seconds = kernel_seconds(cost, self.spec)
        start = self.stream_seconds.get(stream, 0.0)
        end = start + seconds
        self.stream_seconds[stream] = end
        self.kernels_run += 1
        self.busy_seconds += seconds
        self.total_flops += cost.flops
        if self.recorders:
            record = KernelRecord(cost, stream, start, end)
            for recorder in self.recorders:
                recorder.append(record)
        return start, end

    def wait(self, stream, until):
        """Make ``stream`` wait for a point in simulated time (an event on another stream)."""
        if until > self.now(stream):
            self.stream_seconds[stream] = until

    def synchronize(self):
        now = self.device_now()
        for stream in self.stream_seconds:
            self.stream_seconds[stream] = now
        return now
