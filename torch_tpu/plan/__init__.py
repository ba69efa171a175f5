"""Planning at full scale without the bytes: ``python -m torch_tpu.plan``.

Before renting a slice: does this model fit on N chips with this sharding, what step time and MFU
will training reach, and for serving, how many tokens per second at what latency? The planner
answers from the PyTorch program itself: it runs one training step (or a prefill and decode steps)
of the real ``nn.Module`` in abstract mode (``torch_tpu.abstract``: shapes and exact HBM bytes, no
values) on one representative chip of a simulated slice (``torch_tpu.simulate``), sharded with
PyTorch's own FSDP2 and tensor parallelism, and reads the chip's HBM accounting and roofline clock.

- ``training.py``: ``plan_training(TrainingJob(...))`` and ``sweep``;
- ``serving.py``: ``plan_serving(ServingJob(...))``;
- ``models.py``: the built-in Llama- and GPT-style models;
- ``efficiency.py``: roofline time to predicted time, calibrated on published runs;
- ``user_code.py``: the user's ``module:function`` and how their program runs while planned;
- ``measure.py``: the chip readings around a phase; ``report.py``: the printed tables.

From Python: ``plan_training(TrainingJob(model="pkg.mod:build", chips=8, mesh=parse_mesh("fsdp=4,tp=2")))``
and ``plan_serving(ServingJob(...))`` return the dicts ``--json`` prints; ``table(result)`` formats one.
"""

from .report import table
from .serving import ServingJob, plan_serving
from .training import TrainingJob, parse_mesh, plan_training, sweep

__all__ = ["ServingJob", "TrainingJob", "parse_mesh", "plan_serving", "plan_training", "sweep", "table"]
