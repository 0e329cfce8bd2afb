"""The demo's results as text tables, a markdown report and PNG plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from replaystore.cli.demo.digits import RunResult
from replaystore.cli.demo.text import TextResult
from replaystore.cli.output import render_table


def accuracy_rows(result: RunResult) -> list[dict[str, Any]]:
    """One row per task: its accuracy after each training task (a dash before it was seen)."""
    n = len(result.acc)
    return [
        {"task": f"T{i + 1}", **{f"after T{j + 1}": (f"{result.acc[i][j]:.3f}" if j >= i else "-") for j in range(n)}}
        for i in range(n)
    ]


def summary_rows(runs: dict[str, RunResult]) -> list[dict[str, Any]]:
    return [
        {"run": name, "average accuracy": round(r.average_accuracy, 4), "forgetting": round(r.forgetting, 4)}
        for name, r in runs.items()
    ]


def budget_rows(result: RunResult) -> list[dict[str, Any]]:
    keys = ("total_bytes", "model_bytes", "exemplar_bytes", "free_bytes", "model_exemplar_equivalent", "rows")
    return [{"after task": f"T{i + 1}", **{k: b.get(k) for k in keys}} for i, b in enumerate(result.budgets)]


def text_rows(result: TextResult) -> list[dict[str, Any]]:
    return [
        {"run": variant, **{stage: round(loss, 4) for stage, loss in zip(result.stages, losses)},
         "task A loss at end": round(result.task_loss[variant][0], 4), "task B loss at end": round(result.task_loss[variant][1], 4)}
        for variant, losses in result.general_loss.items()
    ]  # fmt: skip


def sections(runs: dict[str, RunResult], text: TextResult | None, seconds: float, store_uri: str) -> list[tuple[str, list[dict[str, Any]]]]:
    out: list[tuple[str, list[dict[str, Any]]]] = []
    for name, r in runs.items():
        out.append((f"Digits accuracy matrix, {name} (row: task, column: after training task)", accuracy_rows(r)))
    tasks = len(next(iter(runs.values())).acc)
    out.append((f"Digits summary (class-incremental, {tasks} tasks × 2 classes)", summary_rows(runs)))
    replay = next((r for r in runs.values() if r.budgets), None)
    if replay is not None:
        out.append(("Exemplar byte budget (MEMO: the model's bytes count too)", budget_rows(replay)))
        last = replay.budgets[-1]
        out.append(("Exemplars per class at the end", [{"class": c, "exemplars": n} for c, n in sorted(last.get("per_class", {}).items())]))
    if text is not None:
        out.append(("General-text loss (held-out docstrings; lower is better)", text_rows(text)))
    out.append(("Run", [{"store": store_uri, "seconds": round(seconds, 1)}]))
    return out


def as_json(runs: dict[str, RunResult], text: TextResult | None, seconds: float) -> dict[str, Any]:
    """Every number of the report, for machines (and the demo's test)."""
    return {
        "seconds": seconds,
        "digits": {
            name: {"accuracy": r.acc, "average_accuracy": r.average_accuracy, "forgetting": r.forgetting, "budgets": r.budgets}
            for name, r in runs.items()
        },
        "text": None if text is None else {"stages": text.stages, "general_loss": text.general_loss, "task_loss": text.task_loss, "distill": text.distill},
    }


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


def plot_accuracy(runs: dict[str, RunResult], path: Path) -> Path:
    """Accuracy of each task over time, one panel per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(runs), figsize=(5 * len(runs), 3.6), sharey=True, squeeze=False)
    for ax, (name, r) in zip(axes[0], runs.items()):
        n = len(r.acc)
        for i in range(n):
            ax.plot(range(i + 1, n + 1), r.acc[i][i:], marker="o", label=f"task {i + 1}")
        ax.set_title(f"{name}: avg {r.average_accuracy:.2f}, forgetting {r.forgetting:.2f}")
        ax.set_xlabel("after training task")
        ax.set_xticks(range(1, n + 1))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_budget(result: RunResult, path: Path) -> Path:
    """Stacked bytes per task: model, exemplars, free."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
