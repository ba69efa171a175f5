"""The inter-chip interconnect (ICI): the torus a slice's chips form, and what a collective costs on it.

The cost formulas are those of "How to Scale Your Model" (Austin et al., 2025), chapter "Sharded
Matrices" (https://jax-ml.github.io/scaling-book/sharding/). Notation:

- ``V``: bytes of the whole array the collective works on: the gathered output of an all-gather,
  the (unreduced) input of a reduce-scatter or all-reduce, the global array of an all-to-all;
- an axis of ``X`` chips, closed into a ring by wraparound links or open (a line);
- ``W``: the bidirectional bandwidth of **one link** (chip table: ``ici_link_bandwidth_bidi``),
  ``W_uni = W / 2`` one way;
- ``T_min``: the fixed cost of one hop, about 1 us.

All-gather along one axis: every hop moves one shard (``V / X``) each way, so it takes
``hops * max(T_min, V / (X * W_uni))`` with ``X // 2`` hops around a ring (both directions at once)
and ``X - 1`` along a line. Bandwidth-bound on an even ring that is ``V / W``, whatever ``X``; on a
line it is about twice as long. Over several axes at once the links of every axis work in parallel:
``max(T_min * sum(hops), V / sum(W_axis))`` with ``W_axis = X * W_uni / hops`` (``W`` on an even ring:
the book's ``V / (W * n_axes)``). A reduce-scatter costs the same as the all-gather of its input, an
all-reduce twice that (a reduce-scatter then an all-gather), an all-to-all a quarter of it on a ring
(half on a line: nothing travels the other way). The collectives the book does not treat are charged
as their busiest links make them: broadcast, reduce, scatter and gather as an all-gather of their
bytes (the root's links carry all of them), a point-to-point transfer as ``max(T_min * hops, V /
W_uni)`` over the torus distance, a barrier as an all-reduce of nothing (its latency).

The rank order follows the torus row-major, last axis fastest: with a ``2x2x1`` torus, ranks 0 and 1
are neighbours along the second axis, ranks 0 and 2 along the first. A group of ranks (a process
group, a device-mesh dimension) runs on the torus axes its members span.
"""

import dataclasses
import math
import os

HOP_LATENCY_SECONDS = 1e-6  # "typically around 1us" per ICI hop (How to Scale Your Model)
TOPOLOGY_VARIABLE = "TORCH_TPU_TOPOLOGY"


@dataclasses.dataclass(frozen=True)
class Axis:
    """``size`` chips in a ring (``wraparound``) or a line, ``stride`` links apart along the torus axis."""

    size: int
    wraparound: bool
    stride: int = 1

    @property
    def hops(self):
        """Hops until every chip has every shard: half-way round both ways, or end to end."""
        return self.size // 2 if self.wraparound else self.size - 1

    def gather_bandwidth(self, link_bandwidth):
        """Bytes of the gathered array per second: ``hops`` steps, each moving one shard per direction.

        Members ``stride`` links apart share those links with the ``stride - 1`` groups interleaved
        with theirs, which a device mesh runs at the same time.
        """
        return self.size * (link_bandwidth / 2) / (self.hops * self.stride)

    def describe(self, name):
        stride = f", every {self.stride}" if self.stride > 1 else ""
        return f"{name}:{self.size}{' ring' if self.wraparound else ' line'}{stride}"


def _moving(axes):
    return [axis for axis in axes if axis.size > 1]


def _latency(axes, hop_latency):
    return hop_latency * sum(axis.hops * axis.stride for axis in axes)


def all_gather_seconds(nbytes, axes, link_bandwidth, hop_latency=HOP_LATENCY_SECONDS):
    """All-gather of a ``nbytes`` (gathered) array over ``axes`` at once."""
    axes = _moving(axes)
    if not axes:
        return 0.0
    bandwidth = sum(axis.gather_bandwidth(link_bandwidth) for axis in axes)
    return max(_latency(axes, hop_latency), nbytes / bandwidth)


def reduce_scatter_seconds(nbytes, axes, link_bandwidth, hop_latency=HOP_LATENCY_SECONDS):
    """Reduce-scatter of a ``nbytes`` input: the all-gather run backwards, summing instead of keeping."""
    return all_gather_seconds(nbytes, axes, link_bandwidth, hop_latency)


def all_reduce_seconds(nbytes, axes, link_bandwidth, hop_latency=HOP_LATENCY_SECONDS):
    """All-reduce of a ``nbytes`` array: a reduce-scatter, then an all-gather."""
    return 2 * all_gather_seconds(nbytes, axes, link_bandwidth, hop_latency)


def all_to_all_seconds(nbytes, axes, link_bandwidth, hop_latency=HOP_LATENCY_SECONDS):
    """All-to-all of a ``nbytes`` global array: each shard of a shard goes only as far as it must."""
    axes = _moving(axes)
    if not axes:
        return 0.0
    bandwidth = sum(axis.gather_bandwidth(link_bandwidth) * (4 if axis.wraparound else 2) for axis in axes)
    return max(_latency(axes, hop_latency), nbytes / bandwidth)


def point_to_point_seconds(nbytes, hops, link_bandwidth, hop_latency=HOP_LATENCY_SECONDS):
    """One chip sends ``nbytes`` to another ``hops`` links away, one direction of each link."""
    if hops == 0:
        return 0.0
    return max(hop_latency * hops, nbytes / (link_bandwidth / 2))


def barrier_seconds(axes, link_bandwidth, hop_latency=HOP_LATENCY_SECONDS):
    return all_reduce_seconds(0, axes, link_bandwidth, hop_latency)


