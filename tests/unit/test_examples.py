"""The examples run as a user runs them: a fresh interpreter, from the repository root."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_example(name: str) -> str:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("EVENT__")}
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
        env=environ,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_hello_prints_the_event_its_listener_received() -> None:
    assert "HelloEventListener received HelloEvent(world='world')" in run_example("hello.py")


def test_session_propagation_shows_each_senders_session() -> None:
    output = run_example("session_propagation.py")
    assert "10 charged in session 'alice-1'" in output
    assert "25 charged in session 'bob-7'" in output
