"""A store filled with real data through the same library calls the demo makes, in seconds.

sklearn's digits go into task tables and a MEMO-budgeted exemplar buffer (herding on an MLP's
features, one tag per task); the tasks are scored by the MLP's loss and ordered easy-to-hard
with a square-root pacing (the first also by lit pixels, which tie); the losses become replay priorities; Python's docstrings become GeRe
general samples distilled as zone codes of a tiny causal LM, and ReMe experiences in two
workspaces that are retrieved and judged helpful or not.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import torch
from torch import nn

import replaystore
from replaystore.cli.demo.digits import IMAGE_SHAPE, TASKS, load_split, task_rows
from replaystore.cli.demo.model import MLP, to_input
from replaystore.curriculum import LinearPacing, ModelLoss, OrderingDefinition, SqrtPacing, build_ordering, load_scores, score
from replaystore.exemplars import model_nbytes, sample_nbytes
from replaystore.schemas import Kind
from replaystore.stream import to_tensors

BUFFER = "digits-exemplars"
SLOTS = 60  # exemplar images the budget holds besides the model


def _loss_inputs(batch: pa.RecordBatch) -> tuple[torch.Tensor, torch.Tensor]:
    tensors = to_tensors(pa.Table.from_batches([batch]))
    return to_input(tensors["data"]), tensors["class_id"]


def ink(batch: pa.RecordBatch) -> np.ndarray:
    """Lit pixels per image: a difficulty with many ties (a curriculum page has to explain them)."""
    return (to_tensors(pa.Table.from_batches([batch]))["data"] > 0).sum((1, 2)).numpy()


def fill_digits(store: replaystore.Store, tasks: int = 3) -> None:
    """Task tables, loss scores, orderings, priorities and the exemplar buffer after each task."""
    torch.manual_seed(0)
    split = load_split(0)
    model = MLP(32)
    buffer = store.exemplars(
        BUFFER, budget=model_nbytes(model) + SLOTS * sample_nbytes(IMAGE_SHAPE, np.uint8), model=model, policy="fixed_total", selector="herding"
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for t, classes in enumerate(TASKS[:tasks]):
        table = f"digits-task{t}"
        store.append(table, task_rows(split, t, classes), kind=Kind.TASK_SAMPLES)
        loss = ModelLoss(model.eval(), nn.CrossEntropyLoss(reduction="none"), collate=_loss_inputs)
        score(store, table, "loss", loss, columns=["data", "shape", "dtype", "class_id"], description="digits MLP cross-entropy")
        pacing = SqrtPacing(0.3, 40)
        build_ordering(store, f"{table}-easy-first", table, OrderingDefinition(metric="loss", direction="easy_to_hard", pacing=pacing))
        if t == 0:
            score(store, table, "ink", ink, columns=["data", "shape", "dtype"], description="lit pixels")
            build_ordering(store, f"{table}-ink", table, OrderingDefinition(metric="ink", direction="easy_to_hard", pacing=LinearPacing(0.1, 30)))
        scores = load_scores(store, table, "loss")
        store.create_table("priorities", Kind.PRIORITIES)
        store.merge(
            "priorities",
            {"source": [table] * len(scores.sample_ids), "sample_id": scores.sample_ids, "priority": np.abs(scores.values) + 1e-6},
            on=["source", "sample_id"],
        )
        mask = np.isin(split.train_y, classes)
        x, y = torch.from_numpy(split.train_x[mask]), torch.from_numpy(split.train_y[mask])
        model.train()
        for _ in range(30):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(to_input(x)), y).backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            features = model.features(to_input(x)).numpy()
        ids = np.nonzero(mask)[0]
        for c in classes:
            pick = split.train_y[mask] == c
            buffer.add(int(c), split.train_x[mask][pick], features=features[pick], task_id=t, sample_ids=ids[pick])
        store.tag(BUFFER, store.dataset(BUFFER).version, f"after-task-{t}")


def fill_text(store: replaystore.Store, general: int = 60) -> dict[str, Any]:
    """GeRe general samples with zone codes of a tiny causal LM, and experiences from docstrings."""
    from replaystore.gere import distill
    from replaystore.gere.offline import python_docstrings, tiny_causal_lm, word_tokenizer
    from replaystore.gere.samples import ingest

    docs = python_docstrings(limit=general + 40)
    tokenizer = word_tokenizer(docs, vocab_size=800)
    model = tiny_causal_lm(len(tokenizer), hidden=32, layers=1, heads=2, positions=40, seed=0)
    ingest(store, docs[:general], source="python-docstrings", tokenizer=tokenizer, max_length=32)
    summary = distill(store, model, tokenizer, precision="zones", batch_size=16, max_length=32)

    memory = store.experiences(dedup_threshold=0.9)
    lessons = docs[general:]
    rows = [
        {"when_to_use": text.split(".")[0][:160], "content": text[:400], "workspace": "stdlib-a" if i % 2 else "stdlib-b"} for i, text in enumerate(lessons)
    ]
    memory.add(rows)
    for workspace in ("stdlib-a", "stdlib-b"):
        for query in ("parse a file", "return the value", "socket connection", "format a string", "thread lock"):
            hits = memory.retrieve(query, workspace=workspace, k=4)
            ids = hits["experience_id"].to_pylist()
            memory.record_use(ids, helpful=[i % 3 == 0 for i in range(len(ids))])
    return summary


def fill(uri: str) -> replaystore.Store:
    store = replaystore.open(uri)
    fill_digits(store)
    fill_text(store)
    return store
