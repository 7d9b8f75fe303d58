from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def camlens_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 600):
    """Run the real ``camlens`` entry point in a subprocess (offline)."""
    full_env = {**os.environ, "CAMLENS_OFFLINE": "1", **(env or {})}
    full_env.pop("CAMLENS_DEBUG", None)
    exe = Path(sys.executable).with_name("camlens")
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "camlens.cli.main"]
    return subprocess.run([*command, *args], capture_output=True, text=True, cwd=cwd, env=full_env, timeout=timeout)


@pytest.fixture
def run():
    return camlens_cli
