"""The ICI cost model (csrc_py/ici.py) against hand calculations and the worked examples of
"How to Scale Your Model", chapter "Sharded Matrices" (https://jax-ml.github.io/scaling-book/sharding/).

The book's answers are rounded (it writes 34e6 bytes for 2048 * 8192 * 2): each test computes the
exact figure by hand from the book's formula and checks the model against it, and against the
book's rounded answer to its precision.
"""

import pytest

from torch_tpu._C import CHIPS, ici

US = 1e-6
V5E_LINK = 9e10  # bytes/s per link, both directions (the book's figure for v5e)
V4P_LINK = 9e10  # the book's answers for a "TPU v4p 4x4x4" slice use 9e10 bytes/s per axis too


def test_link_bandwidths_are_per_axis():
    # W is one link's bidirectional bandwidth, not the chip total: the book's figures, and Ironwood's
    # derived from its per-chip 1.2 TB/s over 6 links (3 axes, 2 directions).
    assert CHIPS["v5e"].ici_link_bandwidth_bidi == 9e10
    assert CHIPS["v6e"].ici_link_bandwidth_bidi == 1.8e11
    assert CHIPS["v5p"].ici_link_bandwidth_bidi == 1.8e11
    assert CHIPS["ironwood"].ici_link_bandwidth_bidi == pytest.approx(2e11)
    assert [CHIPS[n].torus_dims for n in ("ironwood", "v6e", "v5p", "v5e")] == [3, 2, 3, 2]


def test_book_pop_quiz_2_all_gather_on_v5e_without_wraparound():
    # AllGather_Y([E_Y, F]) on v5e, mesh {X: 8, Y: 4}, E = 2048, F = 8192, bf16. An axis of 4 has no
    # wraparound on v5e (only 16 does): 3 hops, each moving a 8 MiB shard one way at 4.5e10 B/s.
    torus = ici.Torus((8, 4), CHIPS["v5e"].torus_wraparound_multiple, V5E_LINK)
    axes = torus.axes_of([0, 1, 2, 3])  # ranks 0..3 differ along Y
    assert axes == {1: ici.Axis(4, wraparound=False)}
    total = 2048 * 8192 * 2
    seconds = ici.all_gather_seconds(total, axes.values(), V5E_LINK)
    assert seconds == pytest.approx(3 * (total / 4) / 4.5e10)
    assert seconds == pytest.approx(560 * US, rel=0.01)  # the book: "more like 560us"
    # the DESIGN.md form of the same: (V / W_uni) * (X - 1) / X
    assert seconds == pytest.approx(total / 4.5e10 * 3 / 4)
    # E = F = 256: each 32 kB shard takes 0.7 us, under the 1 us hop latency: 3 hops, 3 us
    assert ici.all_gather_seconds(256 * 256 * 2, axes.values(), V5E_LINK) == pytest.approx(3 * US)


