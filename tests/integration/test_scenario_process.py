"""Scenario generation seen from another process (kept out of tests/unit: it starts an
interpreter)."""

import hashlib
import os
import subprocess
import sys

from firmware_sim.scenario import generate
from tests.scenarios import CONFIG


def test_another_process_generates_the_same_bytes() -> None:
    """The file does not depend on the process: another interpreter with another hash
    seed writes the identical scenario."""
    code = (
        "import hashlib, sys; from tests.scenarios import CONFIG; "
        "from firmware_sim.scenario import generate; "
        "sys.stdout.write(hashlib.sha256(generate(CONFIG).to_json().encode()).hexdigest())"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout == hashlib.sha256(generate(CONFIG).to_json().encode()).hexdigest()
