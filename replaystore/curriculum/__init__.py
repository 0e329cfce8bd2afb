"""Curriculum learning over the store: difficulty scores, named orderings, pacing and a sampler.

Score samples (`score`), order them (`build_ordering`), pace them (`LinearPacing`, `SqrtPacing`,
`RootPacing`, `DiscretePacing`) and draw admitted rows per step (`CurriculumSampler`). The sampler
module is torch-free; torch is imported only when a `ModelLoss` scores, and matplotlib only by
`replaystore.curriculum.plot`.
"""

from replaystore.curriculum.deepspeed import from_deepspeed
from replaystore.curriculum.orderings import (
    Ordering,
    OrderingDefinition,
    aligned_difficulty,
    build_ordering,
    compare_orderings,
    curriculum_sampler,
    kendall_tau,
    list_orderings,
    load_ordering,
    top_k_overlap,
)
from replaystore.curriculum.pacing import (
    DiscretePacing,
    LinearPacing,
    Pacing,
    RootPacing,
    SqrtPacing,
    pacing_from_dict,
)
from replaystore.curriculum.sampler import CurriculumSampler
from replaystore.curriculum.scoring import (
    ModelLoss,
    Scores,
    SequenceLength,
    load_scores,
    percentiles,
    score,
)
from replaystore.curriculum.seqlen import SeqlenCurriculum

__all__ = [
    "CurriculumSampler",
    "DiscretePacing",
    "LinearPacing",
    "ModelLoss",
    "Ordering",
    "OrderingDefinition",
    "Pacing",
    "RootPacing",
    "Scores",
    "SeqlenCurriculum",
    "SequenceLength",
    "SqrtPacing",
    "aligned_difficulty",
    "build_ordering",
    "compare_orderings",
    "curriculum_sampler",
    "from_deepspeed",
    "kendall_tau",
    "list_orderings",
    "load_ordering",
    "load_scores",
    "pacing_from_dict",
    "percentiles",
    "score",
    "top_k_overlap",
]
