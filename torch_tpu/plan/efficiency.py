"""From roofline time to predicted time: how close a tuned training step gets to the roofline, per chip.

The roofline clock gives a lower bound: every kernel at peak FLOP/s or peak HBM bandwidth, every
collective at link bandwidth. Real steps are slower (MXU pipeline bubbles, imperfect overlap, host
and compiler effects). ``EFFICIENCY[chip]`` is the fraction of the roofline a well-tuned MaxText
training step reaches on that chip: predicted time = roofline time / efficiency.

It is calibrated on exactly two published measurements (``CALIBRATION``), MaxText's Llama-70B runs on
v5p and on v6e: each planned with the same model, slice, batch, sequence length and FSDP sharding,
efficiency = (published step time) / (planned roofline time), the published step time being the
model FLOPs per chip over (published MFU x peak FLOP/s). Ironwood and v5e have no published MaxText
run to calibrate on; they take the mean of the two (both are the same software stack on TPUs whose
balance of compute, HBM and ICI is similar). ``python benchmarks/plan.py --calibrate`` recomputes the
table; docs/planning.md shows the calibration and the prediction errors against other published runs
(``VALIDATION``).
"""

import dataclasses

from . import models


@dataclasses.dataclass(frozen=True)
class PublishedRun:
    """A measured MaxText training run, and the planner's nearest job for it."""

    chip: str
    model: str  # a built-in model with the run's shapes
    chips: int
    per_chip_batch: int
    seq: int
    mfu: float  # as published (MaxText's convention: causal attention counts half its scores)
    remat: str  # the run's remat policy; the planner checkpoints every layer for any policy but "none"
    source: str
    mesh: tuple = ()  # () is FSDP over every chip

    def model_flops_per_chip(self):
        return models.model_flops_per_token(models.CONFIGS[self.model], self.seq) * self.per_chip_batch * self.seq

    def step_seconds(self, peak_flops):
        """The measured step time the published MFU implies."""
        return self.model_flops_per_chip() / (self.mfu * peak_flops)


TIERING = "MaxText optimized models tiering table, https://maxtext.readthedocs.io/en/latest/reference/models/tiering.html"
TRILLIUM_CONFIGS = "MaxText benchmarks/maxtext_trillium_model_configs.py"

CALIBRATION = (
    PublishedRun("v5p", "llama2-70b", 256, 4, 4096, 0.654, "save_dot_except_mlpwi",
                 f"{TIERING} (v5p-512, i.e. 256 chips, Gold); recipe MaxText/configs/v5p/llama2_70b.sh"),
    PublishedRun("v6e", "llama3-70b", 256, 4, 8192, 0.5033, "custom (offloaded layer input, q/k/v)",
                 f"{TIERING} (v6e-256, Gold); recipe {TRILLIUM_CONFIGS}, llama3_1_70b_8192"),
)

VALIDATION = (
    PublishedRun("v6e", "llama3-8b", 256, 4, 8192, 0.4546, "custom (offloaded layer input, q/k/v/out)",
                 f"{TIERING} (v6e-256, Gold); recipe {TRILLIUM_CONFIGS}, llama3_1_8b_8192"),
    PublishedRun("v6e", "llama2-70b", 256, 4, 4096, 0.438, "full",
                 f"{TIERING} (v6e-256, Gold); recipe tpu-recipes training/trillium/Llama2-70B-MaxText"),
    PublishedRun("v6e", "llama3-405b", 256, 1, 8192, 0.3855, "custom (offloaded layer input, q/k/v/out)",
                 f"{TIERING} (v6e-256, Silver); recipe {TRILLIUM_CONFIGS}, llama3_1_405b_8192 (fsdp 64 x tp 4)",
                 mesh=(("fsdp", 64), ("tp", 4))),
)

# Recomputed by `python benchmarks/plan.py --calibrate` from CALIBRATION (see docs/planning.md).
CALIBRATED = {"v5p": None, "v6e": None}


def _uncalibrated_mean():
    known = [value for value in CALIBRATED.values() if value]
    return sum(known) / len(known) if known else 1.0


EFFICIENCY = {**CALIBRATED, "ironwood": _uncalibrated_mean(), "v5e": _uncalibrated_mean()}
EFFICIENCY.update({chip: value or _uncalibrated_mean() for chip, value in CALIBRATED.items()})


def predicted_seconds(chip, roofline_seconds):
    return roofline_seconds / EFFICIENCY[chip]
