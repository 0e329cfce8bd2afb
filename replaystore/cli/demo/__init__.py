"""`replaystore demo`: the whole system doing real work on real data, measured honestly.

Digits class-incremental learning (Ray Train workers streaming from the store, MEMO-budgeted
exemplars selected by k-center, curriculum pacing, Prefect flows between tasks) beside fine-tuning, the
plain loop a user would write and joint training, over seeds; `full` adds one ablation per part.
Then GeRe general replay on text: no replay, CE replay and CE + TM replay (`full`: a sweep of the
TM weight). Results go to the terminal, a markdown report, results.json and PNG plots.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from replaystore.api import Store
from replaystore.cli.demo import baselines, digits, report, text
from replaystore.cli.demo.model import export_features
from replaystore.cli.demo.training import TrainingSession
from replaystore.errors import ValidationError
from replaystore.exemplars.settings import SETTINGS_TABLE

PREFIXES = ("digits-",)
PLAIN, JOINT = "plain loop (concatenated exemplars, Adam)", "joint training (upper bound)"


@dataclass
class DemoOptions:
    seed: int = 0  # the first seed; runs use seed, seed + 1, …
    seeds: int | None = None  # default: 1, or 3 with `full`
    exemplars: int = 200
    output: Path = Path("demo-output")
    small: bool = False
    full: bool = False  # every ablation and the text part's weight sweep
    tasks: int | None = None  # train only the first N tasks (a cheap rerun in the tests); default: all
    text: bool = True
    workers: int = 2

    def seed_list(self) -> list[int]:
        return [self.seed + i for i in range(self.seeds or (3 if self.full else 1))]


def check(options: DemoOptions, tasks: int) -> None:
    """Refuse bad options in one line before Ray, Prefect or the store are touched."""
    if options.tasks is not None and not 1 <= options.tasks <= tasks:
        raise ValidationError("tasks", f"must be between 1 and {tasks}, got {options.tasks}")
    if options.seeds is not None and options.seeds < 1:
        raise ValidationError("seeds", f"must be at least 1, got {options.seeds} (pass --seeds 1 or more)")
    if options.exemplars < 1:
        raise ValidationError("budget", f"must be at least 1 exemplar, got {options.exemplars} (pass --budget 1 or more)")


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
        prefix = table.rsplit("-task", 1)[0]
        tables = [n for n in store.table_names() if n.startswith(prefix + "-")]
        if buffer is not None:
            log(f"flows after task {task + 1}: distill (exemplar candidates → {buffer.settings.selector})")
            features = export_features(model, str(folder / f"features-task{task}.pt2"))
            distill(store_uri=store.uri, exemplars={"buffer": buffer.name, "task_id": task, "model": features, "source": table, "batch_size": 4096})
        log(f"flows after task {task + 1}: index, prune")
        index(store_uri=store.uri, tables=tables)
        prune(store_uri=store.uri, tables=tables, buffers=[buffer.name] if buffer is not None else [], retention_hours=0.0)

    return between


@dataclass
class Plan:
    """What a run trains, from the options: the one place both the run and its step count read."""

    cfg: digits.DigitsConfig
    text_cfg: text.TextConfig
    variants: list[digits.Variant]
    seeds: list[int]

    @classmethod
    def of(cls, options: DemoOptions) -> Plan:
        cfg = digits.DigitsConfig(exemplar_slots=options.exemplars, workers=options.workers)
        text_cfg = text.TextConfig(sweep=options.full)
        if options.small:
            cfg.epochs, cfg.tasks = 15, cfg.tasks[:3]
            text_cfg.general, text_cfg.replay_samples, text_cfg.pretrain_steps, text_cfg.task_steps, text_cfg.task_texts = 400, 400, 150, 40, 60
        check(options, len(cfg.tasks))
        if options.tasks is not None:
            cfg.tasks = cfg.tasks[: options.tasks]
        return cls(cfg, text_cfg, [digits.FULL, digits.FINE_TUNING, *(digits.ABLATIONS if options.full else ())], options.seed_list())

    def steps(self, with_text: bool) -> int:
        """How many progress lines the run reports: Ray's start; per seed, per variant and task, scoring,
        training and the flows (distill too when the variant keeps a buffer), then the in-process
        baselines; the text part's corpus, then per seed pretraining, distillation and each variant's tasks."""
        per_task = sum(4 if v.replay else 3 for v in self.variants) * len(self.cfg.tasks)
        digits_steps = 1 + len(self.seeds) * (per_task + 1)
        text_steps = 1 + len(self.seeds) * (2 + 2 * len(self.text_cfg.variants())) if with_text else 0
        return digits_steps + text_steps


def start_local_ray() -> None:
    """A Ray of the demo's own with two CPUs. Without `address="local"` Ray joins the latest cluster
    started on this machine (`ray start`, another program's head node) and refuses `num_cpus` there:
    the demo failed so in CI while another test file ran a two-node cluster."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False, ignore_reinit_error=True)


def run_demo(store: Store, options: DemoOptions, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run everything; return the report sections and the files written."""
    started = time.perf_counter()
    plan = Plan.of(options)
    cfg, text_cfg, variants, seeds = plan.cfg, plan.text_cfg, plan.variants, plan.seeds
    import ray

    reset(store)
    models = tempfile.TemporaryDirectory()
    between = _flows_between_tasks(store, Path(models.name), log)
    runs: dict[str, list[digits.RunResult]] = {v.name: [] for v in variants}
    runs |= {PLAIN: [], JOINT: []}
    start_local_ray()
    try:
        log(f"starting Ray Train: {cfg.workers} CPU workers, one worker group for every run")
        session = TrainingSession(store, digits.MLP(cfg.hidden), cfg.hidden, seeds[0], cfg.workers)
        try:
            for seed in seeds:
                cfg.seed = seed
                for variant in variants:
                    runs[variant.name].append(digits.run(store, session, cfg, variant, between, log))
                log(f"seed {seed}: plain loop and joint training in process")
                runs[PLAIN].append(baselines.plain_loop(cfg))
                runs[JOINT].append(baselines.joint(cfg))
        finally:
            session.close()
    finally:
        ray.shutdown()
        models.cleanup()
    text_result = text.run_seeds(store, text_cfg, seeds, log) if options.text else None
    seconds = time.perf_counter() - started
    parts = report.sections(runs, text_result, seconds, store.uri)
    out = Path(options.output)
    out.mkdir(parents=True, exist_ok=True)
    images = [str(report.plot_accuracy(runs, out / "accuracy.png"))]
    images.append(str(report.plot_budget(runs[digits.FULL.name][0], out / "budget.png")))
    if text_result is not None:
        images.append(str(report.plot_tradeoff(text_result, out / "tradeoff.png")))
    (out / "report.md").write_text(report.markdown(parts, images))
    (out / "results.json").write_text(json.dumps(report.as_json(runs, text_result, seconds, seeds), indent=2))
    files = [str(out / "report.md"), str(out / "results.json"), *images]
    return {"sections": parts, "files": files, "runs": runs, "text": text_result}