def test_book_question_2_all_gathers_on_a_4x4x4_slice():
    torus = ici.Torus((4, 4, 4), 4, V4P_LINK)
    B, D = 1024, 4096
    x_axis = torus.axes_of([0, 16, 32, 48])
    assert x_axis == {0: ici.Axis(4, wraparound=True)}
    # AllGather_X([B_X, D_Y]): the gathered array is [B, D_Y], 2BD/Y bytes, over a ring of 4: V / W
    gathered = 2 * B * D // 4
    assert ici.all_gather_seconds(gathered, x_axis.values(), V4P_LINK) == pytest.approx(gathered / 9e10)
    assert ici.all_gather_seconds(gathered, x_axis.values(), V4P_LINK) == pytest.approx(23 * US, rel=0.02)
    # AllGather_XY([B_X, D_Y]) -> [B, D]: two axes, twice the bandwidth, max(4 hops * T_min, V / 2W)
    xy = torus.axes_of([x * 16 + y * 4 for x in range(4) for y in range(4)])
    assert sorted(xy) == [0, 1]
    assert ici.all_gather_seconds(2 * B * D, xy.values(), V4P_LINK) == pytest.approx(max(4 * US, 2 * B * D / 1.8e11))
    assert ici.all_gather_seconds(2 * B * D, xy.values(), V4P_LINK) == pytest.approx(46 * US, rel=0.02)
    # AllGather_Z([B_X, D_Y]{U_Z}): each chip ends with 2BD/(XY) bytes over a ring of 4
    z = torus.axes_of([0, 1, 2, 3])
    assert ici.all_gather_seconds(2 * B * D // 16, z.values(), V4P_LINK) == pytest.approx(5.8 * US, rel=0.01)


def test_book_question_3_latency_bound_all_gather():
    # AllGather_X([B_X]) with B = 128 bf16 on a ring of 4: 2 hops of nearly nothing, about 2 us
    axes = [ici.Axis(4, wraparound=True)]
    assert ici.all_gather_seconds(128 * 2, axes, V4P_LINK) == pytest.approx(2 * US)


def test_collectives_relative_to_all_gather():
    ring, line = [ici.Axis(8, True)], [ici.Axis(8, False)]
    V, W = 64 << 20, 2e11
    gather = ici.all_gather_seconds(V, ring, W)
    assert gather == pytest.approx(V / W)  # bandwidth-bound on an even ring: V / W whatever X
    assert ici.reduce_scatter_seconds(V, ring, W) == gather
    assert ici.all_reduce_seconds(V, ring, W) == pytest.approx(2 * V / W)
    assert ici.all_to_all_seconds(V, ring, W) == pytest.approx(V / (4 * W))
    # a line: 7 hops of a shard each one way, V/W_uni * 7/8; all-to-all half of that
    assert ici.all_gather_seconds(V, line, W) == pytest.approx(V / (W / 2) * 7 / 8)
    assert ici.all_to_all_seconds(V, line, W) == pytest.approx(V / (W / 2) * 7 / 8 / 2)
    # one chip: nothing moves
    assert ici.all_reduce_seconds(V, [ici.Axis(1, False)], W) == 0.0
    assert ici.barrier_seconds(ring, W) == pytest.approx(2 * 4 * US)


def test_point_to_point():
    torus = ici.Torus((4, 4, 4), 4, 2e11)
    assert torus.hops(0, 3) == 1  # the wraparound link: 3 is next to 0 on a ring of 4
    assert torus.hops(0, 2) == 2
    assert torus.hops(0, 63) == 3
    assert ici.point_to_point_seconds(1 << 20, 1, 2e11) == pytest.approx((1 << 20) / 1e11)
    assert ici.point_to_point_seconds(8, 3, 2e11) == pytest.approx(3 * US)
    assert ici.point_to_point_seconds(1 << 20, 0, 2e11) == 0.0


@pytest.mark.parametrize("chip, world, shape", [
    ("ironwood", 1, (1, 1, 1)), ("ironwood", 2, (2, 1, 1)), ("ironwood", 4, (2, 2, 1)),
    ("ironwood", 8, (2, 2, 2)), ("ironwood", 64, (4, 4, 4)), ("ironwood", 12, (3, 2, 2)),
    ("v5e", 4, (2, 2)), ("v5e", 8, (4, 2)), ("v6e", 256, (16, 16)), ("v5p", 16, (4, 2, 2)),
])
def test_default_slice_shapes(chip, world, shape):
    assert ici.torus_for(world, CHIPS[chip], topology="").shape == shape


def test_wraparound_follows_the_chip():
    assert ici.torus_for(64, CHIPS["ironwood"], "4x4x4").wraps(0)  # multiples of 4 on Ironwood and v5p
    assert not ici.torus_for(8, CHIPS["ironwood"], "2x2x2").wraps(0)
    assert not ici.torus_for(16, CHIPS["v5e"], "4x4").wraps(0)  # v5e and v6e: only full axes of 16
    assert ici.torus_for(256, CHIPS["v6e"], "16x16").wraps(1)


def test_topology_from_the_environment(monkeypatch):
    monkeypatch.setenv("TORCH_TPU_TOPOLOGY", "1x4")
    torus = ici.torus_for(4, CHIPS["ironwood"])
    assert torus.shape == (1, 4, 1) and torus.link_bandwidth == CHIPS["ironwood"].ici_link_bandwidth_bidi
    with pytest.raises(ValueError, match="has 4 chips, but the world has 8 ranks"):
        ici.torus_for(8, CHIPS["ironwood"])
    monkeypatch.setenv("TORCH_TPU_TOPOLOGY", "2x2x2")
    with pytest.raises(ValueError, match="3 axes, but v5e chips form a 2D torus"):
        ici.torus_for(8, CHIPS["v5e"])
    monkeypatch.setenv("TORCH_TPU_TOPOLOGY", "two")
    with pytest.raises(ValueError, match="is not a topology such as '2x2x1'"):
        ici.torus_for(2, CHIPS["v5e"])
    with pytest.raises(ValueError, match="do not fit in one pod"):
        ici.torus_for(512, CHIPS["v5e"], topology="")


def test_mesh_dimensions_map_onto_torus_axes():
    torus = ici.torus_for(8, CHIPS["ironwood"], "2x2x2")
    # a (2, 4) device mesh: rows are ranks 0-3 and 4-7, columns ranks {i, i + 4}
    assert torus.axes_of([0, 1, 2, 3]) == {1: ici.Axis(2, False), 2: ici.Axis(2, False)}
    assert torus.axes_of([1, 5]) == {0: ici.Axis(2, False)}
    assert torus.describe_axes(torus.axes_of(range(8))) == ["x:2 line", "y:2 line", "z:2 line"]
    # members spaced two links apart round a ring of 8 share the links with the group between them
    ring = ici.torus_for(8, CHIPS["ironwood"], "8x1x1")
    assert ring.axes_of([0, 2, 4, 6]) == {0: ici.Axis(4, True, stride=2)}
    strided = ici.all_gather_seconds(1 << 20, ring.axes_of([0, 2, 4, 6]).values(), 2e11)
    assert strided == pytest.approx(2 * (1 << 20) / 2e11)
    # not a sub-grid: charged as a line through the members
    assert ring.axes_of([0, 1, 5]) == {None: ici.Axis(3, False)}
