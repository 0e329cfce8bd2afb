"""Every Python and shell block of README.md and docs/*.md runs as written, in order, on a fresh store.

Per markdown file: the Python blocks share one namespace and the shell blocks run in bash, all in one
fresh temporary folder (so `replaystore.open()` and `replaystore …` find no store until a block makes
one), in the order the file shows them; then the whole file runs a second time in the same folder,
because a reader reruns snippets (a rerun must not fail, e.g. on a tag that exists).

A block may carry a marker on the line before its fence (an HTML comment, invisible when rendered):
`<!-- snippet: skip REASON -->` never runs it (it needs a GPU, a cluster, a server or an install from
the network), `<!-- snippet: slow REASON -->` runs it, but only in the slow suite (Ray, Prefect's
local server, the demo): its whole file is then marked slow. Files whose blocks load models are slow
too (SLOW_FILES): the quick loop keeps to the cheap ones.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT

FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>[\w+-]*)\s*$")
MARKER = re.compile(r"<!--\s*snippet:\s*(?P<kind>skip|slow)\b\s*(?P<reason>.*?)\s*-->")
RUN = {"python": "python", "bash": "bash"}
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Model loads, GeRe distillation, MiniLM, CLI subprocesses: 10 s and more each on a 2-core machine.
SLOW_FILES = {"README.md", "experiences.md", "gere.md", "streaming.md", "sql.md"}


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    lang: str
    code: str
    marker: str | None  # "skip" | "slow" | None
    reason: str

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """The fenced blocks of a page with their language and marker (fences may be indented in lists)."""
    lines = page.read_text(encoding="utf-8").splitlines()
    found, i = [], 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
        before = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        marker = MARKER.search(before)
        code = textwrap.dedent("\n".join(lines[i + 1 : end]))
        found.append(Block(page, i + 1, opening["lang"], code, marker["kind"] if marker else None, marker["reason"] if marker else ""))
        i = end + 1
    return found


def _runnable(page: Path) -> list[Block]:
    return [b for b in blocks(page) if b.lang in RUN and b.marker != "skip"]


def _param(page: Path) -> object:
    slow = page.name in SLOW_FILES or any(b.marker == "slow" for b in _runnable(page))
    return pytest.param(page, id=page.name, marks=[pytest.mark.slow, pytest.mark.timeout(1800)] if slow else [])


def _run_page(page: Path, folder: Path) -> None:
    namespace: dict[str, object] = {"__name__": "__main__"}
    env = {k: v for k, v in os.environ.items() if k != "REPLAYSTORE_URI"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # `replaystore` and `python` of this venv
    for block in _runnable(page):
        if block.lang == "python":
            try:
                exec(compile(block.code, block.where, "exec"), namespace)  # the documentation is the code under test
            except Exception as exc:
                raise AssertionError(f"{block.where}: {type(exc).__name__}: {exc}") from exc
        else:
            proc = subprocess.run(["bash", "-euo", "pipefail", "-c", block.code], cwd=folder, env=env, capture_output=True, text=True, timeout=900)
            assert proc.returncode == 0, f"{block.where} exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"


@pytest.mark.parametrize("page", [_param(p) for p in PAGES if _runnable(p)])
def test_every_block_runs_as_written_in_order_on_a_fresh_store_and_again(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("REPLAYSTORE_URI", raising=False)
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / ".prefect"))  # Prefect's local mode keeps its database here
    monkeypatch.setenv("RAY_ADDRESS", "local")  # a page's Ray starts its own, never joins a cluster another test file runs
    assert not (tmp_path / "replaystore-data").exists()
    try:
        _run_page(page, tmp_path)
        _run_page(page, tmp_path)
    finally:
        _shut_down_ray()


def _shut_down_ray() -> None:
    """A page that trains with Ray Train starts Ray in this process (as a reader's script would); stop
    it, so the tests after this one start their own."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_code_blocks_are_python_or_bash_and_every_skip_says_why(page: Path) -> None:
    """A block in another language would silently escape the test above; output listings have no language."""
    for block in blocks(page):
        assert block.lang in ("", *RUN), f"{block.where}: fence language {block.lang!r}; use python, bash, or none for output"
        assert block.marker != "skip" or len(block.reason) > 10, f"{block.where}: a skipped block says why"


def test_the_extractor_reads_markers_indented_fences_and_languages(tmp_path: Path) -> None:
    page = tmp_path / "p.md"
    page.write_text(
        "text\n\n```python\nx = 1\n```\n<!-- snippet: skip needs a GPU to run -->\n```bash\nnvidia-smi\n```\n"
        "- item\n\n  ```python\n  y = x + 1\n  ```\n\n```\noutput\n```\n"
    )
    found = blocks(page)
    assert [(b.lang, b.marker, b.code) for b in found] == [
        ("python", None, "x = 1"), ("bash", "skip", "nvidia-smi"), ("python", None, "y = x + 1"), ("", None, "output"),
    ]  # fmt: skip
    assert found[1].reason == "needs a GPU to run" and found[2].line == 12
    assert [b.code for b in _runnable(page)] == ["x = 1", "y = x + 1"]
