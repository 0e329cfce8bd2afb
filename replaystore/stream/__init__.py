"""Streaming replay memory into torch and Ray Train: sources × samplers × mixing → batches of tensors.

The folder is the architecture: `sources` (one type per kind of input, at which version), `snapshots`
(a source at one version), `order` and `plan` (pure functions deciding who reads which rows),
`samplers` (per-source policies), `mixing` (rows per source per global batch), `batches` (read rows
→ batches, pure), `tensors` (Arrow → torch), `cache` (memory-mapped hot tier), `dataset` (the
IterableDataset that wires them), `priorities` (losses back into the store), `feedback` (experience uses back into
freq/utility), `sumtree` (prioritized draws in O(log n)). `ray_train` is the only module that
imports Ray and is not imported here.
"""

from replaystore.stream.batches import Batch
from replaystore.stream.cache import HotCache
from replaystore.stream.dataset import ReplayStream
from replaystore.stream.feedback import UtilityWrite, write_utility
from replaystore.stream.mixing import ExactK, Proportions
from replaystore.stream.priorities import LossLog, load_priorities, write_priorities
from replaystore.stream.samplers import Draw, Prioritized, Sampler, Sequential, Shuffled, Uniform
from replaystore.stream.sources import ArrowSource, LanceSource, Source, StoreSource
from replaystore.stream.tensors import to_tensors

__all__ = [
    "ArrowSource",
    "Batch",
    "Draw",
    "ExactK",
    "HotCache",
    "LanceSource",
    "LossLog",
    "Prioritized",
    "Proportions",
    "ReplayStream",
    "Sampler",
    "Sequential",
    "Shuffled",
    "Source",
    "StoreSource",
    "Uniform",
    "UtilityWrite",
    "load_priorities",
    "to_tensors",
    "write_priorities",
    "write_utility",
]
