"""Experience commands: import/export ReMe dumps, retrieve, distill trajectories, refine, index.

`import` and `distill` may start the table; the others need it to exist, so a mistyped `--table`
fails in one line instead of leaving an empty table behind. The table is checked before the
embedder loads (seconds).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from replaystore.cli.arguments import input_file, integer, number, output_file
from replaystore.cli.output import Done
from replaystore.cli.stores import existing_table, open_store
from replaystore.errors import ValidationError
from replaystore.experiences import ExperienceMemory, LLMExtractor, RuleExtractor
from replaystore.experiences.index import MIN_VECTOR_ROWS
from replaystore.schemas import Kind


def _memory(args: argparse.Namespace, create: bool = False) -> ExperienceMemory:
    store = open_store(args, create=create)
    if not create:
        existing_table(store, args.table, option="--table")
    return store.experiences(args.table, dedup_threshold=getattr(args, "dedup_threshold", 0.5))


def import_(args: argparse.Namespace) -> Done:
    count = _memory(args, create=True).import_jsonl(args.file, workspace=args.workspace)
    return Done(f"imported {count} ReMe memories from {args.file} into {args.table}", {"table": args.table, "file": args.file, "imported": count})


def export(args: argparse.Namespace) -> Done:
    count = _memory(args).export_jsonl(args.file, workspace=args.workspace, include_archived=not args.active_only)
    return Done(f"exported {count} experiences to {args.file}", {"table": args.table, "file": args.file, "exported": count})


def retrieve(args: argparse.Namespace) -> list[dict[str, Any]]:
    hits = _memory(args).retrieve(args.query, args.workspace, k=args.k, where=args.where, mode=args.mode, record=not args.no_record)
    return hits.select(["experience_id", "kind", "when_to_use", "content", "similarity", "relevance", "score", "freq", "utility"]).to_pylist()


def distill(args: argparse.Namespace) -> dict[str, Any]:
    """Trajectories are one JSON object per line: task_id, messages, score, metadata (ReMe's shape)."""
    lines = [line for line in Path(args.file).read_text(encoding="utf-8").splitlines() if line.strip()]
    try:
        trajectories = [json.loads(line) for line in lines]
    except json.JSONDecodeError as exc:
        raise ValidationError("file", f"{args.file} is not JSON lines: {exc}") from None
    extractor = LLMExtractor(args.model) if args.model else RuleExtractor()
    report = _memory(args, create=True).distill(trajectories, extractor=extractor, workspace=args.workspace, min_score=args.min_score)
    return {"candidates": report.candidates, "rejected": len(report.rejected), "added": len(report.added), "skipped (duplicates)": len(report.skipped)}


def refine(args: argparse.Namespace) -> list[dict[str, Any]]:
    return _memory(args).refine(args.freq_threshold, args.utility_threshold, workspace=args.workspace).to_pylist()


def index(args: argparse.Namespace) -> dict[str, Any]:
    return _memory(args).build_index(min_vector_rows=args.min_vector_rows, vector=True if args.vector else None).as_dict()


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("experiences", help="ReMe procedural memory: import/export, retrieve, distill, refine, index")
    parser.add_argument("--table", default=Kind.EXPERIENCES.value, help=f"experiences table (default: {Kind.EXPERIENCES.value})")
    commands = parser.add_subparsers(dest="experiences_command", metavar="ACTION")
    commands.required = True

    p = commands.add_parser("import", help="load a ReMe task-memory JSONL dump (upsert by memory_id)")
    p.add_argument("file", type=input_file)
    p.add_argument("--workspace", help="put every new memory in this workspace instead of its workspace_id")
    p.set_defaults(func=import_)
    p = commands.add_parser("export", help="write experiences as a ReMe task-memory JSONL dump")
    p.add_argument("file", type=output_file)
    p.add_argument("--workspace")
    p.add_argument("--active-only", action="store_true")
    p.set_defaults(func=export)
    p = commands.add_parser("retrieve", help="top-k experiences of a workspace for a query (counts freq)")
    p.add_argument("query")
    p.add_argument("--workspace", default="default")
    p.add_argument("-k", type=integer(1), default=5)
    p.add_argument("--where", help="extra SQL filter, e.g. \"kind = 'failure'\"")
    p.add_argument("--mode", choices=["vector", "text", "hybrid"], default="vector", help="text and hybrid need 'experiences index' first")
    p.add_argument("--no-record", action="store_true", help="do not count this retrieval in freq")
    p.set_defaults(func=retrieve)
    p = commands.add_parser("distill", help="trajectories (JSON lines) → validated, deduplicated experiences")
    p.add_argument("file", type=input_file, help="one JSON object per line: task_id, messages, score, metadata")
    p.add_argument("--workspace", default="default")
    p.add_argument("--model", help="local text-generation model path for the LLM extractor (default: rule extractor)")
    p.add_argument("--min-score", type=number(0, 1), default=0.5, help="keep lessons whose validation score is at least this (0-1)")
    p.add_argument("--dedup-threshold", type=number(0, 1), default=0.5, help="cosine above which a lesson is a duplicate (0-1)")
    p.set_defaults(func=distill)
    p = commands.add_parser("refine", help="archive experiences with freq ≥ N and utility/freq < T")
    p.add_argument("--freq-threshold", type=integer(1), default=5)
    p.add_argument("--utility-threshold", type=number(0), default=0.5)
    p.add_argument("--workspace")
    p.set_defaults(func=refine)
    p = commands.add_parser("index", help="scalar, full-text and (once large) vector indexes")
    p.add_argument("--min-vector-rows", type=integer(1), default=MIN_VECTOR_ROWS)
    p.add_argument("--vector", action="store_true", help="build the vector index whatever the size")
    p.set_defaults(func=index)
