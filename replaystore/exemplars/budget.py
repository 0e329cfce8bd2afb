"""MEMO byte arithmetic: a model and its exemplars share one budget, counted in bytes.

MEMO ("A Model or 603 Exemplars", ICLR 2023) showed that class-incremental methods are only
compared fairly when the memory budget counts the model too: a float32 ResNet-32 takes as many
bytes as 603 CIFAR images. Its code did this sum by hand; these helpers do it exactly (`floor`
wherever a count of whole exemplars comes out) so buffers can enforce it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from replaystore.checks import integer
from replaystore.errors import ValidationError

# Bytes per stored element for dtypes models are saved in; torch knows them, names are accepted too.
_EXTRA_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32, "fp64": torch.float64}


def dtype_nbytes(dtype: str | torch.dtype | np.dtype) -> int:
    """Bytes per element of a torch or numpy dtype, or a name such as 'float32' or 'bfloat16'."""
    if isinstance(dtype, torch.dtype):
        return dtype.itemsize
    if isinstance(dtype, str):
        named = _EXTRA_DTYPES.get(dtype) or getattr(torch, dtype, None)
        if isinstance(named, torch.dtype):
            return named.itemsize
    try:
        return np.dtype(dtype).itemsize
    except TypeError:
        raise ValidationError("dtype", f"unknown dtype {dtype!r}; use a torch/numpy dtype or a name like 'float32', 'bfloat16'") from None


def count_parameters(model: torch.nn.Module, count_buffers: bool = False) -> int:
    """Elements in a model's parameters (shared tensors once); buffers such as BatchNorm's running stats only if asked.

    MEMO counts parameters only; running statistics are excluded by default to match it.
    """
    tensors = list(model.parameters()) + (list(model.buffers()) if count_buffers else [])
    unique = {t.data_ptr(): t.numel() for t in tensors if t.numel()}
    return sum(unique.values())


def model_nbytes(
    model: torch.nn.Module | None = None,
    *,
    params: int | None = None,
    dtype: str | torch.dtype | np.dtype = "float32",
    count_buffers: bool = False,
) -> int:
    """Bytes a model takes in the budget: parameter count × bytes per element of the stored `dtype`.

    Pass a module or a parameter count. With `count_buffers=True`, floating-point buffers are
    counted at the stored dtype and integer ones (e.g. `num_batches_tracked`) at their own size,
    since that is how a checkpoint saves them.
    """
    if (model is None) == (params is None):
        raise ValidationError("model", "pass either a torch.nn.Module or a parameter count (params=...), not both or neither")
    per = dtype_nbytes(dtype)
    if params is not None:
        return integer("params", params, minimum=0) * per
    assert model is not None
    if not isinstance(model, torch.nn.Module):
        raise ValidationError("model", f"must be a torch.nn.Module, got {type(model).__name__}")
    total = count_parameters(model) * per
    if count_buffers:
        seen = {p.data_ptr() for p in model.parameters()}
        for buf in model.buffers():
            if buf.data_ptr() in seen or not buf.numel():
                continue
            seen.add(buf.data_ptr())
            total += buf.numel() * (per if buf.is_floating_point() else buf.element_size())
    return total


def sample_nbytes(shape: Sequence[int], dtype: str | np.dtype = "uint8") -> int:
    """Raw bytes of one sample, e.g. a 32×32×3 uint8 image is 3,072 B and a 224×224×3 one 150,528 B."""
    dims = [int(d) for d in shape]
    if any(d < 0 for d in dims):
        raise ValidationError("shape", f"dimensions must be ≥ 0, got {tuple(dims)}")
    return math.prod(dims) * dtype_nbytes(dtype)


def exemplars_in(nbytes: int, per_sample: int) -> int:
    """How many whole exemplars of `per_sample` bytes fit in `nbytes` (floor): what a model is worth."""
    if per_sample <= 0:
        raise ValidationError("per_sample", f"a sample must take ≥ 1 byte, got {per_sample}")
    return max(0, int(nbytes)) // int(per_sample)


def bytes_for(exemplars: int, per_sample: int) -> int:
    """Bytes that `exemplars` samples of `per_sample` bytes take."""
    if exemplars < 0 or per_sample < 0:
        raise ValidationError("exemplars", f"counts and sizes must be ≥ 0, got {exemplars} × {per_sample}")
    return int(exemplars) * int(per_sample)


@dataclass(frozen=True)
class FairBudget:
    """MEMO's fair comparison after `tasks` tasks, for one total budget."""

    total_bytes: int
    growing_model_bytes: int
    fixed_model_bytes: int
    growing_exemplars: int
    fixed_exemplars: int

    @property
    def extra_exemplars(self) -> int:
        """Exemplars the fixed-model (exemplar-only) method holds beyond the growing one."""
        return self.fixed_exemplars - self.growing_exemplars


def fair_budget(
    base: torch.nn.Module | int,
    params_per_task: int,
    tasks: int,
    per_sample: int,
    exemplars: int = 0,
    dtype: str | torch.dtype = "float32",
) -> FairBudget:
    """Same total bytes for a model that grows by `params_per_task` each task after the first and a fixed one.

    The total is the growing method's model after `tasks` tasks plus its `exemplars`; the fixed
    method spends the bytes the growing model added on exemplars instead.
    """
    if tasks < 1 or params_per_task < 0 or exemplars < 0:
        raise ValidationError("tasks", f"need tasks ≥ 1 and counts ≥ 0, got tasks={tasks}, params_per_task={params_per_task}, exemplars={exemplars}")
    base_bytes = model_nbytes(base, dtype=dtype) if isinstance(base, torch.nn.Module) else model_nbytes(params=base, dtype=dtype)
    growing = base_bytes + model_nbytes(params=params_per_task * (tasks - 1), dtype=dtype)
    total = growing + bytes_for(exemplars, per_sample)
    return FairBudget(total, growing, base_bytes, exemplars, exemplars_in(total - base_bytes, per_sample))
