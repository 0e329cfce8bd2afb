"""The layering in README.md ("Layers") holds: the library never imports Prefect, Ray only in its Ray module,
and the flows (installed as `replaystore.flows`) are the layer above that may. The core imports
nothing above it: the memory kinds and SQL reach users through `replaystore.api.Store`."""

from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import replaystore
import replaystore.store

# Above the library: the CLI, the web view, the flows, and the data packages built from schemas/ and deploy/.
ABOVE = ("replaystore.cli", "replaystore.__main__", "replaystore.ui", "replaystore.flows", "replaystore.contracts", "replaystore.deploy")
UI = sorted(m.name for m in pkgutil.walk_packages(replaystore.__path__, "replaystore.") if m.name.startswith("replaystore.ui"))

LIBRARY = sorted(
    m.name for m in pkgutil.walk_packages(replaystore.__path__, "replaystore.") if not m.name.startswith(ABOVE) and m.name != "replaystore.stream.ray_train"
)


def imported_top_levels(modules: list[str]) -> list[str]:
    code = (
        "import json, sys\n"
        f"for name in {modules!r}:\n"
        "    __import__(name)\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & {'prefect', 'ray', 'flows'})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True).stdout
    return list(json.loads(out))


def test_library_imports_neither_prefect_nor_ray() -> None:
    assert imported_top_levels(LIBRARY) == [], "library modules pulled in Prefect or Ray"
    assert len(LIBRARY) > 30


def test_the_web_view_sits_above_the_kinds_and_nothing_below_imports_it() -> None:
    assert len(UI) > 5 and imported_top_levels(UI) == [], "the web view pulled in Prefect or Ray"
    root = Path(replaystore.__file__).parent
    for name in LIBRARY:
        path = root.joinpath(*name.split(".")[1:])
        source = (path / "__init__.py" if path.is_dir() else path.with_suffix(".py")).read_text()
        assert not any(i.startswith("replaystore.ui") for i in replaystore_imports(source, name)), f"{name} imports the web view"


def test_flows_live_under_the_package_and_nothing_named_flows_is_imported() -> None:
    flows = ["replaystore.flows.distill", "replaystore.flows.index", "replaystore.flows.prune", "replaystore.flows.stream"]
    assert imported_top_levels(flows) == ["prefect"], "the flows use Prefect, never a top-level module named flows"


# The core (README.md "Layers", layer 2) and what it may import from the package: itself and the contracts.
CORE = ("store", "table", "schemas", "errors", "retry", "extras", "lance_errors", "checks", "predicates")
CORE_ALLOWED = {f"replaystore.{name}" for name in (*CORE, "contracts")}


def replaystore_imports(source: str, module: str) -> set[str]:
    """Every `replaystore` module `source` imports, at top level or inside functions, relative ones resolved."""
    package = module.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            # `from replaystore import schemas` imports the module replaystore.schemas
            found |= {f"{base}.{alias.name}" for alias in node.names} if base == "replaystore" else {base}
    return {name for name in found if name == "replaystore" or name.startswith("replaystore.")}


def above_core(source: str, module: str) -> list[str]:
    allowed = lambda name: any(name == ok or name.startswith(ok + ".") for ok in CORE_ALLOWED)  # noqa: E731
    return sorted(name for name in replaystore_imports(source, module) if not allowed(name))


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from replaystore import schemas\nfrom replaystore.errors import ValidationError", []),
        ("def exemplars(self):\n    from replaystore.exemplars import ExemplarBuffer", ["replaystore.exemplars"]),
        ("def sql(self):\n    import replaystore.query.execute", ["replaystore.query.execute"]),
        ("from . import api\nfrom .stream import ReplayStream", ["replaystore.api", "replaystore.stream"]),
        ("import replaystore", ["replaystore"]),
    ],
)
def test_the_core_import_check_sees_lazy_and_relative_imports(source: str, expected: list[str]) -> None:
    assert above_core(source, "replaystore.store") == expected


@pytest.mark.parametrize("name", CORE)
def test_the_core_imports_nothing_above_it(name: str) -> None:
    path = Path(replaystore.store.__file__).with_name(f"{name}.py")
    assert above_core(path.read_text(), f"replaystore.{name}") == [], f"replaystore/{name}.py imports from a layer above the core"


def test_open_returns_a_core_store_with_the_memory_kinds_and_sql(tmp_path: Path) -> None:
    from replaystore.exemplars import ExemplarBuffer
    from replaystore.experiences import ExperienceMemory

    store = replaystore.open(str(tmp_path / "store"))
    assert isinstance(store, replaystore.store.Store) and isinstance(store, replaystore.Store)
    assert not hasattr(replaystore.store.Store, "exemplars"), "the core store grew a memory kind"

    buffer = store.exemplars("digits", budget=10 * 16, selector="random")
    assert isinstance(buffer, ExemplarBuffer)
    buffer.add(3, np.zeros((4, 4, 4), np.uint8))
    memory = store.experiences()
    assert isinstance(memory, ExperienceMemory)
    assert len(memory.add([{"when_to_use": "When an HTTP API answers 429", "content": "Back off and retry"}]).added) == 1

    frame = store.sql("SELECT class_id, COUNT(*) AS n FROM digits GROUP BY class_id")
    assert frame.rows() == [(3, 4)]
    assert store.sql_arrow("SELECT COUNT(*) AS n FROM experiences").to_pylist() == [{"n": 1}]
    assert sum(batch.num_rows for batch in store.sql_batches("SELECT * FROM digits", batch_rows=3)) == 4


def test_importing_replaystore_loads_no_memory_kind_and_no_torch() -> None:
    code = "import sys, replaystore; print(sorted(m for m in ('torch', 'replaystore.exemplars', 'replaystore.experiences', 'replaystore.query') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True).stdout
    assert out.strip() == "[]"
