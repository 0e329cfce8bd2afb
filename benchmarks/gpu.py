"""Issue 7's device check: the stream into GPU tensors, and a TorchTrainer run with `use_gpu=True`.

`python -m benchmarks.gpu [--rows N] [--json PATH]` on a machine with a CUDA GPU (without one it runs
on the CPU, to check the script, and says so). Not part of `python -m benchmarks`: it needs a GPU.
Each figure beside its peer, in the same run:
- rows/s into device tensors: the stream (pinned memory, non-blocking copies) vs raw Lance
  `to_batches(1024)` → `.to(device)`, and a 3-source mixture vs one source;
- did the GPU wait on data: a training loop (an MLP on the 64-d vectors) fed by the stream vs the
  same loop on batches already resident on the GPU (the no-wait ceiling), and the share of the loop's
  time spent blocked on the next batch — for a launch-bound and a GPU-bound model, with and without
  the prefetch thread, and through `stream.loader(4 workers)`;
- the same loop inside a Ray `TorchTrainer` (1 GPU worker) on a mixture, its losses written back
  as priorities in one merge.
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

import replaystore
from benchmarks.bench_streaming import BATCH, ROW_BYTES, make_table, raw_lance, write_tables
from benchmarks.common import Result, format_results
from replaystore.stream import LossLog, Proportions, ReplayStream, Sequential, Shuffled, Source

NAME = "gpu"
WIDTHS = {"launch-bound": 2048, "GPU-bound": 8192}  # MLP widths: CPU kernel launches vs GPU arithmetic dominate
if not torch.cuda.is_available():  # a CPU run only checks the script: keep it short
    WIDTHS = {label: width // 32 for label, width in WIDTHS.items()}


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def model(dev: torch.device, width: int) -> torch.nn.Module:
    torch.manual_seed(0)
    layers = [torch.nn.Linear(64, width), torch.nn.ReLU(), torch.nn.Linear(width, width), torch.nn.ReLU()]
    return torch.nn.Sequential(*layers, torch.nn.Linear(width, width), torch.nn.ReLU(), torch.nn.Linear(width, 100)).to(dev)


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def to_device(batch: dict[str, Any], dev: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(dev, non_blocking=True) for k, v in batch.items() if isinstance(v, torch.Tensor)}


def copy_rate(batches: Iterable[dict[str, Any]], dev: torch.device) -> float:
    """Rows/s of batches landed in device memory (synchronised at the end)."""
    start, rows = time.perf_counter(), 0
    for batch in batches:
        rows += int(to_device(batch, dev)["vector"].shape[0])
    sync(dev)
    return rows / (time.perf_counter() - start)


def train(batches: Iterable[dict[str, Any]], dev: torch.device, width: int, log: LossLog | None = None, stream: ReplayStream | None = None) -> dict[str, float]:
    """One pass of an MLP over `batches`: rows/s from the first batch on (worker start-up is reported
    apart, as `first_batch_s`), and the share of that time blocked waiting for the next batch."""
    net = model(dev, width)
    opt = torch.optim.SGD(net.parameters(), lr=1e-3)
    it, rows, wait = iter(batches), 0, 0.0
    pending: list[tuple[dict[str, Any], torch.Tensor]] = []
    sync(dev)
    opened = time.perf_counter()
    first = next(it)
    first_batch = time.perf_counter() - opened
    it = itertools.chain([first], it)
    start = time.perf_counter()
    while True:
        asked = time.perf_counter()
        batch = next(it, None)
        wait += time.perf_counter() - asked
        if batch is None:
            break
        x = to_device(batch, dev)
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            per_row = torch.nn.functional.cross_entropy(net(x["vector"]), x["label"], reduction="none")
        opt.zero_grad(set_to_none=True)
        per_row.mean().backward()
        opt.step()
        if log is not None and stream is not None:
            versions = list(stream.versions or [])  # the epoch's versions (cleared when it ends)
            pending.append((batch, per_row.detach()))  # copied out after the loop: no sync per step
        rows += len(per_row)
    sync(dev)
    seconds = time.perf_counter() - start
    for batch, losses in pending:
        log.add([s.name for s in stream.sources], versions, batch, losses.float().cpu())  # type: ignore[union-attr]
    return {"rows": rows, "seconds": seconds, "rows_per_s": rows / seconds, "wait_share": wait / seconds, "first_batch_s": first_batch}


def resident(n: int, dev: torch.device) -> list[dict[str, torch.Tensor]]:
    """The same rows as batches already in device memory: what a loop costs with no data path at all."""
    table = make_table(n)
    vectors = torch.from_numpy(table.column("vector").combine_chunks().flatten().to_numpy().reshape(-1, 64)).to(dev)
    labels = torch.from_numpy(table.column("label").to_numpy()).to(dev)
    return [{"vector": vectors[i : i + BATCH], "label": labels[i : i + BATCH]} for i in range(0, n, BATCH)]


def trainer_loop(stream: ReplayStream, log: LossLog, config: dict[str, Any]) -> dict[str, Any]:
    """What each Ray Train worker runs: the stream for its rank into its GPU."""
    import ray.train.torch

    dev = ray.train.torch.get_device()
    metrics = train(stream, dev, config["width"], log, stream)
    return {**metrics, "device": str(torch.cuda.get_device_name(dev)) if dev.type == "cuda" else "cpu"}


def ray_trainer(store: replaystore.Store, dev: torch.device) -> tuple[dict[str, Any], int]:
    import ray
    from ray.train import RunConfig, ScalingConfig

    from replaystore.stream.ray_train import stream_trainer, write_back

    gpu = dev.type == "cuda"
    ray.init(address="local", include_dashboard=False, log_to_driver=False, object_store_memory=2 * 1024**3)
    try:
        columns = ["vector", "label", "id"]
        sources = [Source.from_store(store, "main", id_column="id", columns=columns, sampler=Sequential())] + [
            Source.from_store(store, t, sampler=Shuffled(), id_column="id", columns=columns, cache=True) for t in ("replay_a", "replay_b")
        ]  # new-task data read in order, replay shuffled from the hot tier
        stream = ReplayStream(sources, BATCH, mixing=Proportions([0.8, 0.15, 0.05]))
        with tempfile.TemporaryDirectory() as runs:
            scaling = ScalingConfig(num_workers=1, use_gpu=gpu, resources_per_worker=None if gpu else {"CPU": 1})
            config = {"width": WIDTHS["GPU-bound"]}
            result = stream_trainer(trainer_loop, stream, scaling, train_loop_config=config, run_config=RunConfig(storage_path=runs, name="gpu")).fit()
            if result.error is not None:
                raise result.error
            write_back(result, store, stream)
        stream.close()
    finally:
        ray.shutdown()
    return dict(result.metrics or {}), store.count("priorities")


def run(n: int) -> tuple[list[Result], dict[str, Any]]:
    dev = device()
    pin = dev.type == "cuda"
    name = torch.cuda.get_device_name(dev) if pin else "no GPU: CPU run"
    with tempfile.TemporaryDirectory() as folder:
        store = replaystore.open(str(Path(folder) / "store"))
        uri = write_tables(store, n)
        main = Source.from_store(store, "main")
        mix = [Source.from_store(store, t) for t in ("main", "replay_a", "replay_b")]

        copy_rate(ReplayStream(main, BATCH, pin_memory=pin), dev)  # warm: page cache, CUDA context, pinned allocator
        copies = {  # best of 3 per setting: pinned or pageable, prefetch thread or in-line
            f"pin={p},prefetch={f}": max(copy_rate(ReplayStream(main, BATCH, pin_memory=p, prefetch=f), dev) for _ in range(3))
            for p in sorted({False, pin})
            for f in (2, 0)
        }
        best = max(copies, key=copies.__getitem__)
        ours = copies[best]
        raw = max(copy_rate(raw_lance(uri), dev) for _ in range(3))
        p, f = (part.split("=")[1] for part in best.split(","))
        mixed = max(copy_rate(ReplayStream(mix, BATCH, mixing=Proportions([0.6, 0.3, 0.1]), pin_memory=p == "True", prefetch=int(f)), dev) for _ in range(3))
        for a, b in zip(
            ReplayStream(mix, BATCH, mixing=Proportions([0.6, 0.3, 0.1]), pin_memory=pin), ReplayStream(mix, BATCH, mixing=Proportions([0.6, 0.3, 0.1]))
        ):
            assert all(torch.equal(a[k], b[k]) for k in b), "a pinned mixed batch differs from the pageable one"
        fits = {}
        for label, width in WIDTHS.items():
            train(resident(min(n, 50 * BATCH), dev), dev, width)  # warm the kernels
            fits[label] = {"ideal": train(resident(n, dev), dev, width)}
            for prefetch in (2, 0):
                fits[label][f"prefetch={prefetch}"] = train(ReplayStream(main, BATCH, pin_memory=pin, prefetch=prefetch), dev, width)
        workers = 4 if pin else 1
        stream = ReplayStream(main, BATCH)  # the DataLoader pins in its own thread
        fits["GPU-bound"]["loader"] = train(stream.loader(num_workers=workers, pin_memory=pin), dev, WIDTHS["GPU-bound"])
        stream.close()
        trained, priorities = ray_trainer(store, dev)
    gb = ROW_BYTES / 1e9
    results = [
        Result(NAME, f"stream → {name} tensors, {n:,} rows", "GB/s", ours * gb, raw * gb, "raw lance to_batches(1024) → .to(device)", True, "≥ 1.0×", best),
        Result(NAME, "3-source mixture → device", "rows/s", mixed, ours, "single-source stream → device", True, "≥ 0.9×", best),
    ]
    for label, fit in fits.items():
        ideal = fit["ideal"]["rows_per_s"]
        for how, got in fit.items():
            if how != "ideal":
                results.append(
                    Result(
                        NAME,
                        f"{label} MLP ({WIDTHS[label]}) fed by stream {how}, {name}",
                        "rows/s",
                        got["rows_per_s"],
                        ideal,
                        "same loop on batches resident on the device",
                        True,
                        "≈ 1.0× (GPU never waits)",
                        f"wait share {got['wait_share']:.3f}, first batch {got['first_batch_s']:.2f} s",
                    )
                )
    results.append(
        Result(
            NAME,
            "TorchTrainer (1 worker, use_gpu), GPU-bound MLP, 80/15/5 mixture (replay shuffled, hot tier)",
            "rows/s",
            trained["rows_per_s"],
            fits["GPU-bound"]["ideal"]["rows_per_s"],
            "same loop on batches resident on the device",
            True,
            "≈ 1.0×",
            f"wait share {trained['wait_share']:.3f}; {priorities:,} priorities written",
        )
    )
    return results, {
        "device": name,
        "copies_rows_per_s": copies,
        "raw_rows_per_s": raw,
        "mixed_rows_per_s": mixed,
        "fits": fits,
        "trainer": trained,
        "priorities": priorities,
    }


def trainer_only(n: int) -> tuple[list[Result], dict[str, Any]]:
    dev = device()
    with tempfile.TemporaryDirectory() as folder:
        store = replaystore.open(str(Path(folder) / "store"))
        write_tables(store, n)
        train(resident(min(n, 50 * BATCH), dev), dev, WIDTHS["GPU-bound"])  # warm the kernels
        ideal = train(resident(n, dev), dev, WIDTHS["GPU-bound"])
        trained, priorities = ray_trainer(store, dev)
    result = Result(NAME, "TorchTrainer (1 worker, use_gpu), GPU-bound MLP, 80/15/5 mixture (replay shuffled, hot tier)", "rows/s",
                    trained["rows_per_s"], ideal["rows_per_s"], "same loop on batches resident on the device", True, "≈ 1.0×",
                    f"wait share {trained['wait_share']:.3f}; {priorities:,} priorities written")  # fmt: skip
    return [result], {"ideal": ideal, "trainer": trained, "priorities": priorities}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--json", default="")
    parser.add_argument("--trainer-only", action="store_true", help="only the TorchTrainer case")
    args = parser.parse_args()
    results, details = trainer_only(args.rows) if args.trainer_only else run(args.rows)
    print(json.dumps(details, indent=2, default=str))
    print(format_results(results))
    if args.json:
        Path(args.json).write_text(json.dumps({"details": details, "results": [r.as_dict() for r in results]}, indent=2, default=str))


if __name__ == "__main__":
    main()
