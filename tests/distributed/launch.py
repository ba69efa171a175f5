"""Run a worker script under torchrun for a test, bounded in time, and leave no process behind."""

import os
import signal
import socket
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPOSITORY = os.path.dirname(os.path.dirname(HERE))


def _environment(extra):
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TORCH_TPU_")}
    environment.update({"PYTHONPATH": os.pathsep.join([HERE, os.path.join(REPOSITORY, "examples")]),
                        "PYTHONWARNINGS": "ignore::FutureWarning", **(extra or {})})
    return environment


def start_torchrun(script, nproc, *args, env=None, launcher_args=("--standalone",)):
    """Start ``torchrun <launcher_args> --nproc-per-node nproc script args`` in its own process group."""
    path = script if os.path.isabs(script) else os.path.join(HERE, script)
    command = [sys.executable, "-m", "torch.distributed.run", *launcher_args, f"--nproc-per-node={nproc}", path, *args]
    return subprocess.Popen(command, env=_environment(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _collect(process, timeout):
    """(return code, stdout, stderr); a process still running after ``timeout`` s is killed with its
    children and gets return code None."""
    try:
        stdout, stderr = process.communicate(timeout=timeout)
        return process.returncode, stdout, stderr
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        return None, stdout, stderr


def finish(process, timeout, what):
    """(return code, stdout, stderr) of a started launch; on timeout kill all of it and fail the test."""
    code, stdout, stderr = _collect(process, timeout)
    if code is None:
        raise AssertionError(f"{what} did not finish in {timeout} s:\n{stdout}\n{stderr[-5000:]}")
    return code, stdout, stderr


def torchrun(script, nproc, *args, env=None, timeout=240, launcher_args=("--standalone",)):
    """``torchrun --nproc-per-node nproc script args``, bounded in time: (return code, stdout, stderr)."""
    process = start_torchrun(script, nproc, *args, env=env, launcher_args=launcher_args)
    return finish(process, timeout, f"{script} on {nproc} processes")


def run_ok(script, nproc, *args, **kwargs):
    """Like ``torchrun``, asserting success; returns stdout."""
    code, stdout, stderr = torchrun(script, nproc, *args, **kwargs)
    assert code == 0, f"{script} on {nproc} processes failed ({code}):\n{stdout}\n{stderr[-8000:]}"
    return stdout


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def spawn_ranks(script, world, *args, env=None, timeout=120, until=None):
    """Start ``world`` processes of ``script`` with env:// variables set (no torchrun, whose agent
    would kill the other ranks as soon as one dies). Returns [(return code, stdout, stderr)] per rank;
    processes still running after ``timeout`` seconds, or once the ranks in ``until`` have ended,
    are killed and get return code None."""
    base = _environment({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "WORLD_SIZE": str(world),
                         **(env or {})})
    path = script if os.path.isabs(script) else os.path.join(HERE, script)
    processes = [
        subprocess.Popen([sys.executable, path, *args], env={**base, "RANK": str(r), "LOCAL_RANK": str(r)},
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        for r in range(world)
    ]
    waited = [processes[r] for r in (range(world) if until is None else until)]
    results = {}
    for process in [*waited, *(p for p in processes if p not in waited)]:
        results[process] = _collect(process, timeout if process in waited else 0.1)
    return [results[p] for p in processes]
