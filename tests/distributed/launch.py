"""Run a worker script under torchrun for a test, bounded in time, and leave no process behind."""

import os
import signal
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPOSITORY = os.path.dirname(os.path.dirname(HERE))


def torchrun(script, nproc, *args, env=None, timeout=240, launcher_args=()):
    """``torchrun --nproc-per-node nproc script args`` (standalone rendezvous on a free port).

    Returns (return code, stdout, stderr). On timeout the whole process group is killed and the
    test fails with what the ranks printed so far.
    """
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TORCH_TPU_")}
    environment.update({"PYTHONPATH": os.pathsep.join([HERE, os.path.join(REPOSITORY, "examples")]),
                        "PYTHONWARNINGS": "ignore::FutureWarning", **(env or {})})
    path = script if os.path.isabs(script) else os.path.join(HERE, script)
    launcher = list(launcher_args) or ["--standalone"]
    command = [sys.executable, "-m", "torch.distributed.run", *launcher, f"--nproc-per-node={nproc}", path, *args]
    process = subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        raise AssertionError(f"{script} on {nproc} processes did not finish in {timeout} s:\n{stdout}\n{stderr[-5000:]}")
    return process.returncode, stdout, stderr


def run_ok(script, nproc, *args, **kwargs):
    """Like ``torchrun``, asserting success; returns stdout."""
    code, stdout, stderr = torchrun(script, nproc, *args, **kwargs)
    assert code == 0, f"{script} on {nproc} processes failed ({code}):\n{stdout}\n{stderr[-8000:]}"
    return stdout
