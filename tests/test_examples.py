"""The README's first command runs examples/quickstart.py: it must keep working end to end."""

import os
import re
import subprocess
import sys

EXAMPLES = os.path.join(os.path.dirname(__file__), os.pardir, "examples")


def test_quickstart_trains_and_reports(tmp_path):
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TORCH_TPU_")}
    environment["TMPDIR"] = str(tmp_path)  # where the example writes its trace
    process = subprocess.run([sys.executable, os.path.join(EXAMPLES, "quickstart.py")], env=environment,
                             capture_output=True, text=True, timeout=300)
    assert process.returncode == 0, process.stderr
    output = process.stdout
    assert "device='tpu:0'" in output
    losses = [float(v) for v in re.findall(r"step +\d+ +loss ([0-9.]+)", output)]
    assert len(losses) == 5 and losses[-1] < losses[0] / 2  # it learns
    assert "TPU HBM summary, ironwood" in output
    assert re.search(r"estimated device time : [0-9.]+us", output)
    assert (tmp_path / "torch_tpu_quickstart_trace.json").stat().st_size > 0
