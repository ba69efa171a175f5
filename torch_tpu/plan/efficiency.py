"""From roofline time to predicted time: how close a tuned training step gets to the roofline, per chip.

The roofline clock gives a lower bound: every kernel at peak FLOP/s or HBM bandwidth, every
collective at link bandwidth, perfect overlap where the program allows it. A real step is slower
(pipeline bubbles, imperfect overlap, host and compiler effects). ``EFFICIENCY[chip]`` is the
fraction of the roofline that a well-tuned MaxText training step reaches: predicted time = roofline
time / efficiency.

It is calibrated on exactly two published runs (``CALIBRATION``), MaxText's Llama-70B on v5p and on
v6e: each is planned with the run's model, slice, batch, sequence length and sharding (recomputing
every layer only if the run did: selective remat recomputes part of a layer, which the efficiency
then absorbs), and
efficiency = planned roofline time / the run's step time, the step time being the run's model
FLOPs per chip over (published MFU x peak FLOP/s). Ironwood and v5e have no published MaxText run to
calibrate on; they take the mean of the two. ``python benchmarks/plan.py --calibrate`` replans
every run, prints the efficiencies to put here, and the prediction errors on the runs not used
(``VALIDATION``); docs/planning.md shows both.

MaxText's MFU counts 6 FLOPs per weight per token plus attention; its count of attention changed
(PR #1988 halved causal attention's), so each run records the share of the full score matrix its
published MFU counts: the one that makes its MFU and its tokens per second agree.
"""

import dataclasses

from . import models

TIERING = "MaxText optimized models tiering, maxtext.readthedocs.io/en/latest/reference/models/tiering.html"
TRILLIUM = "MaxText benchmarks/maxtext_trillium_model_configs.py"
IRONWOOD = "tpu-recipes training/ironwood/README.md (TFLOP/s per chip / 2307)"
IRONWOOD_PEAK_TFLOPS = 2307


@dataclasses.dataclass(frozen=True)
class PublishedRun:
    """A measured MaxText training run, and how the planner replays it."""

    chip: str
    model: str  # the built-in model with the run's shapes
    chips: int
    per_chip_batch: int  # MaxText's per_device_batch_size: the global batch is this times the chips
    seq: int
    mfu: float  # as published
    tokens_per_s_per_chip: float  # as published ("approx")
    attention_counted: float  # share of the full L x L scores the published MFU counts (1 or 0.5)
    remat: str  # MaxText's remat policy
    source: str
    mesh: tuple = ()  # () is FSDP over every chip
    dtype: str = "bf16"  # matmul precision: "fp8" for MaxText's fp8_full recipe

    @property
    def batch(self):
        return self.per_chip_batch * self.chips

    @property
    def checkpoint(self):
        """Whether the replay recomputes every layer: only when MaxText did ("full"). Selective policies
        recompute less, and the replay recomputes nothing, so that its roofline stays a lower bound."""
        return self.remat == "full"

    def model_flops_per_chip(self):
        config = models.CONFIGS[self.model]
        return models.model_flops_per_token(config, self.seq, self.attention_counted) * self.per_chip_batch * self.seq

    def step_seconds(self, peak_flops):
        """The measured step time its published MFU implies."""
        return self.model_flops_per_chip() / (self.mfu * peak_flops)

    def mfu_of(self, step_seconds, peak_flops):
        """Its MFU, counted as the publication counts it, for a step of ``step_seconds``."""
        return self.model_flops_per_chip() / (step_seconds * peak_flops)


CALIBRATION = (
    PublishedRun("v5p", "llama2-70b", 256, 4, 4096, 0.654, 692, 0.5, "save_dot_except_mlpwi",
                 f"{TIERING} (v5p Gold, 'v5p-512' = 256 chips); MaxText/configs/v5p/llama2_70b.sh"),
    PublishedRun("v6e", "llama3-70b", 256, 4, 8192, 0.5033, 960, 1.0, "custom: layer input, q, k, v offloaded",
                 f"{TIERING} (v6e Gold); {TRILLIUM}, llama3_1_70b_8192"),
)

VALIDATION = (
    PublishedRun("v6e", "llama3-8b", 256, 4, 8192, 0.4546, 7207, 1.0, "custom: layer input, q, k, v, out offloaded",
                 f"{TIERING} (v6e Gold); {TRILLIUM}, llama3_1_8b_8192"),
    PublishedRun("v6e", "llama2-70b", 256, 4, 4096, 0.438, 900, 1.0, "full",
                 f"{TIERING} (v6e Gold); tpu-recipes training/trillium/Llama2-70B-MaxText, llama2_70b_4096"),
    PublishedRun("v6e", "llama3-405b", 256, 1, 8192, 0.3855, 123, 1.0, "custom: layer input, q, k, v, out offloaded",
                 f"{TIERING} (v6e Silver); {TRILLIUM}, llama3_1_405b_8192_fsdp_dcn (fsdp 64 x tp 4 per slice)",
                 mesh=(("fsdp", 64), ("tp", 4))),
    # Ironwood: tpu-recipes' table gives step time, TFLOP/s and tokens/s per chip (MaxText's count, causal
    # attention halved); MaxText's "device" is a TensorCore, two per chip
    PublishedRun("ironwood", "llama3-70b", 64, 4, 8192, 1207.05 / IRONWOOD_PEAK_TFLOPS, 2686.98, 0.5,
                 "custom: layer input, context, q, k, v kept", f"{IRONWOOD}; llama3.1-70b 8k-bf16-tpu7x-4x4x4"),
    PublishedRun("ironwood", "llama3-70b", 256, 4, 8192, 1199.67 / IRONWOOD_PEAK_TFLOPS, 2670.55, 0.5,
                 "custom: layer input, context, q, k, v kept", f"{IRONWOOD}; llama3.1-70b 8k-bf16 on 256 chips"),
    PublishedRun("ironwood", "llama3-405b", 256, 6, 8192, 1261.40 / IRONWOOD_PEAK_TFLOPS, 499.77, 0.5,
                 "custom: layer input, MLP output offloaded", f"{IRONWOOD}; llama3.1-405b 8k-bf16-tpu7x-4x8x8"),
    PublishedRun("ironwood", "llama3-70b", 64, 4, 8192, 1854.19 / IRONWOOD_PEAK_TFLOPS, 4127.56, 0.5,
                 "custom: layer input, context, q, k, v kept", f"{IRONWOOD}; llama3.1-70b 8k fp8_full on 64 chips",
                 dtype="fp8"),
)

# `python benchmarks/plan.py --calibrate`: planned roofline time / published step time, per chip
CALIBRATED = {"v5p": 0.7517, "v6e": 0.6761}

_MEAN = sum(filter(None, CALIBRATED.values())) / max(1, len(list(filter(None, CALIBRATED.values())))) or 1.0
EFFICIENCY = {"ironwood": _MEAN, "v5e": _MEAN, **{chip: value or _MEAN for chip, value in CALIBRATED.items()}}


def predicted_seconds(chip, roofline_seconds):
    return roofline_seconds / EFFICIENCY[chip]
