"""The layering in ARCHITECTURE.md holds: the library never imports Prefect, Ray only in its Ray module."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import replaystore

LIBRARY = sorted(
    m.name
    for m in pkgutil.walk_packages(replaystore.__path__, "replaystore.")
    if not m.name.startswith("replaystore.cli") and m.name != "replaystore.stream.ray_train"
)


def test_library_imports_neither_prefect_nor_ray() -> None:
    code = (
        "import sys\n"
        f"for name in {LIBRARY!r}:\n"
        "    __import__(name)\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'prefect', 'ray'}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True).stdout
    assert out.strip() == "[]", f"library modules pulled in {out.strip()}"
    assert len(LIBRARY) > 30
