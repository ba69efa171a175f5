"""From roofline time to predicted time: how close a tuned training step gets to the roofline, per chip.

The roofline clock gives a lower bound: every kernel at peak FLOP/s or HBM bandwidth, every
collective at link bandwidth, perfect overlap where the program allows it. A real step is slower
(pipeline bubbles, imperfect overlap, host and compiler effects). ``EFFICIENCY[chip]`` is the
fraction of the roofline that a well-tuned MaxText training step reaches: predicted time = roofline
time / efficiency.

It is calibrated on exactly two published runs (``CALIBRATION``), MaxText's Llama-70B on v5p and on
v6e: each is planned with the run's model, slice, batch, sequence length and sharding, and
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
    remat: str  # MaxText's remat policy; the planner checkpoints every layer (the nearest it has)
    source: str
    mesh: tuple = ()  # () is FSDP over every chip

    @property
    def batch(self):
        return self.per_chip_batch * self.chips

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
)

# `python benchmarks/plan.py --calibrate`: planned roofline time / published step time, per chip
CALIBRATED = {"v5p": None, "v6e": None}

_MEAN = sum(filter(None, CALIBRATED.values())) / max(1, len(list(filter(None, CALIBRATED.values())))) or 1.0
EFFICIENCY = {"ironwood": _MEAN, "v5e": _MEAN, **{chip: value or _MEAN for chip, value in CALIBRATED.items()}}


def predicted_seconds(chip, roofline_seconds):
    return roofline_seconds / EFFICIENCY[chip]
