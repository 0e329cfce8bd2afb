"""MEMO byte arithmetic, hand-checked on models built here, and the `replaystore budget` command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from replaystore.cli import main
from replaystore.errors import NotFoundError, ValidationError
from replaystore.exemplars import bytes_for, count_parameters, dtype_nbytes, exemplars_in, fair_budget, model_nbytes, sample_nbytes
from tests.conftest import run_cli

CIFAR = 32 * 32 * 3
IMAGENET = 224 * 224 * 3


class Block(nn.Module):
    """A CIFAR ResNet basic block with an option-A (parameter-free) shortcut, as in PyCIL's resnet32."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.pad = cout - cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        short = x[:, :, ::2, ::2] if self.pad else x
        return torch.relu(out + nn.functional.pad(short, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2)))


def resnet32() -> nn.Module:
    """ResNet-32 for CIFAR without its classifier: 3 stages × 5 blocks of 16/32/64 channels."""
    layers: list[nn.Module] = [nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()]
    cin = 16
    for cout, stride in ((16, 1), (32, 2), (64, 2)):
        for i in range(5):
            layers.append(Block(cin, cout, stride if i == 0 else 1))
            cin = cout
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())


def test_resnet32_is_worth_603_cifar_exemplars_as_memo_says() -> None:
    net = resnet32()
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 64)
    # by hand: stem 432 + 32; stage 1: 5 × (2·2304 + 64); stage 2: 4608 + 9216 + 128 + 4 × (2·9216 + 128);
    # stage 3: 18432 + 36864 + 256 + 4 × (2·36864 + 256)
    by_hand = 432 + 32 + 5 * (2 * 2304 + 64) + (4608 + 9216 + 128 + 4 * (2 * 9216 + 128)) + (18432 + 36864 + 256 + 4 * (2 * 36864 + 256))
    assert count_parameters(net) == by_hand == 463_504
    assert model_nbytes(net) == 1_854_016
    assert exemplars_in(model_nbytes(net), CIFAR) == 603  # floor(603.5): "A model or 603 exemplars"
    assert exemplars_in(model_nbytes(net, dtype="bfloat16"), CIFAR) == 301
    assert exemplars_in(model_nbytes(net), IMAGENET) == 12


def test_mlp_and_batchnorm_buffers_counted_only_when_asked() -> None:
    mlp = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    assert count_parameters(mlp) == 64 * 32 + 32 + 32 * 10 + 10 == 2410
    assert model_nbytes(mlp) == 9640 and model_nbytes(mlp, dtype=torch.bfloat16) == 4820
    assert exemplars_in(model_nbytes(mlp), sample_nbytes((8, 8), "uint8")) == 150  # 9640 // 64

    net = nn.Sequential(nn.Conv2d(3, 16, 3, bias=False), nn.BatchNorm2d(16), nn.Flatten(), nn.LazyLinear(10))
    net(torch.zeros(2, 3, 3, 3))  # materialise the lazy layer: 16 inputs
    assert count_parameters(net) == 432 + 32 + 170
    assert model_nbytes(net) == 634 * 4
    # running mean and var at the stored dtype, num_batches_tracked as the int64 it is saved as
    assert model_nbytes(net, count_buffers=True) == 634 * 4 + 32 * 4 + 8
    assert model_nbytes(net, dtype="float16", count_buffers=True) == 634 * 2 + 32 * 2 + 8


def test_shared_parameters_count_once() -> None:
    emb = nn.Embedding(100, 8)
    head = nn.Linear(8, 100, bias=False)
    head.weight = emb.weight  # tied, as in language models
    assert count_parameters(nn.ModuleList([emb, head])) == 800


def test_conversions_both_ways_and_by_count() -> None:
    assert model_nbytes(params=1_000, dtype="bf16") == 2_000
    assert sample_nbytes((32, 32, 3)) == CIFAR and sample_nbytes((224, 224, 3)) == IMAGENET
    assert sample_nbytes((8, 8), "float32") == 256
    assert bytes_for(603, CIFAR) == 1_852_416 and exemplars_in(1_852_416, CIFAR) == 603
    assert exemplars_in(1_852_415, CIFAR) == 602  # floor, never rounded up
    assert dtype_nbytes("float64") == 8 and dtype_nbytes(np.uint8) == 1 and dtype_nbytes(torch.int16) == 2


