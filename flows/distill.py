"""The distill flow: turn raw material into memory. Parameters say which of three branches run.

- `general`: general texts -> `general_samples` (ingested once by content hash), then a frozen
  model's activation states and float64 statistics (`replaystore.gere`; resumable, so a retried or
  repeated run only forwards what is missing).
- `experiences`: agent trajectories (JSONL) -> validated, deduplicated lessons (`ExperienceMemory.distill`).
- `exemplars`: candidates of a task in a `task_samples` table -> features from a feature
  extractor saved with `torch.export.save` (a `.pt2` file, batch dimension dynamic) -> offered class by class to a byte-budgeted exemplar buffer, whose selector
  (herding, ...) ranks them by those features.

Models are local paths, so a deployment's parameters stay plain JSON.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
from prefect import flow, get_run_logger
from pydantic import AfterValidator, DirectoryPath, Field, FilePath

from replaystore.errors import ValidationError
from replaystore.exemplars import ExemplarBuffer
from replaystore.exemplars.samples import decode_raw
from replaystore.experiences import ExperienceMemory
from replaystore.extras import require
from replaystore.flows.parameters import Name, NonNegative, Positive, StoreURI, Strict, checked, open_store
from replaystore.flows.reporting import publish_summary, with_progress
from replaystore.flows.retries import store_task
from replaystore.flows.tables import exemplar_buffers, existing_tables
from replaystore.gere import distill as distill_states
from replaystore.gere import ingest
from replaystore.gere.codec import check_precision
from replaystore.schemas import Kind
from replaystore.store import Store


class GeneralSamples(Strict):
    """Ingest `texts` (.jsonl/.parquet, optional) as `source`, then distill `model`'s states for every sample."""

    model: DirectoryPath
    texts: FilePath | None = None
    source: str = "general"
    tokenizer: DirectoryPath | None = None
    precision: Annotated[str, AfterValidator(check_precision)] = "float32"
    layers: list[int] = [-1]
    batch_size: Positive = 8
    max_length: Positive = 563


class Trajectories(Strict):
    """Distill the trajectories in `path` (JSONL, one ReMe trajectory per line) into `table`."""

    path: FilePath
    workspace: str = "default"
    table: Name = Kind.EXPERIENCES.value
    min_score: NonNegative = 0.5
    dedup_threshold: Annotated[float, Field(ge=-1, le=1)] = 0.5


class ExemplarCandidates(Strict):
    """Offer task `task_id`'s rows of `source` to exemplar buffer `buffer`, with features from `model`."""

    buffer: Name
    task_id: Annotated[int, Field(ge=0)]
    model: FilePath
    source: Name = Kind.TASK_SAMPLES.value
    batch_size: Positive = 256


@store_task
def ingest_texts(store: Store, spec: GeneralSamples) -> dict[str, Any]:
    """Store the general texts once each (re-running skips what is there)."""
    require("transformers", extra="gere", feature="the distill flow's general samples")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(spec.tokenizer or spec.model))
    result = ingest(store, str(spec.texts), source=spec.source, tokenizer=tokenizer, max_length=spec.max_length)
    get_run_logger().info("ingested %s: %d added, %d already stored", spec.texts, result["added"], result["skipped"])
    return {"step": "ingest", "source": spec.source, "added": result["added"], "skipped": result["skipped"]}


@store_task
def general_states(store: Store, spec: GeneralSamples) -> dict[str, Any]:
    """Record the frozen model's states and statistics for the samples that lack them."""
    summary = distill_states(
        store,
        str(spec.model),
        str(spec.tokenizer) if spec.tokenizer else None,
        precision=spec.precision,
        layers=spec.layers,
        batch_size=spec.batch_size,
        max_length=spec.max_length,
    )
    get_run_logger().info(
        "distilled %s: %d states written, %d already stored, %d tokens at %.0f tokens/s",
        summary["model_fingerprint"][:12],
        summary["states_written"],
        summary["already_stored"],
        summary["forwarded_tokens"],
        summary["tokens_per_s"],
    )
    return {"step": "states", "model": summary["model_fingerprint"][:12], "added": summary["states_written"], "skipped": summary["already_stored"]}


