"""The Exemplar buffer page: how the byte budget and the classes moved over versions, and what is kept.

Each version's settings travel with its rows (schema metadata), so the budget of version v is the
budget the rows of v were kept under. Exemplar tables are small by construction (a budget bounds
them); only `class_id` and `nbytes` are read per version, and the grid reads `GRID_PER_CLASS` rows
per class at most.
"""

from __future__ import annotations

from typing import Any

import pyarrow.compute as pc

from replaystore.exemplars import ExemplarBuffer
from replaystore.store import Store, Version
from replaystore.ui import cells, charts

VERSIONS = 30  # most recent versions charted
GRID_PER_CLASS = 24


def buffers(store: Store) -> list[str]:
    return [name for name in ExemplarBuffer.names(store) if store.exists(name)]


def report(store: Store, name: str, version: Version | None = None) -> dict[str, Any]:
    buffer = ExemplarBuffer.open(store, name)  # no settings given: only reads
    ds = store.dataset(name, version)
    budgets, classes = _over_versions(store, buffer, [v["version"] for v in store.dataset(name).versions()][-VERSIONS:])
    labels = [str(b["version"]) for b in budgets]
    known = sorted({c for b in classes for c in b})
    return {
        "name": name,
        "version": ds.version,
        "budget": buffer.budget(),
        "budget_chart": charts.bars(
            labels,
            {
                "model": [b["model"] for b in budgets],
                "exemplars": [b["exemplars"] for b in budgets],
                "free": [b["free"] for b in budgets],
            },
            y_label="bytes",
            x_label="version",
        ),
        "class_chart": charts.bars(labels, {f"class {c}": [b.get(c, 0) for b in classes] for c in known}, y_label="exemplars", x_label="version"),
        "grid": _grid(store, name, ds.version),
    }


def _over_versions(store: Store, buffer: ExemplarBuffer, versions: list[int]) -> tuple[list[dict[str, int]], list[dict[int, int]]]:
    budgets, classes = [], []
    for v in versions:
        settings = buffer.settings_at(v)
        rows = store.read(buffer.name, version=v, columns=["class_id", "nbytes"])
        used = int(pc.sum(rows["nbytes"]).as_py() or 0)
        total = settings.budget_bytes if settings.budget_bytes is not None else settings.model_bytes + used
        budgets.append({"version": v, "model": settings.model_bytes, "exemplars": used, "free": max(total - settings.model_bytes - used, 0)})
        counts = rows.group_by("class_id").aggregate([("class_id", "count")])
        classes.append(dict(zip(counts["class_id"].to_pylist(), counts["class_id_count"].to_pylist())))
    return budgets, classes


def _grid(store: Store, name: str, version: int) -> list[dict[str, Any]]:
    """Per class, its first kept exemplars in rank order, as thumbnails (text samples as token counts)."""
    ds = store.dataset(name, version)
    ids = ds.to_table(columns=["class_id"])["class_id"].unique().sort().to_pylist()
    out = []
    for class_id in ids:
        rows = ds.to_table(columns=["sample_id", "rank", "task_id", "data", "shape", "dtype", "tokens"], filter=f"class_id = {int(class_id)}").sort_by("rank")
        kept = rows.num_rows
        rows = rows.slice(0, GRID_PER_CLASS).to_pylist()
        items = []
        for r in rows:
            title = f"class {class_id} rank {r['rank']} sample {r['sample_id']} task {r['task_id']}"
            image = cells.as_image(r["data"], r["shape"], r["dtype"])
            items.append(cells.thumbnail(image, title) if image is not None else cells.text(f"rank {r['rank']}: {len(r['tokens'] or [])} tokens"))
        out.append({"class_id": class_id, "kept": kept, "thumbs": items})
    return out
