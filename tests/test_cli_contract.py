"""Every `replaystore` command, as a user first meets it: `--help`, a valid call and bad calls.

A bad call prints exactly one line on stderr (`error: …`, no traceback), exits 2 when the parser
refuses it (before a store is opened or anything slow starts) or 1 when the command does, and
leaves every file of the store as it was. A valid call prints nothing on stderr. Calls run through
the same `main` in-process (a subprocess pays the stack's imports, seconds apiece); the commands
that need MiniLM run in the slow suite, `serve`'s and `demo`'s valid runs are in
tests/test_flows_deploy.py and tests/test_demo.py.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from subprocess import CompletedProcess

import numpy as np
import pytest

import replaystore
from replaystore.cli import build_parser, main
from tests.conftest import run_cli
from tests.test_experiences import TRAJECTORIES


def run(*args: str, capsys: pytest.CaptureFixture[str]) -> CompletedProcess[str]:
    capsys.readouterr()
    try:
        code = main(list(args))
    except SystemExit as exit_:  # argparse: --help and refused arguments
        code = int(exit_.code or 0)
    out, err = capsys.readouterr()
    return CompletedProcess(list(args), code, out, err)


def files(root: Path) -> dict[str, int]:
    """Every file under the store with its size: a new version, index, pin or table shows here."""
    return {str(p.relative_to(root)): p.stat().st_size for p in sorted(root.rglob("*")) if p.is_file()} if root.exists() else {}


def leaf_commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return [prefix]
    return [leaf for name, sub in subs[0].choices.items() for leaf in leaf_commands(sub, (*prefix, name))]


COMMANDS = leaf_commands(build_parser())


@pytest.fixture
def seeded(tmp_path: Path) -> str:
    """A store with exemplar rows (with token lists) and a byte-budgeted buffer."""
    uri = str(tmp_path / "store")
    store = replaystore.open(uri)
    n = 40
    store.append("exemplars", {
        "buffer": ["b"] * n, "sample_id": np.arange(n), "class_id": np.arange(n) % 4, "task_id": np.zeros(n, np.int64),
        "rank": np.ones(n, np.int32), "nbytes": np.full(n, 4), "tokens": [[7] * (1 + i % 9) for i in range(n)],
    })  # fmt: skip
    store.exemplars("digits", budget=1_000, model_params=10, model_dtype="float32", selector="random").add(0, np.zeros((3, 2, 2), np.uint8))
    return uri


def test_every_command_has_help(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert len(COMMANDS) >= 25
    for command in COMMANDS:
        proc = run(*command, "--help", capsys=capsys)
        assert (proc.returncode, proc.stderr) == (0, ""), command
        assert proc.stdout.startswith(f"usage: replaystore {' '.join(command)}"), command
        assert "--uri" in proc.stdout and "--json" in proc.stdout  # the global options work after the command too
    assert not (tmp_path / "replaystore-data").exists()


def _valid(uri: str, tmp: Path) -> list[tuple[tuple[str, ...], type]]:
    ds = tmp / "ds.json"
    ds.write_text(json.dumps({"curriculum_metrics": {"seq_len": {
        "difficulty_type": "percentile", "min_difficulty": 10, "max_difficulty": 100, "schedule_type": "fixed_discrete",
        "schedule_config": {"difficulty": [10, 50, 100], "max_step": [5, 10]}}}}))  # fmt: skip
    return [
        (("init", str(tmp / "fresh")), dict),
        (("migrate",), list),
        (("tables",), list),
        (("stats", "exemplars"), dict),
        (("versions", "exemplars"), list),
        (("tag", "exemplars", "2", "first"), dict),
        (("restore", "exemplars", "first"), dict),
        (("compact", "exemplars"), list),
        (("cleanup", "exemplars", "--older-than-hours", "0"), list),
        (("budget", "digits"), dict),
        (("sql", "SELECT class_id, COUNT(*) AS n FROM exemplars GROUP BY 1"), list),
        (("sql", "SELECT * FROM exemplars", "--format", "csv", "--output", str(tmp / "x.csv")), dict),
        (("curriculum", "score-length", "exemplars", "--column", "tokens"), dict),
        (("curriculum", "order", "short", "exemplars", "--metric", "seq_len", "--pacing", '{"type": "sqrt", "c0": 0.2, "T": 30}'), dict),
        (("curriculum", "order", "long", "exemplars", "--metric", "seq_len", "--direction", "hard_to_easy"), dict),
        (("curriculum", "list"), list),
        (("curriculum", "compare", "short", "long", "--k", "5"), dict),
        (("curriculum", "plot", "short", str(tmp / "short.png")), dict),
        (("curriculum", "import-deepspeed", str(ds)), list),
    ]


def test_valid_calls_print_data_with_json_and_nothing_on_stderr(seeded: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for args, shape in _valid(seeded, tmp_path):
        proc = run(*args, "--json", "--uri", seeded, capsys=capsys)  # global options after the command
        assert (proc.returncode, proc.stderr) == (0, ""), (args, proc.stderr)
        data = json.loads(proc.stdout)
        assert isinstance(data, shape) and "message" not in data, (args, data)
        human = run("--uri", seeded, *args, capsys=capsys) if args[0] not in ("tag", "init") else None  # a tag name is used once
        assert human is None or (human.returncode, human.stderr) == (0, ""), args
    listing = json.loads(run("--json", "--uri", seeded, "curriculum", "list", capsys=capsys).stdout)
    assert listing[0]["definition"]["pacing"] is None and listing[1]["definition"]["pacing"]["type"] == "sqrt"  # objects, not JSON text
    restored = json.loads(run("--uri", seeded, "--json", "restore", "exemplars", "first", capsys=capsys).stdout)  # tagged: kept by cleanup
    assert restored["table"] == "exemplars" and restored["restored_from"] == "first" and restored["version"] > 2


def test_read_commands_write_nothing(seeded: str, capsys: pytest.CaptureFixture[str]) -> None:
    reads = [("tables",), ("stats", "exemplars"), ("versions", "exemplars"), ("budget",), ("budget", "digits"),
             ("sql", "SELECT COUNT(*) AS n FROM exemplars"), ("curriculum", "list")]  # fmt: skip
    before = files(Path(seeded))
    for args in reads:
        proc = run("--uri", seeded, *args, capsys=capsys)
        assert (proc.returncode, proc.stderr) == (0, ""), args
        assert files(Path(seeded)) == before, args


def _bad(uri: str, tmp: Path) -> list[tuple[tuple[str, ...], int, str]]:
    no_curriculum = tmp / "train.json"
    no_curriculum.write_text(json.dumps({"train_batch_size": 8, "fp16": {"enabled": True}}))
    trajectories = tmp / "t.jsonl"
    trajectories.write_text("".join(json.dumps(t) + "\n" for t in TRAJECTORIES))
    missing = str(tmp / "missing" / "out")
    return [
        ((), 2, "the following arguments are required: COMMAND"),
        (("nosuch",), 2, "invalid choice: 'nosuch'"),
        (("init", "ftp://x/y"), 1, "unsupported store URI scheme 'ftp'"),
        (("migrate", "nope"), 1, "'nope'"),
        (("--uri", str(tmp / "typo"), "tables"), 1, f"no store at {tmp / 'typo'}: check --uri"),
        (("stats", "nope"), 1, "unknown table 'nope'"),
        (("versions", "nope"), 1, "unknown table 'nope'"),
        (("tag", "exemplars", "-1", "x"), 2, "argument version: must be an integer ≥ 0, got '-1'"),
        (("tag", "exemplars", "1", "a/b"), 1, "TableNameError: tag: 'a/b' is not allowed"),
        (("tag", "exemplars", "99", "x"), 1, "99"),
        (("restore", "nosuch", "1"), 1, "unknown table 'nosuch'"),
        (("restore", "exemplars", "99"), 1, "no version or tag 99"),
        (("compact", "nope"), 1, "unknown table 'nope'"),
        (("cleanup", "--older-than-hours", "-5"), 2, "argument --older-than-hours: must be a number ≥ 0, got '-5'"),
        (("budget", "nope"), 1, "nope"),
        (("sql", "SELECT a * FROM exemplars"), 1, "syntax error: incomplete expression at line 1, column 15 near 'FROM'"),
        (("sql", "SELECT * FROM digits-replay-exemplars"), 1, "quote names that contain '-': \"digits-replay-exemplars\""),
        (("sql", "SELECT * FROM exemplars", "--format", "csv", "--output", f"{missing}.csv"), 2, "does not exist: create it first"),
        (("sql", "DELETE FROM exemplars"), 1, "read-only"),
        (("curriculum", "score-length", "nope"), 1, "nope"),
        (("curriculum", "order", "x", "exemplars", "--metric", "loss"), 1, "unknown metric 'loss'"),
        (("curriculum", "order", "x", "exemplars", "--seed", "-1"), 2, "argument --seed: must be an integer ≥ 0"),
        (("--uri", str(tmp / "typo"), "curriculum", "list"), 1, "no store at"),
        (("curriculum", "compare", "a", "b"), 1, "'a'"),
        (("curriculum", "compare", "a", "b", "--k", "0"), 2, "argument --k: must be an integer ≥ 1"),
        (("curriculum", "plot", "a", f"{missing}.png"), 2, "does not exist: create it first"),
        (("curriculum", "import-deepspeed", str(no_curriculum)), 1, "no curriculum metrics found in the DeepSpeed config"),
        (("curriculum", "import-deepspeed", str(tmp / "none.json")), 2, "argument config: no file"),
        (("experiences", "--table", "nope", "retrieve", "x"), 1, "unknown table 'nope' in store"),
        (("experiences", "--table", "nope", "export", str(tmp / "x.jsonl")), 1, "check --table"),
        (("experiences", "--table", "nope", "refine"), 1, "unknown table 'nope'"),
        (("experiences", "--table", "nope", "index"), 1, "unknown table 'nope'"),
        (("experiences", "export", f"{missing}.jsonl"), 2, "does not exist: create it first"),
        (("experiences", "import", str(tmp / "none.jsonl")), 2, "argument file: no file"),
        (("experiences", "distill", str(trajectories), "--min-score", "5"), 2, "argument --min-score: must be a number in [0, 1], got '5'"),
        (("experiences", "distill", str(trajectories), "--dedup-threshold", "-1"), 2, "argument --dedup-threshold: must be a number in [0, 1]"),
        (("experiences", "retrieve", "x", "-k", "0"), 2, "argument -k: must be an integer ≥ 1"),
        (("ui", "--port", "70000"), 2, "argument --port: must be a port number between 1 and 65535, got '70000'"),
        (("--uri", str(tmp / "typo"), "ui"), 1, "no store at"),
        (("serve", "--limit", "-1"), 2, "argument --limit: must be an integer ≥ 1, got '-1'"),
        (("serve", "--prefect-file", str(tmp / "none.yaml")), 2, "argument --prefect-file: no file"),
        (("demo", "--budget", "-1"), 2, "argument --budget: must be an integer ≥ 1, got '-1'"),
        (("demo", "--seeds", "0"), 2, "argument --seeds: must be an integer ≥ 1, got '0'"),
        (("demo", "--tasks", "0"), 2, "argument --tasks: must be an integer ≥ 1"),
        (("demo", "--output", missing), 2, "does not exist: create it first"),
    ]


def _command(args: tuple[str, ...]) -> tuple[str, ...] | None:
    """The command a call names: its words without options and the values of --uri and --table."""
    words, skip = [], False
    for arg in args:
        if skip or arg.startswith("-"):
            skip = arg in ("--uri", "--table")
            continue
        words.append(arg)
    return next((c for c in COMMANDS if tuple(words[: len(c)]) == c), None)


def test_bad_calls_fail_in_one_line_with_the_right_code_and_change_nothing(seeded: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = files(Path(seeded))
    covered = set()
    for args, code, says in _bad(seeded, tmp_path):
        with_uri = args if "--uri" in args or args[:1] == ("init",) else ("--uri", seeded, *args)
        proc = run(*with_uri, capsys=capsys)
        lines = proc.stderr.splitlines()
        assert proc.returncode == code and len(lines) == 1 and lines[0].startswith("error: "), (args, proc.returncode, proc.stderr)
        assert says in lines[0] and "Traceback" not in proc.stderr and "sqlglot" not in proc.stderr, (args, lines[0])
        assert files(Path(seeded)) == before, args
        covered.add(_command(args))
    assert not (tmp_path / "typo").exists() and not (tmp_path / "missing").exists() and not (tmp_path / "out").exists()
    assert covered - {None} == set(COMMANDS), set(COMMANDS) - covered  # every command has a bad call


def test_global_options_work_before_or_after_the_command(seeded: str, capsys: pytest.CaptureFixture[str]) -> None:
    before = json.loads(run("--json", "--uri", seeded, "tables", capsys=capsys).stdout)
    assert json.loads(run("tables", "--json", "--uri", seeded, capsys=capsys).stdout) == before
    assert json.loads(run("--uri", seeded, "curriculum", "--json", "list", capsys=capsys).stdout) == []  # between the levels too
    debug = run("stats", "nope", "--uri", seeded, "--debug", capsys=capsys)
    assert debug.returncode == 1 and "Traceback" in debug.stderr and debug.stderr.splitlines()[-1].startswith("error: NotFoundError")


@pytest.mark.slow  # MiniLM loads in each experiences call's memory
def test_experience_commands_valid_calls_and_the_one_that_moves_nothing(seeded: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trajectories = tmp_path / "t.jsonl"
    trajectories.write_text("".join(json.dumps(t) + "\n" for t in TRAJECTORIES))
    dump = tmp_path / "dump.jsonl"
    calls = [
        ("experiences", "distill", str(trajectories), "--workspace", "travel", "--dedup-threshold", "0.95"),
        ("experiences", "retrieve", "cheap flight booking", "--workspace", "travel", "-k", "2"),
        ("experiences", "index"),
        ("experiences", "retrieve", "cheap flight", "--workspace", "travel", "--mode", "hybrid"),
        ("experiences", "export", str(dump)),
        ("experiences", "import", str(dump)),
        ("experiences", "refine", "--freq-threshold", "1"),
    ]
    for args in calls:
        if args[1] == "index":  # a text search before the index says which command builds it
            early = run("--uri", seeded, "experiences", "retrieve", "cheap flight", "--workspace", "travel", "--mode", "text", capsys=capsys)
            assert early.returncode == 1 and early.stderr.count("\n") == 1 and "replaystore experiences index" in early.stderr
        proc = run("--uri", seeded, "--json", *args, capsys=capsys)
        assert (proc.returncode, proc.stderr) == (0, ""), (args, proc.stderr)  # no "Loading weights" bar
        assert "message" not in json.loads(proc.stdout)
    before = files(Path(seeded))
    moved = run("--uri", seeded, "experiences", "import", str(dump), "--workspace", "elsewhere", capsys=capsys)
    assert moved.returncode == 1 and moved.stderr.count("\n") == 1 and "would move them" in moved.stderr
    assert files(Path(seeded)) == before


@pytest.mark.slow  # Ray Train, Prefect flows: a minute or two
@pytest.mark.timeout(900)
def test_demo_json_is_its_results_and_its_stderr_only_its_own_progress(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = run_cli("demo", "--small", "--tasks", "1", "--no-text", "--output", str(out), "--json", uri=str(tmp_path / "store"), check=True, timeout=900)
    data = json.loads(proc.stdout)
    assert data["results"] == json.loads((out / "results.json").read_text()) and str(out / "report.md") in data["files"]
    noise = [line for line in re.split(r"[\r\n]+", proc.stderr) if line.strip() and not line.startswith("demo: ")]
    assert noise == []  # no Prefect telemetry, Lance fork-safety or Ray token lines
