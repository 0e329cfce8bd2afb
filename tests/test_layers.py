"""The layering in ARCHITECTURE.md holds: the library never imports Prefect, Ray only in its Ray module,
and the flows (installed as `replaystore.flows`) are the layer above that may."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import replaystore

# Above the library: the CLI, the flows, and the data packages built from schemas/ and deploy/.
ABOVE = ("replaystore.cli", "replaystore.flows", "replaystore.contracts", "replaystore.deploy")

LIBRARY = sorted(
    m.name
    for m in pkgutil.walk_packages(replaystore.__path__, "replaystore.")
    if not m.name.startswith(ABOVE) and m.name != "replaystore.stream.ray_train"
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


def test_flows_live_under_the_package_and_nothing_named_flows_is_imported() -> None:
    flows = ["replaystore.flows.distill", "replaystore.flows.index", "replaystore.flows.prune", "replaystore.flows.stream"]
    assert imported_top_levels(flows) == ["prefect"], "the flows use Prefect, never a top-level module named flows"