def test_fair_comparison_gives_the_grown_bytes_to_exemplars() -> None:
    fair = fair_budget(463_504, params_per_task=3_072, tasks=3, per_sample=CIFAR, exemplars=2_000)
    assert fair.growing_model_bytes == (463_504 + 2 * 3_072) * 4
    assert fair.total_bytes == fair.growing_model_bytes + 2_000 * CIFAR
    assert fair.fixed_model_bytes == 463_504 * 4
    assert fair.extra_exemplars == 2 * 3_072 * 4 // CIFAR == 8
    same = fair_budget(resnet32(), params_per_task=10_000, tasks=1, per_sample=CIFAR, exemplars=5)
    assert same.extra_exemplars == 0  # nothing grew yet


def test_a_buffer_counts_the_module_it_is_given(store) -> None:
    net = nn.Sequential(nn.Conv2d(3, 16, 3, bias=False), nn.BatchNorm2d(16), nn.Flatten(), nn.Linear(16, 10))
    plain = store.exemplars("plain", budget=10_000, model=net).budget()
    counted = store.exemplars("bn", budget=10_000, model=net, count_buffers=True).budget()
    half = store.exemplars("half", budget=10_000, model=net.to(torch.bfloat16)).budget()
    assert (plain["model_bytes"], plain["model_params"], plain["model_buffers_counted"]) == (634 * 4, 634, False)
    assert (counted["model_bytes"], counted["model_buffers_counted"]) == (634 * 4 + 32 * 4 + 8, True)
    assert (half["model_bytes"], half["model_dtype"]) == (634 * 2, "bfloat16")  # the module's own dtype by default


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: model_nbytes(params=-1), "params"),
        (lambda: model_nbytes(), "model"),
        (lambda: model_nbytes(nn.Linear(2, 2), params=6), "model"),
        (lambda: dtype_nbytes("float33"), "dtype"),
        (lambda: sample_nbytes((8, -8)), "shape"),
        (lambda: exemplars_in(100, 0), "per_sample"),
        (lambda: fair_budget(10, 5, 0, 64), "tasks"),
    ],
)
def test_bad_arithmetic_input_names_the_field(call, field: str) -> None:
    with pytest.raises(ValidationError) as err:
        call()
    assert err.value.field == field


def test_budget_command_prints_the_report(store, capsys) -> None:
    buf = store.exemplars("digits", budget=4_000, model_params=500, selector="random")
    buf.add(3, np.zeros((40, 8, 8), np.uint8))
    report = json.loads(run_cli("budget", "digits", "--json", uri=store.uri, check=True).stdout)
    assert report == json.loads(json.dumps(buf.budget()))
    assert (report["total_bytes"], report["model_bytes"], report["exemplar_bytes"], report["free_bytes"]) == (4_000, 2_000, 1_984, 16)
    assert report["model_exemplar_equivalent"] == 31 and report["per_class"] == {"3": 31} and report["disk_bytes"] > 0
    assert (report["model_params"], report["model_dtype"], report["model_buffers_counted"]) == (500, "float32", False)
    # the rest in-process: each subprocess pays torch's import
    assert main(["--uri", store.uri, "budget", "digits"]) == 0
    human = capsys.readouterr().out
    assert "free_bytes" in human and "1984" in human
    assert main(["--uri", store.uri, "--json", "budget"]) == 0
    assert [row["buffer"] for row in json.loads(capsys.readouterr().out)] == ["digits"]
    assert main(["--uri", store.uri, "budget", "nope"]) == 1
    assert "unknown exemplar buffer 'nope'" in capsys.readouterr().err
    with pytest.raises(NotFoundError):
        store.exemplars("nope")
