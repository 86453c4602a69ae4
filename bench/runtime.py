"""The interpreter the benchmarked processes run on: a virtualenv with requirements.txt
only, as a deployment installs the relay.

The dev dependencies change what some libraries load: structlog imports rich (and rich
attrs and pygments) when they are installed, and schemathesis brings them. In the dev
virtualenv every relay process would carry about 5 MB that no deployment has, and the
memory figures would describe the test set-up, not the relay. Built once in
`.venv/runtime` (removed by `make clean`), again when requirements.txt changes.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNTIME = ROOT / ".venv" / "runtime"


def python() -> str:
    interpreter = RUNTIME / "bin" / "python"
    stamp = RUNTIME / "requirements.txt"
    wanted = (ROOT / "requirements.txt").read_text()
    if not interpreter.exists() or not stamp.exists() or stamp.read_text() != wanted:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(RUNTIME)], check=True)
        subprocess.run(
            [str(interpreter), "-m", "pip", "install", "--quiet", "-r", "requirements.txt"],
            cwd=ROOT,
            check=True,
            timeout=600,
        )
        stamp.write_text(wanted)
    return str(interpreter)
