"""Fetch tt-metal's own test data from the ttnn wheel on PyPI: `python tests/ttnn_wheel.py` (run by `make setup`).

The ttnn wheel (0.81.1, built for CPython 3.10 and 3.12 only) ships tt-llk's test helpers, among them
sfpu_accuracy_budget.yaml, the maximum error of every SFPU op measured on a Wormhole. pip downloads the wheel for
Python 3.12 whatever Python runs this (it is not installed), and the helpers are extracted to .venv/ttnn-wheel.
Where the package registry cannot be reached, the tests use tests/data's copy of the rows they need.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

VERSION = "0.81.1"
SHA256 = "cc6df66162c8b5f5a5eb7347fe687b6095bf57bd64f9ba1be3d9b7f42e01d64f"
HELPERS = "ttnn/tt_metal/tt-llk/tests/python_tests/helpers/"
VENV = Path(__file__).resolve().parent.parent / ".venv"


def fetch(target: Path = VENV / "ttnn-wheel") -> bool:
    wheels = VENV / "wheels"
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:", "--python-version",
           "3.12", "--platform", "manylinux_2_34_x86_64", f"ttnn=={VERSION}", "-d", str(wheels)]
    found = sorted(wheels.glob(f"ttnn-{VERSION}-*.whl"))
    if not found and subprocess.run(cmd, capture_output=True).returncode:
        print("ttnn wheel not fetched: the tests use tests/data/sfpu_accuracy_budget.yaml", file=sys.stderr)
        return False
    wheel = sorted(wheels.glob(f"ttnn-{VERSION}-*.whl"))[0]
    with zipfile.ZipFile(wheel) as z:
        for name in z.namelist():
            if name.startswith(HELPERS) and name.endswith((".yaml", ".py")):
                z.extract(name, target)
    return True


if __name__ == "__main__":
    fetch()
