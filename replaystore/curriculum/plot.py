"""Draw a pacing schedule to a PNG: admitted fraction c(t) and admitted sample count over steps.

Uses matplotlib's object API with the Agg canvas, so it never touches a display or the global
backend of the caller's process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from replaystore.extras import require

require("matplotlib", extra="plot", feature="plotting a pacing schedule")
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402 - after the check that names the extra
from matplotlib.figure import Figure  # noqa: E402

from replaystore.curriculum.pacing import Pacing, schedule_length  # noqa: E402
from replaystore.curriculum.sampler import CurriculumSampler  # noqa: E402
from replaystore.errors import ValidationError  # noqa: E402


def plot_pacing(
    pacing: Pacing,
    path: str | Path,
    *,
    difficulty: Any = None,
    steps: int | None = None,
    title: str | None = None,
) -> Path:
    """Write the schedule of `pacing` over `steps` (default: until it stops changing, plus 10%).

    With `difficulty` (per-row percentiles) the lower panel shows the exact admitted count the
    sampler would use; without it, the count panel is left out.
    """
    last = steps if steps is not None else int(schedule_length(pacing) * 1.1) + 1
    if not isinstance(last, int) or last < 1:
        raise ValidationError("steps", f"must be a positive integer, got {steps!r}")
    if not Path(path).parent.is_dir():
        raise ValidationError("path", f"folder {Path(path).parent} does not exist: create it first (nothing creates folders for output)")
    t = np.arange(last + 1)
    competence = pacing.competence(t)
    fig = Figure(figsize=(7, 5.5 if difficulty is not None else 3.2), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2 if difficulty is not None else 1, 1, sharex=True, squeeze=False)[:, 0]
    axes[0].step(t, competence, where="post", color="tab:blue")
    axes[0].set_ylabel("admitted fraction c(t)")
    axes[0].set_ylim(0, 1.05)
    axes[0].set_title(title or f"{pacing.to_dict()['type']} pacing")
    if difficulty is not None:
        sampler = CurriculumSampler(difficulty, pacing)
        axes[1].step(t, sampler.admitted_count(t), where="post", color="tab:orange")
        axes[1].set_ylabel("admitted samples")
        axes[1].set_ylim(0, len(sampler) * 1.05)
    axes[-1].set_xlabel("step")
    for ax in axes:
        ax.grid(alpha=0.3)
    out = Path(path)
    fig.savefig(out, format="png", dpi=100)
    return out
