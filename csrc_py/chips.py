"""The TPU generations this emulator can be, as data.

Figures come from the Google Cloud TPU system-architecture pages, JAX's
``jax/_src/tpu_info.py`` and "How to Scale Your Model" (see docs/chips.md).
A chip is selected once per process with ``TORCH_TPU_CHIP``.
"""

import dataclasses
import os

GiB = 1 << 30
MiB = 1 << 20
TERA = 1e12
GIGA = 1e9


@dataclasses.dataclass(frozen=True)
class ChipSpec:
    name: str
    generation: str
    peak_flops: dict  # MXU input element type name -> FLOP/s; absent means unsupported
    hbm_bytes: int
    hbm_bandwidth: float  # bytes/s
    tensorcores: int
    mxus_per_tensorcore: int
    mxu_shape: tuple
    sparsecores: int
    vmem_bytes_per_tensorcore: int
    ici_bandwidth_bidi: float  # bytes/s per chip, both directions, all links together
    topology: str
    max_pod_chips: int
    # The torus the chips of a slice form (csrc_py/ici.py). A link joins two neighbours along one
    # axis; its bidirectional bandwidth is what collectives see ("W" in "How to Scale Your Model").
    ici_link_bandwidth_bidi: float  # bytes/s per link (per torus axis), both directions
    torus_dims: int
    torus_wraparound_multiple: int  # an axis whose size is a multiple of this closes into a ring

    def supports_mxu_dtype(self, dtype_name):
        return dtype_name in self.peak_flops

    def ridge_point(self, dtype_name="bfloat16"):
        """Arithmetic intensity (FLOP/byte) where compute and HBM time are equal."""
        return self.peak_flops[dtype_name] / self.hbm_bandwidth


def _flops(bf16, fp8=None, int8=None):
    table = {"bfloat16": bf16 * TERA}
    if fp8 is not None:
        table["float8_e4m3fn"] = table["float8_e5m2"] = fp8 * TERA
    if int8 is not None:
        table["int8"] = int8 * TERA
    return table


CHIPS = {
    spec.name: spec
    for spec in (
        ChipSpec(
            name="ironwood", generation="TPU7x", peak_flops=_flops(2307, fp8=4614),
            hbm_bytes=192 * GiB, hbm_bandwidth=7380 * GIGA, tensorcores=2,
            mxus_per_tensorcore=2, mxu_shape=(256, 256), sparsecores=4,
            vmem_bytes_per_tensorcore=64 * MiB, ici_bandwidth_bidi=1200 * GIGA,
            topology="3D torus, 64-chip cubes joined by OCS", max_pod_chips=9216,
            # derived, not published: the per-chip figure over its 6 links (3 axes, 2 directions)
            ici_link_bandwidth_bidi=1200 * GIGA / 6, torus_dims=3, torus_wraparound_multiple=4,
        ),
        ChipSpec(
            name="v6e", generation="Trillium", peak_flops=_flops(918, fp8=918, int8=1836),
            hbm_bytes=32 * GiB, hbm_bandwidth=1638 * GIGA, tensorcores=1,
            mxus_per_tensorcore=2, mxu_shape=(256, 256), sparsecores=2,
            vmem_bytes_per_tensorcore=128 * MiB, ici_bandwidth_bidi=800 * GIGA,
            topology="2D torus 16x16", max_pod_chips=256,
            ici_link_bandwidth_bidi=180 * GIGA, torus_dims=2, torus_wraparound_multiple=16,
        ),
        ChipSpec(
            name="v5p", generation="v5p", peak_flops=_flops(459, fp8=459, int8=918),
            hbm_bytes=95 * GiB, hbm_bandwidth=2765 * GIGA, tensorcores=2,
            mxus_per_tensorcore=4, mxu_shape=(128, 128), sparsecores=4,
            vmem_bytes_per_tensorcore=64 * MiB, ici_bandwidth_bidi=1200 * GIGA,
            topology="3D torus", max_pod_chips=8960,
            ici_link_bandwidth_bidi=180 * GIGA, torus_dims=3, torus_wraparound_multiple=4,
        ),
        ChipSpec(
            name="v5e", generation="v5e", peak_flops=_flops(197, int8=393),
            hbm_bytes=16 * GiB, hbm_bandwidth=819 * GIGA, tensorcores=1,
            mxus_per_tensorcore=4, mxu_shape=(128, 128), sparsecores=0,
            vmem_bytes_per_tensorcore=128 * MiB, ici_bandwidth_bidi=400 * GIGA,
            topology="2D torus 16x16", max_pod_chips=256,
            ici_link_bandwidth_bidi=90 * GIGA, torus_dims=2, torus_wraparound_multiple=16,
        ),
    )
}

DEFAULT_CHIP = "ironwood"


def chip_from_environment():
    name = os.environ.get("TORCH_TPU_CHIP", DEFAULT_CHIP).strip().lower()
    if name not in CHIPS:
        raise ValueError(
            f"TORCH_TPU_CHIP={name!r} is not a known chip; choose one of {', '.join(CHIPS)}"
        )
    return CHIPS[name]


def hbm_capacity_from_environment(spec):
    """``TORCH_TPU_HBM_BYTES`` overrides the chip's HBM size (e.g. to test OOM cheaply)."""
    override = os.environ.get("TORCH_TPU_HBM_BYTES")
    if override is None:
        return spec.hbm_bytes
    try:
        capacity = int(float(override))
    except ValueError:
        raise ValueError(f"TORCH_TPU_HBM_BYTES={override!r} is not a byte count") from None
    if capacity < 0:
        raise ValueError(f"TORCH_TPU_HBM_BYTES={override!r} must not be negative")
    return capacity
