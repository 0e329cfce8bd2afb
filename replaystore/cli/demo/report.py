"""The demo's results as text tables, a markdown report and PNG plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from replaystore.cli.demo.digits import RunResult
from replaystore.cli.demo.text import TextResult
from replaystore.cli.output import render_table


def accuracy_rows(result: RunResult) -> list[dict[str, Any]]:
    """One row per task: its accuracy after each training task (a dash before it was seen)."""
    n = len(result.acc)
    return [{"task": f"T{i + 1}", **{f"after T{j + 1}": (f"{result.acc[i][j]:.3f}" if j >= i else "-") for j in range(n)}} for i in range(n)]


def mean_std(values: list[float]) -> dict[str, float]:
    return {"mean": float(np.mean(values)), "std": float(np.std(values))}


def _pm(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}" if len(values) > 1 else f"{values[0]:.3f}"


def summary_rows(runs: dict[str, list[RunResult]]) -> list[dict[str, Any]]:
    """One row per variant: means ± standard deviations over the seeds."""
    rows = []
    for name, results in runs.items():
        nme = [r.nme_average for r in results if r.nme_average is not None]
        rows.append({
            "run": name, "average accuracy": _pm([r.average_accuracy for r in results]),
            "forgetting": _pm([r.forgetting for r in results]), "NME accuracy (buffer)": _pm(nme) if nme else "-",
            "seeds": len(results),
        })  # fmt: skip
    return rows


def budget_rows(result: RunResult) -> list[dict[str, Any]]:
    keys = ("total_bytes", "model_bytes", "exemplar_bytes", "free_bytes", "model_exemplar_equivalent", "rows")
    return [{"after task": f"T{i + 1}", **{k: b.get(k) for k in keys}} for i, b in enumerate(result.budgets)]


def text_rows(result: TextResult) -> list[dict[str, Any]]:
    """Per variant: general loss by stage, task losses at the end, and the two changes that trade off."""
    base = result.task_loss["fine-tuning"][-1]
    rows = []
    for variant, losses in result.general_loss.items():
        std, task = result.general_loss_std[variant], result.task_loss[variant]
        rows.append({
            "run": variant, **{stage: f"{loss:.3f} ± {s:.3f}" for stage, loss, s in zip(result.stages, losses, std)},
            "general change": f"{losses[-1] - losses[0]:+.3f}", "task A loss": round(task[0], 3), "task B loss": round(task[1], 3),
            "task B cost vs fine-tuning": f"{100 * (task[1] / base - 1):+.1f}%",
        })  # fmt: skip
    return rows


def sections(runs: dict[str, list[RunResult]], text: TextResult | None, seconds: float, store_uri: str) -> list[tuple[str, list[dict[str, Any]]]]:
    out: list[tuple[str, list[dict[str, Any]]]] = []
    for name in ("replay", "fine-tuning"):
        out.append((f"Digits accuracy matrix, {name}, first seed (row: task, column: after training task)", accuracy_rows(runs[name][0])))
    tasks = len(runs["replay"][0].acc)
    seeds = len(runs["replay"])
    out.append((f"Digits summary (class-incremental, {tasks} tasks × 2 classes, mean ± std over {seeds} seed(s))", summary_rows(runs)))
    replay = runs["replay"][0]
    out.append(("Exemplar byte budget, replay, first seed (MEMO: the model's bytes count too)", budget_rows(replay)))
    last = replay.budgets[-1]
    out.append(("Exemplars per class at the end", [{"class": c, "exemplars": n} for c, n in sorted(last.get("per_class", {}).items())]))
    if text is not None:
        pre = text.pretraining
        out.append(("Tiny GPT-2, held-out general loss (docstrings)", [{"untrained": _pm(pre["untrained"]), "pretrained": _pm(pre["pretrained"])}]))
        out.append((f"General-text loss (held-out docstrings; lower is better), mean ± std over {len(text.per_seed)} seed(s)", text_rows(text)))
    out.append(("Run", [{"store": store_uri, "seconds": round(seconds, 1)}]))
    return out


def as_json(runs: dict[str, list[RunResult]], text: TextResult | None, seconds: float, seeds: list[int]) -> dict[str, Any]:
    """Every number of the report, for machines (and the demo's test)."""
    digits = {}
    for name, results in runs.items():
        nme = [r.nme_average for r in results if r.nme_average is not None]
        digits[name] = {
            "accuracy": np.mean([r.acc for r in results], axis=0).tolist(),
            "average_accuracy": mean_std([r.average_accuracy for r in results]),
            "forgetting": mean_std([r.forgetting for r in results]),
            "nme_accuracy": mean_std(nme) if nme else None,
            "per_seed": [
                {"seed": seed, "average_accuracy": r.average_accuracy, "forgetting": r.forgetting, "nme_accuracy": r.nme_average, "accuracy": r.acc}
                for seed, r in zip(seeds, results)
            ],
            "budgets": results[0].budgets,
        }  # fmt: skip
    return {
        "seconds": seconds,
        "seeds": seeds,
        "digits": digits,
        "text": None if text is None else {
            "stages": text.stages, "general_loss": text.general_loss, "task_loss": text.task_loss,
            "general_loss_std": text.general_loss_std, "task_loss_std": text.task_loss_std, "pretraining": text.pretraining,
            "recommended": text.recommended, "per_seed": text.per_seed, "distill": text.distill,
        },
    }  # fmt: skip


def print_report(parts: list[tuple[str, list[dict[str, Any]]]]) -> str:
    return "\n\n".join(f"{title}\n{render_table(rows)}" for title, rows in parts)


def markdown(parts: list[tuple[str, list[dict[str, Any]]]], images: list[str]) -> str:
    lines = ["# replaystore demo report", ""]
    for title, rows in parts:
        lines += [f"## {title}", ""]
        if rows:
            headers = list(rows[0])
            lines.append("| " + " | ".join(headers) + " |")
            lines.append("|" + "---|" * len(headers))
            lines += ["| " + " | ".join(str(r.get(h, "")) for h in headers) + " |" for r in rows]
        lines.append("")
    lines += [f"![{Path(i).stem}]({Path(i).name})" for i in images]
    return "\n".join(lines) + "\n"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_accuracy(runs: dict[str, list[RunResult]], path: Path) -> Path:
    """Left: every variant's average accuracy, mean ± std over seeds. Right: each task's accuracy
    over time for the full system, first seed."""
    plt = _pyplot()
    fig, (bars, curve) = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [1.3, 1]})
    names = list(runs)
    means = [np.mean([r.average_accuracy for r in runs[n]]) for n in names]
    stds = [np.std([r.average_accuracy for r in runs[n]]) for n in names]
    bars.barh(range(len(names)), means, xerr=stds, color=["tab:green" if n == "replay" else "tab:grey" for n in names])
    bars.set_yticks(range(len(names)), names, fontsize=8)
    bars.invert_yaxis()
    bars.set_xlim(0, 1)
    bars.set_xlabel(f"average accuracy after the last task ({len(runs['replay'])} seed(s))")
    bars.grid(axis="x", alpha=0.3)
    r = runs["replay"][0]
    n = len(r.acc)
    for i in range(n):
        curve.plot(range(i + 1, n + 1), r.acc[i][i:], marker="o", label=f"task {i + 1}")
    curve.set_title(f"replay, first seed: avg {r.average_accuracy:.3f}, forgetting {r.forgetting:.3f}")
    curve.set_xlabel("after training task")
    curve.set_ylabel("test accuracy")
    curve.set_xticks(range(1, n + 1))
    curve.grid(alpha=0.3)
    curve.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_tradeoff(text: TextResult, path: Path) -> Path:
    """GeRe's trade-off: change of the general loss (y, below 0 = better than before fine-tuning)
    against the newest task's loss relative to fine-tuning's (x); the Pareto-optimal variants joined."""
    plt = _pyplot()
    base = np.asarray([r["task_loss"]["fine-tuning"][-1] for r in text.per_seed])
    points = {}
    for variant in text.general_loss:
        general = np.asarray([r["general_loss"][variant][-1] - r["general_loss"][variant][0] for r in text.per_seed])
        cost = np.asarray([100 * (r["task_loss"][variant][-1] / b - 1) for r, b in zip(text.per_seed, base)])
        points[variant] = (cost.mean(), general.mean(), cost.std(), general.std())
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for variant, (x, y, sx, sy) in points.items():
        ax.errorbar(x, y, xerr=sx, yerr=sy, marker="o", capsize=3, label=variant)
    front = sorted((p[0], p[1]) for p in points.values() if not any(q[0] <= p[0] and q[1] <= p[1] and q != p for q in points.values()))
    ax.plot([p[0] for p in front], [p[1] for p in front], "k--", alpha=0.4, label="Pareto front")
    ax.axhline(0, color="grey", lw=0.8)
    ax.axvline(10, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("newest-task (B) loss vs fine-tuning's, %  (lower is better)")
    ax.set_ylabel("general loss change since before fine-tuning  (lower is better)")
    ax.set_title(f"GeRe trade-off, mean ± std over {len(text.per_seed)} seed(s)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_budget(result: RunResult, path: Path) -> Path:
    """Stacked bytes per task: model, exemplars, free."""
    plt = _pyplot()
    tasks = [f"T{i + 1}" for i in range(len(result.budgets))]
    model = [b["model_bytes"] for b in result.budgets]
    exemplars = [b["exemplar_bytes"] for b in result.budgets]
    free = [b["free_bytes"] for b in result.budgets]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.bar(tasks, model, label="model")
    ax.bar(tasks, exemplars, bottom=model, label="exemplars")
    ax.bar(tasks, free, bottom=[m + e for m, e in zip(model, exemplars)], label="free", color="lightgrey")
    ax.set_ylabel("bytes")
    ax.set_title(f"byte budget {result.budgets[0]['total_bytes']:,} B")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
