"""The GeRe page: which frozen models the stored states belong to, their per-dimension thresholds
(mean ± k·std from the float64 statistics) and how the zone codes split into low / between / high.

Zone shares come from the first `SAMPLED_ROWS` zone-coded rows of a model, decoded with the same
unpacking the replay uses; the page says how many rows and codes they cover.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from replaystore.gere.codec import binary_payload
from replaystore.gere.zones import BETWEEN, HIGH, LOW, unpack_rows
from replaystore.predicates import literal
from replaystore.schemas import Kind
from replaystore.store import Store
from replaystore.ui import charts

STATES, STATS, SAMPLES = Kind.ACTIVATION_STATES.value, Kind.ACTIVATION_STATS.value, Kind.GENERAL_SAMPLES.value  # the default tables the GeRe functions write
SAMPLED_ROWS = 200
DIMS_CHARTED = 128


def report(store: Store) -> dict[str, Any]:
    models = []
    if store.exists(STATES):
        ds = store.dataset(STATES)
        grouped = (
            pl.scan_lance(ds, version=ds.version)
            .select("model_fingerprint", "layer", "precision", "zone_k", "token_count", "sample_id")
            .group_by("model_fingerprint", "layer", "precision")
            .agg(pl.len().alias("rows"), pl.col("sample_id").n_unique().alias("samples"), pl.col("token_count").sum().alias("tokens"), pl.col("zone_k").first())
            .sort("model_fingerprint", "layer")
            .collect()
        )
        models = list(grouped.iter_rows(named=True))
    for model in models:
        model["thresholds"] = _thresholds(store, model["model_fingerprint"], model["layer"], model["zone_k"] or 1.0)
        model["zones"] = _zones(store, model["model_fingerprint"], model["layer"]) if model["precision"] == "zones" else None
    return {"models": models, "samples": store.count(SAMPLES) if store.exists(SAMPLES) else 0}


def _thresholds(store: Store, fingerprint: str, layer: int, k: float) -> dict[str, Any] | None:
    if not store.exists(STATS):
        return None
    rows = store.read(STATS, columns=["count", "hidden_dim", "mean", "std"], filter=f"model_fingerprint = {literal(fingerprint)} AND layer = {int(layer)}")
    if rows.num_rows == 0:
        return None
    mean, std = np.asarray(rows["mean"][0].as_py()), np.asarray(rows["std"][0].as_py())
    dims = np.arange(min(len(mean), DIMS_CHARTED))
    chart = charts.lines(
        dims,
        {"neg = mean − k·std": (mean - k * std)[dims], "mean": mean[dims], "pos = mean + k·std": (mean + k * std)[dims]},
        y_label="activation",
        x_label=f"dimension (first {len(dims)} of {len(mean)})",
        step=False,
    )
    return {"count": rows["count"][0].as_py(), "hidden_dim": rows["hidden_dim"][0].as_py(), "k": k, "chart": chart}


def _zones(store: Store, fingerprint: str, layer: int) -> dict[str, Any]:
    ds = store.dataset(STATES)
    rows = ds.to_table(
        columns=["states", "token_count", "hidden_dim"],
        filter=f"model_fingerprint = {literal(fingerprint)} AND layer = {int(layer)} AND precision = 'zones'",
        limit=SAMPLED_ROWS,
    )
    hidden = int(rows["hidden_dim"][0].as_py())
    codes = unpack_rows(binary_payload(rows["states"]), rows["token_count"].to_numpy() * hidden)
    counts = np.bincount(codes, minlength=3)
    shares = {name: counts[code] / max(codes.size, 1) for name, code in (("low (≤ neg)", LOW), ("between", BETWEEN), ("high (≥ pos)", HIGH))}
    per_dim = codes.reshape(-1, hidden)[:, : min(hidden, DIMS_CHARTED)]
    series = {name: (per_dim == code).mean(0) for name, code in (("low", LOW), ("between", BETWEEN), ("high", HIGH))}
    return {
        "rows": rows.num_rows,
        "codes": int(codes.size),
        "shares": shares,
        "chart": charts.bars([str(d) for d in range(per_dim.shape[1])], series, y_label="share of tokens", x_label="dimension"),
    }
