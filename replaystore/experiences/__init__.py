"""ReMe procedural memory: lessons distilled from agent trajectories, kept in the store.

`ExperienceMemory` (in `memory`) is the API; `store.experiences()` opens one. Embedders
(`embedder`), extractors (`extractors`), indexes (`index`) and ReMe dumps (`reme_io`) plug in.
"""

from replaystore.experiences.embedder import Embedder, TransformerEmbedder, default_embedder
from replaystore.experiences.extractors import LLMExtractor, RuleExtractor, Trajectory
from replaystore.experiences.index import IndexReport, VectorIndexSpec
from replaystore.experiences.memory import AddReport, DistillReport, ExperienceMemory, Skipped, add_counts, refine_rule

__all__ = [
    "AddReport",
    "DistillReport",
    "Embedder",
    "ExperienceMemory",
    "IndexReport",
    "LLMExtractor",
    "RuleExtractor",
    "Skipped",
    "Trajectory",
    "TransformerEmbedder",
    "VectorIndexSpec",
    "add_counts",
    "default_embedder",
    "refine_rule",
]
