"""The oracle environment: `.venv-ttnn`, tt-metal's `ttnn` 0.81.1 from PyPI on the machine's Python 3.12 or 3.10
(the only Pythons the wheel is built for). `python tests/oracle/ttnn_env.py` (run by `make setup`) makes it; the
oracle tier (tests/oracle/) calls ttnn through it in a subprocess, under a mock Wormhole n150 (wormhole_n150.yaml).

Where no such Python is found, or the registry cannot be reached, it says so in one line and the oracle tier is
skipped with that line; the rest of the suite does not depend on it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

VERSION = "0.81.1"
ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv-ttnn"
PYTHON = VENV / "bin" / "python"
STAMP = VENV / f".ttnn-{VERSION}"
DESCRIPTOR = Path(__file__).resolve().parent / "wormhole_n150.yaml"
WHEELS = ROOT / ".venv" / "wheels"  # tests/ttnn_wheel.py's download, reused when it is there
WANTED = ("3.12", "3.10")


def _runs(python: str, version: str) -> bool:
    try:
        out = subprocess.run([python, "-c", "import sys, venv; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0 and out.stdout.strip() == version


def find_python() -> str | None:
    """TTJAX_TTNN_PYTHON if set; else python3.12 / python3.10 on PATH, then pyenv's versions, then /usr."""
    if os.environ.get("TTJAX_TTNN_PYTHON"):
        return os.environ["TTJAX_TTNN_PYTHON"]
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    for version in WANTED:
        candidates = [shutil.which(f"python{version}")]
        candidates += sorted(map(str, pyenv_root.glob(f"versions/{version}.*/bin/python{version}")), reverse=True)
        candidates += [f"/usr/bin/python{version}", f"/usr/local/bin/python{version}"]
        for python in filter(None, candidates):
            if _runs(python, version):
                return python
    return None


def ready() -> str | None:
    """None when the oracle environment is usable, else the one line that says why not."""
    if STAMP.exists() and PYTHON.exists():
        return None
    if find_python() is None:
        return f"ttnn oracle tier skipped: no Python {' or '.join(WANTED)} on this machine (ttnn {VERSION} is built for those only)."
    return f"ttnn oracle tier skipped: {VENV.name} is not set up (run `make setup`)."


def make() -> bool:
    if STAMP.exists() and PYTHON.exists():
        return True
    python = find_python()
    if python is None:
        print(ready(), file=sys.stderr)
        return False
    if VENV.exists():
        shutil.rmtree(VENV)
    pip = [str(PYTHON), "-m", "pip", "install", "--quiet"]
    steps = [[python, "-m", "venv", str(VENV)], pip + ["--upgrade", "pip"],
             pip + (["--find-links", str(WHEELS)] if WHEELS.is_dir() else []) + [f"ttnn=={VERSION}"]]
    for step in steps:
        if subprocess.run(step).returncode:
            print(f"ttnn oracle tier skipped: `{' '.join(step[:4])} ...` failed (see above).", file=sys.stderr)
            return False
    STAMP.touch()
    return True


if __name__ == "__main__":
    make()
