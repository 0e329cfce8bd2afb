"""`replaystore demo`: the whole system doing real work on real data, measured honestly.

Digits class-incremental learning (Ray Train workers streaming from the store, MEMO-budgeted
exemplars with herding, curriculum pacing, Prefect flows between tasks) with replay and without,
then GeRe general replay on text. Results go to the terminal, a markdown report and PNG plots.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from replaystore.cli.demo import digits, report, text
from replaystore.cli.demo.model import export_features
from replaystore.cli.demo.training import TrainingSession
from replaystore.errors import ValidationError
from replaystore.exemplars.settings import SETTINGS_TABLE
from replaystore.store import Store

PREFIXES = ("digits-replay", "digits-finetune")


@dataclass
class DemoOptions:
    seed: int = 0
    budget_bytes: int | None = None
    output: Path = Path("demo-output")
    small: bool = False
    tasks: int | None = None  # train only the first N tasks (a cheap rerun in the tests); default: all
    text: bool = True
    workers: int = 2


def reset(store: Store) -> None:
    """Drop what an earlier demo run left, so running twice gives the same report."""
    for name in store.table_names():
        if name.startswith(PREFIXES):
            store.drop(name)
    if store.exists(SETTINGS_TABLE):
        store.delete(SETTINGS_TABLE, " OR ".join(f"buffer LIKE '{p}%'" for p in PREFIXES))


def _flows_between_tasks(store: Store, folder: Path, log: Callable[[str], None]) -> Callable[[int, str, Any, Any], None]:
    """After each task, as Prefect flow runs (local mode, no server): distill offers the task's
    images to the exemplar buffer with the trained model's features, index refreshes the scalar
    indexes, prune cuts the buffer back inside its budget and compacts."""
    from replaystore.flows.distill import distill
    from replaystore.flows.index import index
    from replaystore.flows.prune import prune

    def between(task: int, table: str, model: Any, buffer: Any) -> None:
        tables = [n for n in store.table_names() if n.startswith(PREFIXES)]
        if buffer is not None:
            log(f"flows after task {task + 1}: distill (exemplar candidates → herding)")
            features = export_features(model, str(folder / f"features-task{task}.pt2"))
            distill(store_uri=store.uri, exemplars={"buffer": buffer.name, "task_id": task, "model": features, "source": table, "batch_size": 4096})
        log(f"flows after task {task + 1}: index, prune")
        index(store_uri=store.uri, tables=tables)
        prune(store_uri=store.uri, tables=tables, buffers=[buffer.name] if buffer is not None else [], retention_hours=0.0)

    return between


def run_demo(store: Store, options: DemoOptions, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run everything; return the report sections and the files written."""
    started = time.perf_counter()
    cfg = digits.DigitsConfig(seed=options.seed, budget_bytes=options.budget_bytes, workers=options.workers)
    text_cfg = text.TextConfig(seed=options.seed)
    if options.small:
        cfg.epochs, cfg.tasks = 8, cfg.tasks[:3]
        text_cfg.pretrain_steps, text_cfg.task_steps, text_cfg.general, text_cfg.task_texts = 60, 30, 80, 60
    if options.tasks is not None:
        if not 1 <= options.tasks <= len(cfg.tasks):
            raise ValidationError("tasks", f"must be between 1 and {len(cfg.tasks)}, got {options.tasks}")
        cfg.tasks = cfg.tasks[: options.tasks]
    import ray

    reset(store)
    models = tempfile.TemporaryDirectory()
    between = _flows_between_tasks(store, Path(models.name), log)
    runs: dict[str, digits.RunResult] = {}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False, ignore_reinit_error=True)
    try:
        log(f"starting Ray Train: {cfg.workers} CPU workers, one worker group for both runs")
        session = TrainingSession(store, digits.MLP(cfg.hidden), cfg.hidden, cfg.seed, cfg.workers)
        try:
            for name, replay in (("replay", True), ("fine-tuning", False)):
                runs[name] = digits.run(store, session, cfg, replay, between, log)
        finally:
            session.close()
    finally:
        ray.shutdown()
        models.cleanup()
    text_result = text.run(store, text_cfg, log) if options.text else None
    seconds = time.perf_counter() - started
    parts = report.sections(runs, text_result, seconds, store.uri)
    out = Path(options.output)
    out.mkdir(parents=True, exist_ok=True)
    images = [str(report.plot_accuracy(runs, out / "accuracy.png"))]
    if runs["replay"].budgets:
        images.append(str(report.plot_budget(runs["replay"], out / "budget.png")))
    (out / "report.md").write_text(report.markdown(parts, images))
    (out / "results.json").write_text(json.dumps(report.as_json(runs, text_result, seconds), indent=2))
    files = [str(out / "report.md"), str(out / "results.json"), *images]
    return {"sections": parts, "files": files, "runs": runs, "text": text_result}
