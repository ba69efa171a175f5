"""The planner against published MaxText runs (minutes: ``pytest -m plan_calibration``).

Each published run is replanned at full scale in a fresh process (each chip generation is its own
chip). The uncalibrated roofline must never be slower than what was measured; the efficiency table
must be what the two calibration runs give; the other runs are predicted within the bounds that
docs/planning.md reports.
"""

import json

import pytest

from torch_tpu.plan import efficiency

from conftest import run_python

pytestmark = pytest.mark.plan_calibration
def _name(run):
    return f"{run.chip}-{run.model}-{run.chips}-{run.seq}-{run.dtype}"


RUNS = {_name(run): run for run in (*efficiency.CALIBRATION, *efficiency.VALIDATION)}
VALIDATION_ERROR_BOUND = 0.25  # |predicted MFU / published MFU - 1|; docs/planning.md lists each error


def _replanned(name):
    process = run_python(f"""
        import json
        from torch_tpu.plan import efficiency
        from torch_tpu.plan.training import plan_training, published_job
        runs = (*efficiency.CALIBRATION, *efficiency.VALIDATION)
        run = {{f"{{r.chip}}-{{r.model}}-{{r.chips}}-{{r.seq}}-{{r.dtype}}": r for r in runs}}[{name!r}]
        print(json.dumps(plan_training(published_job(run))))
    """)
    return json.loads(process.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def replanned():
    return {}


def _result(replanned, name):
    if name not in replanned:
        replanned[name] = _replanned(name)
    return replanned[name]


def _peak(run):
    from torch_tpu import _C

    return _C.CHIPS[run.chip].peak_flops["bfloat16"]


EAGER_FP8 = ("eager FP8 quantizes each operand with separate unfused kernels (abs, amax, casts over fp32 copies: "
             "about 33 bytes of HBM traffic per element where a fused kernel moves 5), so its roofline is the eager "
             "program's, slower than a fused TPU step; see docs/planning.md, Limits")


def _eager_fp8(run):
    if run.dtype == "fp8":
        pytest.xfail(EAGER_FP8)


@pytest.mark.parametrize("name", list(RUNS))
def test_the_roofline_is_never_slower_than_the_published_run(replanned, name):
    run = RUNS[name]
    _eager_fp8(run)
    result = _result(replanned, name)
    assert result["step"]["roofline_s"] <= run.step_seconds(_peak(run))


EAGER_MLP = ("the eager step's peak (42.6 GiB planned against v6e's 32 GiB) is a recomputed layer's backward: "
             "eight unfused 896 MiB SwiGLU intermediates and gradients, the layer's unsharded fp32 gradient "
             "(3.2 GiB) and bf16 weights (1.6 GiB), where XLA fuses the MLP; see docs/planning.md, Limits")


@pytest.mark.xfail(reason=EAGER_MLP, strict=True)
@pytest.mark.parametrize("name", [name for name, run in RUNS.items() if run.checkpoint])
def test_a_published_run_that_recomputed_every_layer_fits(replanned, name):
    """(Runs with selective remat offloaded activations to the host; the replay keeps them on the chip.)"""
    assert _result(replanned, name)["hbm_per_chip"]["fits"], "the published run fit on its chips"


@pytest.mark.parametrize("run", efficiency.CALIBRATION, ids=_name)
def test_the_efficiency_table_is_what_the_calibration_runs_give(replanned, run):
    result = _result(replanned, _name(run))
    assert efficiency.EFFICIENCY[run.chip] == pytest.approx(result["step"]["roofline_s"] / run.step_seconds(_peak(run)),
                                                            rel=0.02)


TWO_SLICES = pytest.mark.xfail(strict=True, reason=(
    "the published v6e 405B run spans two slices joined by DCN, which the planner does not model (it is "
    "replanned on one slice); predicted 26% low since the efficiency table was recalibrated to the planner's "
    "current kernel costs (23.5% low before), docs/planning.md"))


def _validation_params():
    return [pytest.param(run, marks=TWO_SLICES) if run.chip == "v6e" and run.model == "llama3-405b" else run
            for run in efficiency.VALIDATION]


@pytest.mark.parametrize("run", _validation_params(), ids=_name)
def test_other_published_runs_are_predicted_within_the_documented_error(replanned, run):
    _eager_fp8(run)
    result = _result(replanned, _name(run))
    predicted_mfu = run.mfu_of(result["step"]["time_s"], _peak(run))
    assert abs(predicted_mfu / run.mfu - 1) < VALIDATION_ERROR_BOUND