# What each c10d collective costs, by the name the process group charges it under.
COLLECTIVE_SECONDS = {
    "all_gather": all_gather_seconds,
    "reduce_scatter": reduce_scatter_seconds,
    "all_reduce": all_reduce_seconds,
    "all_to_all": all_to_all_seconds,
    "broadcast": all_gather_seconds,
    "reduce": all_gather_seconds,
    "scatter": all_gather_seconds,
    "gather": all_gather_seconds,
}

ALGORITHMS = {
    "all_gather": "ring all-gather", "reduce_scatter": "ring reduce-scatter",
    "all_reduce": "ring reduce-scatter + all-gather", "all_to_all": "ring all-to-all",
    "broadcast": "ring broadcast from the root", "reduce": "ring reduce to the root",
    "scatter": "ring scatter from the root", "gather": "ring gather to the root",
    "send": "point to point over the torus distance", "recv": "point to point over the torus distance",
    "barrier": "all-reduce of nothing",
}


# --- the torus ---------------------------------------------------------------------------------

AXIS_NAMES = "xyz"


@dataclasses.dataclass(frozen=True)
class Torus:
    """The chips of one slice, ``shape`` along each axis, ranks laid out row-major."""

    shape: tuple
    wraparound_multiple: int  # an axis whose size is a multiple of this has wraparound links
    link_bandwidth: float  # W: bytes/s of one link, both directions
    hop_latency: float = HOP_LATENCY_SECONDS

    @property
    def size(self):
        return math.prod(self.shape)

    def wraps(self, axis):
        size = self.shape[axis]
        return size > 2 and size % self.wraparound_multiple == 0

    def coordinates(self, rank):
        if not 0 <= rank < self.size:
            raise ValueError(f"rank {rank} is not on the {self.describe()} torus ({self.size} chips)")
        coordinates = []
        for size in reversed(self.shape):
            rank, coordinate = divmod(rank, size)
            coordinates.append(coordinate)
        return tuple(reversed(coordinates))

    def hops(self, source, destination):
        """Links between two ranks: the shorter way round an axis with wraparound."""
        total = 0
        for axis, (a, b) in enumerate(zip(self.coordinates(source), self.coordinates(destination))):
            distance = abs(a - b)
            total += min(distance, self.shape[axis] - distance) if self.wraps(axis) else distance
        return total

    def axes_of(self, ranks):
        """The torus axes a group of ranks spans, as ``{axis index: Axis}``.

        A group that is a regular sub-grid of the torus (its members evenly spaced along each axis
        they differ in) runs on those axes; it has the wraparound links of an axis only if it goes
        all the way round. Any other group is charged as a line through its members.
        """
        ranks = sorted(set(ranks))
        coordinates = [self.coordinates(rank) for rank in ranks]
        axes = {}
        for axis, full in enumerate(self.shape):
            values = sorted({c[axis] for c in coordinates})
            if len(values) == 1:
                continue
            stride = values[1] - values[0]
            if any(b - a != stride for a, b in zip(values, values[1:])):
                return {None: Axis(len(ranks), False)}
            covers = len(values) * stride == full
            axes[axis] = Axis(len(values), covers and self.wraps(axis), stride)
        if math.prod(axis.size for axis in axes.values()) != len(ranks):
            return {None: Axis(len(ranks), False)}
        return axes

    def describe(self):
        return "x".join(str(size) for size in self.shape)

    def describe_axes(self, axes):
        return [axis.describe("ranks" if index is None else AXIS_NAMES[index]) for index, axis in axes.items()]


def prime_factors(n):
    factors, divisor = [], 2
    while divisor * divisor <= n:
        while n % divisor == 0:
            factors.append(divisor)
            n //= divisor
        divisor += 1
    return factors + ([n] if n > 1 else [])


def default_shape(world_size, spec):
    """The slice shape of ``world_size`` chips: factors go to the smallest axis (ties: the first).

    4 Ironwood chips make a 2x2x1 slice, 8 a 2x2x2, 64 a 4x4x4 cube; 16 v5e chips a 4x4 one.
    """
    shape = [1] * spec.torus_dims
    for factor in sorted(prime_factors(world_size), reverse=True):
        shape[shape.index(min(shape))] *= factor
    return tuple(shape)


def parse_topology(text, spec):
    try:
        shape = tuple(int(part) for part in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"{TOPOLOGY_VARIABLE}={text!r} is not a topology such as '2x2x1'") from None
    if any(size < 1 for size in shape):
        raise ValueError(f"{TOPOLOGY_VARIABLE}={text!r}: every axis needs at least one chip")
    if len(shape) > spec.torus_dims:
        raise ValueError(
            f"{TOPOLOGY_VARIABLE}={text!r} has {len(shape)} axes, but {spec.name} chips form a "
            f"{spec.torus_dims}D torus"
        )
    return shape + (1,) * (spec.torus_dims - len(shape))


def torus_for(world_size, spec, topology=None):
    """The torus of ``world_size`` chips of ``spec``: from ``topology`` (e.g. ``"2x2x1"``), else
    ``TORCH_TPU_TOPOLOGY``, else the default slice shape."""
    topology = topology if topology is not None else os.environ.get(TOPOLOGY_VARIABLE)
    shape = parse_topology(topology, spec) if topology else default_shape(world_size, spec)
    if math.prod(shape) != world_size:
        raise ValueError(
            f"topology {'x'.join(map(str, shape))} has {math.prod(shape)} chips, but the world has "
            f"{world_size} ranks"
        )
    if world_size > spec.max_pod_chips:
        raise ValueError(
            f"{world_size} {spec.name} chips do not fit in one pod ({spec.max_pod_chips} chips); "
            "links between slices (DCN) are not modelled"
        )
    return Torus(shape, spec.torus_wraparound_multiple, spec.ici_link_bandwidth_bidi)
