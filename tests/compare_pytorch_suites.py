"""Compare one PyTorch test file's outcomes on tpu with its outcomes on cpu, test by test.

PyTorch's device-generic test files (not shipped in the wheel) are run twice with pytest's
``--junitxml``: once with ``PYTORCH_TESTING_DEVICE_ONLY_FOR=tpu`` and once with ``=cpu``. A failure on
tpu that also fails on cpu says the copy of the test file does not fit the installed torch, not that
tpu is wrong. See docs/testing.md.

    python tests/compare_pytorch_suites.py junit_tpu.xml junit_cpu.xml
"""

import argparse
import collections
import re
import xml.etree.ElementTree as ElementTree

# The device in an instantiated test's class and method names: TestFooPRIVATEUSE1/TestFooTPU/TestFooCPU
# and test_bar_tpu_float32/test_bar_cpu_float32.
_CLASS_DEVICE = re.compile(r"(PRIVATEUSE1|TPU|CPU)$")
_METHOD_DEVICE = re.compile(r"_(tpu|cpu)(?=_|$)")


def outcomes(junit_path):
    """Device-neutral test name -> (passed|failed|skipped, first line of the message)."""
    result = {}
    for case in ElementTree.parse(junit_path).getroot().iter("testcase"):
        test_class = _CLASS_DEVICE.sub("", case.get("classname").split(".")[-1])
        name = f"{test_class}::{_METHOD_DEVICE.sub('', case.get('name'))}"
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = "skipped" if child.tag == "skipped" else "failed"
                message = (child.get("message") or "").strip().splitlines()[0:1]
                message = message[0][:200] if message else ""
                break
        result[name] = outcome, message
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tpu_junit")
    parser.add_argument("cpu_junit")
    args = parser.parse_args()
    tpu, cpu = outcomes(args.tpu_junit), outcomes(args.cpu_junit)
    print("tpu:", dict(collections.Counter(outcome for outcome, _ in tpu.values())))
    print("cpu:", dict(collections.Counter(outcome for outcome, _ in cpu.values())))
    for name, (outcome, message) in sorted(tpu.items()):
        if outcome == "failed":
            on_cpu = cpu.get(name, ("not run", ""))[0]
            print(f"[{'fails on cpu too' if on_cpu == 'failed' else 'cpu ' + on_cpu}] {name}: {message}")


if __name__ == "__main__":
    main()