def read_trajectories(path: Path) -> list[dict[str, Any]]:
    """The JSONL file's trajectories, read before any task so a broken line fails the run early."""
    out = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValidationError("experiences.path", f"{path}:{number} is not JSON ({exc.msg})") from None
    return out


@store_task
def distill_experiences(store: Store, spec: Trajectories, trajectories: list[dict[str, Any]]) -> dict[str, Any]:
    """Trajectories -> lessons -> validation -> dedup -> one append."""
    memory = ExperienceMemory(store, spec.table, dedup_threshold=spec.dedup_threshold)
    report = memory.distill(trajectories, workspace=spec.workspace, min_score=spec.min_score)
    get_run_logger().info(
        "distilled %s: %d candidates, %d rejected by validation, %d added, %d duplicates skipped",
        spec.path.name,
        report.candidates,
        len(report.rejected),
        len(report.added),
        len(report.skipped),
    )
    return {
        "table": spec.table,
        "candidates": report.candidates,
        "rejected": len(report.rejected),
        "added": len(report.added),
        "duplicates": len(report.skipped),
    }


def _features(model: torch.nn.Module, samples: np.ndarray, batch_size: int) -> np.ndarray:
    with torch.inference_mode():
        x = torch.from_numpy(samples).float()
        return torch.cat([model(x[i : i + batch_size]).flatten(1) for i in range(0, len(x), batch_size)]).numpy()


@store_task
def offer_exemplars(store: Store, spec: ExemplarCandidates) -> list[dict[str, Any]]:
    """Features for the task's candidates, then one `add` per class (the buffer keeps what fits)."""
    rows = store.read(spec.source, filter=f"task_id = {spec.task_id}").sort_by("sample_id")
    if rows.num_rows == 0:
        raise ValidationError("exemplars.task_id", f"'{spec.source}' has no rows of task {spec.task_id}")
    samples = decode_raw(rows["data"], rows["shape"][0].as_py(), rows["dtype"][0].as_py())
    features = _features(torch.export.load(str(spec.model)).module(), samples, spec.batch_size)
    labels, ids = rows["class_id"].to_numpy(), rows["sample_id"].to_numpy()
    buffer, logger, out = ExemplarBuffer.open(store, spec.buffer), get_run_logger(), []
    for class_id in with_progress(np.unique(labels).tolist(), f"offering task {spec.task_id} to {spec.buffer}"):
        mine = labels == class_id
        change = buffer.add(class_id, samples[mine], features[mine], task_id=spec.task_id, sample_ids=ids[mine])
        logger.info("class %d: offered %d, kept %d, cut %s, %d bytes freed", class_id, mine.sum(), change.added, change.cut or "none", change.bytes_freed)
        out.append(
            {
                "buffer": spec.buffer,
                "class_id": class_id,
                "offered": int(mine.sum()),
                "added": change.added,
                "rows_cut": change.rows_cut,
                "bytes_freed": change.bytes_freed,
            }
        )
    return out


@flow(name="distill", validate_parameters=False, log_prints=True)
@checked
def distill(
    store_uri: StoreURI = None,
    general: GeneralSamples | None = None,
    experiences: Trajectories | None = None,
    exemplars: ExemplarCandidates | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Run the branches whose parameters are given (at least one)."""
    if general is None and experiences is None and exemplars is None:
        raise ValidationError("parameters", "give at least one of general, experiences, exemplars")
    store = open_store(store_uri)
    trajectories = read_trajectories(experiences.path) if experiences is not None else []
    if exemplars is not None:
        existing_tables(store, [exemplars.source])
        exemplar_buffers(store, [exemplars.buffer])
    summary: dict[str, list[dict[str, Any]]] = {}
    if general is not None:
        steps = [ingest_texts(store, general)] if general.texts is not None else []
        summary["general samples"] = [*steps, general_states(store, general)]
    if experiences is not None:
        summary["experiences"] = [distill_experiences(store, experiences, trajectories)]
    if exemplars is not None:
        summary["exemplars"] = offer_exemplars(store, exemplars)
    publish_summary("distill", f"distill into {store.uri}", summary)
    return summary
