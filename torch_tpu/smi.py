"""``python -m torch_tpu.smi``: an nvidia-smi for emulated chips.

Each process owns its own chip and publishes its status as ``<runtime dir>/<pid>.json``
(see ``torch_tpu.report.Publisher``). This lists the files whose process is still alive and
deletes the ones left by processes that died without cleaning up.
"""

import argparse
import json
import os
import sys
import time

from ._C.hbm import format_bytes
from .report import format_time, runtime_dir

def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def live_statuses(directory=None):
    """The published statuses of live processes; files left by dead ones are removed."""
    directory = directory or runtime_dir()
    try:
        names = sorted(n for n in os.listdir(directory) if n.endswith(".json"))
    except FileNotFoundError:
        return []
    statuses = []
    for name in names:
        path = os.path.join(directory, name)
        pid = int(name.removesuffix(".json")) if name.removesuffix(".json").isdigit() else None
        if pid is None or not _alive(pid):
            try:
                os.remove(path)
            except OSError:
                pass
            continue
        try:
            with open(path) as f:
                statuses.append(json.load(f))
        except (OSError, ValueError):
            continue  # being replaced right now
    return statuses


def format_table(statuses, now=None):
    now = time.time() if now is None else now
    if not statuses:
        return f"No running torch_tpu processes (status directory {runtime_dir()})."
    header = f"{'PID':>8}  {'Chip':<16}{'HBM used':>14}{'HBM peak':>14}{'HBM total':>14}{'Kernels':>10}{'Busy (sim)':>13}{'Updated':>9}  Command"
    lines = [header, "-" * len(header)]
    for s in statuses:
        chip = f"{s['chip']} ({s['generation']})"
        age = f"{max(now - s['updated'], 0):.0f}s ago"
        lines.append(
            f"{s['pid']:>8}  {chip:<16}{format_bytes(s['hbm_used']):>14}{format_bytes(s['hbm_peak']):>14}"
            f"{format_bytes(s['hbm_capacity']):>14}{s['kernels_run']:>10}{format_time(s['busy_seconds']):>13}"
            f"{age:>9}  {s['command'][:60]}"
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m torch_tpu.smi", description="Emulated TPU chips of live processes.")
    parser.add_argument("-l", "--loop", type=float, metavar="SECONDS", help="refresh every SECONDS until interrupted")
    parser.add_argument("--json", action="store_true", help="print the statuses as JSON")
    args = parser.parse_args(argv)
    while True:
        statuses = [s for s in live_statuses() if s["pid"] != os.getpid()]
        print(json.dumps(statuses, indent=1) if args.json else format_table(statuses), flush=True)
        if not args.loop:
            return 0
        time.sleep(args.loop)


if __name__ == "__main__":
    sys.exit(main())
