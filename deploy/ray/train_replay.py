"""Ray job entrypoint: train a classifier on an exemplar buffer streamed from the store, on every GPU worker.

Each Ray Train worker reads its rank's share of one pinned snapshot (`stream_trainer`), logs
per-row losses, and the driver writes them back to `priorities` in one merge. The store URI and
its credentials come from the environment (`REPLAYSTORE_URI`, `AWS_*` from a Kubernetes secret or
an instance role), never from this file.

    python deploy/ray/train_replay.py --table exemplars --workers 8 --gpus-per-worker 1 --epochs 3
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import torch
from ray.train import RunConfig, ScalingConfig

import replaystore
from replaystore.stream import LossLog, ReplayStream, Shuffled, Source
from replaystore.stream.ray_train import stream_trainer, write_back


def train_loop(stream: ReplayStream, log: LossLog, config: dict[str, Any]) -> dict[str, float]:
    """A linear classifier over the buffer's feature vectors; per-row losses go to the log."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = torch.nn.LazyLinear(config["classes"]).to(device)
    optimiser = None
    loss = torch.zeros(())
    for epoch in range(config["epochs"]):
        stream.set_epoch(epoch)
        for batch in stream:
            x = batch["features"].to(device, non_blocking=True)
            y = batch["class_id"].to(device)
            per_row = torch.nn.functional.cross_entropy(model(x), y, reduction="none")
            optimiser = optimiser or torch.optim.SGD(model.parameters(), lr=config["lr"])
            loss = per_row.mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            log.add([s.name for s in stream.sources], stream.versions or [], batch, per_row.detach())
    return {"loss": float(loss)}


def main(argv: Sequence[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uri", default=None, help="store URI (default: $REPLAYSTORE_URI)")
    parser.add_argument("--table", default="exemplars")
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--gpus-per-worker", type=float, default=0.0)
    parser.add_argument("--cpus-per-worker", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, default=0.1)
    args = parser.parse_args(argv)

    store = replaystore.open(args.uri)
    source = Source.from_store(store, args.table, columns=["features", "class_id"], id_column="sample_id", sampler=Shuffled())
    stream = ReplayStream(source, batch_size=args.batch_size)
    resources = {"CPU": args.cpus_per_worker, **({"GPU": args.gpus_per_worker} if args.gpus_per_worker else {})}
    trainer = stream_trainer(
        train_loop,
        stream,
        ScalingConfig(num_workers=args.workers, use_gpu=args.gpus_per_worker > 0, resources_per_worker=resources),
        train_loop_config={"classes": args.classes, "epochs": args.epochs, "lr": args.lr},
        run_config=RunConfig(name="replay-train"),
    )
    result = trainer.fit()
    write_back(result, store, stream)
    assert result.metrics is not None, "the train loop reports its loss"
    return float(result.metrics["loss"])


if __name__ == "__main__":
    print(f"final loss {main():.4f}")
