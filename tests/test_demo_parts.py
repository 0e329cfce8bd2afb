"""The demo's parts that decide its numbers, checked in process without Ray: the per-worker batch,
the class-balanced replay share, distillation, the nearest-mean-of-exemplars classifier and the
plain loop's exemplar budget. The whole run is in test_demo.py (slow)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

pytest.importorskip("sklearn")
pytest.importorskip("ray")

from replaystore.cli.demo.digits import MLP, DigitsConfig, load_split, nme_accuracy, rank_batch, replay_share
from replaystore.cli.demo.training import distillation
from replaystore.errors import ValidationError
from replaystore.exemplars import ExemplarSet


def test_each_worker_streams_its_share_of_the_global_batch() -> None:
    assert rank_batch(DigitsConfig(batch_size=32, workers=2)) == 16
    with pytest.raises(ValidationError, match="workers: must divide the global batch of 32, got 3"):
        rank_batch(DigitsConfig(batch_size=32, workers=3))


@given(st.integers(1, 64), st.integers(0, 20), st.integers(1, 5))
def test_replay_share_gives_each_seen_class_about_the_same_rows(batch: int, old: int, new: int) -> None:
    k = replay_share(DigitsConfig(batch_size=batch), old, new)
    assert 0 <= k <= batch
    assert abs(k - batch * old / (old + new)) <= 0.5
    if old == 0:
        assert k == 0


def test_distillation_is_zero_when_the_model_still_agrees_with_its_teacher_on_the_old_classes() -> None:
    torch.manual_seed(0)
    teacher = torch.randn(8, 10)
    drifted = teacher.clone()
    drifted[:, 5:] += 3.0  # new classes may change freely
    assert float(distillation(drifted, teacher, (0, 1, 2, 3, 4))) == pytest.approx(0.0, abs=1e-6)
    drifted[:, :2] = torch.randn(8, 2) * 5
    assert float(distillation(drifted, teacher, (0, 1, 2, 3, 4))) > 0.01


def test_nme_classifies_by_the_exemplars_class_means_not_the_head() -> None:
    """A model whose head is zeroed still classifies well by its features' class means; the same
    exemplars with their labels swapped send every image of those two classes to the other."""
    split = load_split(0)
    torch.manual_seed(0)
    model = MLP(128)
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.zero_()
    keep = np.concatenate([np.nonzero(split.train_y == c)[0][:20] for c in range(10)])
    x, y = split.train_x[keep], split.train_y[keep]
    tasks = [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
    good = nme_accuracy(model, ExemplarSet(labels=y.copy(), sample_ids=keep, task_ids=y // 2, ranks=np.zeros_like(y), data=x), split, tasks)
    assert np.mean(good) > 0.8  # random features of an untrained MLP already separate digits by class mean
    swapped = np.where(y == 0, 1, np.where(y == 1, 0, y))
    bad = nme_accuracy(model, ExemplarSet(labels=swapped, sample_ids=keep, task_ids=y // 2, ranks=np.zeros_like(y), data=x), split, tasks)
    assert bad[0] < 0.2 and bad[1:] == good[1:]
