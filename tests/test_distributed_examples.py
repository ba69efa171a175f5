"""The distributed examples under torchrun: losses equal single-process training, per-rank reports.

Each example compares its losses with single-process training itself and exits non-zero if they
differ by more than 1e-5 (relative; 2e-2 for FSDP's bf16 mixed-precision recipe). Here we also
check each rank's report line, and that FSDP's HBM holds exactly the closed form: every parameter,
its gradient and AdamW's two states, in float32, split over N ranks (the example's sizes divide
evenly, so FSDP adds no padding).
"""

import os
import re
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "distributed"))
from launch import REPOSITORY, run_ok  # noqa: E402

EXAMPLES = os.path.join(REPOSITORY, "examples", "distributed")
FULL = pytest.mark.distributed_full
GPT_PARAMETERS = 105216  # GPT(vocabulary=64, context=16, width=64, heads=8, layers=2), head tied to the embedding
REPORT = re.compile(r"rank (\d+): losses \[[^\]]+\] \| HBM peak [0-9.]+ [KMG]?i?B \| estimated ironwood step "
                    r"[0-9.]+(?:us|ms), ICI [0-9.]+(?:us|ms) \([0-9.]+(?:us|ms) exposed, [0-9.]+% of the step\)")


def _run_example(script, nproc, *args):
    output = run_ok(os.path.join(EXAMPLES, script), nproc, *args, timeout=400)
    assert sorted(int(r) for r in REPORT.findall(output)) == list(range(nproc)), output
    difference = float(re.search(r"largest relative difference ([0-9.e+-]+)", output).group(1))
    return output, difference


@pytest.mark.parametrize("script, nproc, args", [
    pytest.param("fsdp.py", 2, (), id="fsdp-2"),
    pytest.param("fsdp.py", 4, (), id="fsdp-4", marks=FULL),
])
def test_fsdp_matches_single_process_and_shards_hbm_by_the_closed_form(script, nproc, args):
    output, difference = _run_example(script, nproc, *args)
    assert difference <= 1e-5
    # parameters, gradients and two AdamW states: 4 float32 copies of the model, split N ways
    states = {int(b) for b in re.findall(r"model state (\d+) bytes in HBM", output)}
    assert states == {4 * 4 * GPT_PARAMETERS // nproc}, output


@pytest.mark.parametrize("script, nproc, args", [
    pytest.param("tensor_parallel.py", 2, (), id="tp-2", marks=FULL),
    pytest.param("tensor_parallel.py", 4, (), id="tp-4", marks=FULL),
    pytest.param("fsdp.py", 2, ("--mixed-precision",), id="fsdp-bf16-2", marks=FULL),
    pytest.param("fsdp.py", 4, ("--mixed-precision",), id="fsdp-bf16-4", marks=FULL),
    pytest.param("fsdp_tp.py", 4, (), id="fsdp-tp-4", marks=FULL),
    pytest.param("fsdp_tp.py", 8, ("--tp", "4"), id="fsdp-tp-8", marks=FULL),
    pytest.param("ddp.py", 2, (), id="ddp-2", marks=FULL),
    pytest.param("ddp.py", 4, (), id="ddp-4", marks=FULL),
])
def test_example_matches_single_process(script, nproc, args):
    _, difference = _run_example(script, nproc, *args)
    assert difference <= (2e-2 if "--mixed-precision" in args else 1e-5)


@FULL
@pytest.mark.parametrize("layout", ["tp", "fsdp"])
def test_compiled_parallel_model_matches_single_process(layout):
    """torch.compile(backend="tpu") of the GPT after parallelize_module or fully_shard trains as eager on one chip."""
    output = run_ok(os.path.join(REPOSITORY, "tests", "distributed", "compiled_parallel.py"), 2, layout, timeout=500)
    assert output.count(f"compiled {layout} ok") == 2, output
