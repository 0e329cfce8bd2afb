"""Shared fixtures: a fresh on-disk store per test, and a subprocess runner for the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import replaystore

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def store(tmp_path: Path) -> replaystore.Store:
    return replaystore.open(str(tmp_path / "store"))


def run_cli(*args: str, uri: str | None = None, check: bool = False, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the installed `replaystore` entry point exactly as a user would."""
    cmd = [sys.executable, "-m", "replaystore.cli", *(["--uri", uri] if uri else []), *args]
    env = {**os.environ, "LANCE_LOG": "error"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc
