"""Curriculum commands: score by length, build/list/compare orderings, plot pacing, import DeepSpeed."""

from __future__ import annotations

import argparse
import json
from typing import Any

import replaystore
from replaystore import curriculum
from replaystore.cli.arguments import input_file, integer, output_file
from replaystore.cli.output import Done
from replaystore.cli.stores import open_store
from replaystore.errors import ValidationError


def _store(args: argparse.Namespace) -> replaystore.Store:
    return open_store(args)


def _json(text: str | None, field: str) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValidationError(field, f"is not valid JSON: {exc}") from None


def score_length(args: argparse.Namespace) -> Done:
    v = curriculum.score(_store(args), args.source, args.metric, curriculum.SequenceLength(args.column), id_column=args.id_column)
    return Done(
        f"scored {args.source} by {args.metric} (length of '{args.column}') as curriculum_scores version {v}",
        {"source": args.source, "metric": args.metric, "column": args.column, "table": "curriculum_scores", "version": v},
    )


def order(args: argparse.Namespace) -> Done:
    spec = {"direction": args.direction, "metric": args.metric, "seed": args.seed, "pacing": _json(args.pacing, "pacing")}
    definition = curriculum.OrderingDefinition.from_dict(spec)
    ids = args.ids.split(",") if args.ids else None
    v = curriculum.build_ordering(_store(args), args.name, args.source, definition, ids=ids, id_column=args.id_column)
    return Done(
        f"built ordering {args.name} of {args.source} as curriculum_orderings version {v}",
        {"ordering": args.name, "source": args.source, "definition": definition.to_dict(), "table": "curriculum_orderings", "version": v},
    )


def list_(args: argparse.Namespace) -> list[dict[str, Any]]:
    return [{**row, "definition": json.loads(row["definition"])} for row in curriculum.list_orderings(_store(args))]


def compare(args: argparse.Namespace) -> dict[str, Any]:
    return curriculum.compare_orderings(_store(args), args.a, args.b, k=args.k)


def plot(args: argparse.Namespace) -> Done:
    from replaystore.curriculum.plot import plot_pacing  # matplotlib only for this command

    store = _store(args)
    ordering = curriculum.load_ordering(store, args.name)
    if ordering.definition.pacing is None:
        raise ValidationError("pacing", f"ordering '{args.name}' stores no pacing to plot")
    out = plot_pacing(ordering.definition.pacing, args.out, difficulty=ordering.difficulty, steps=args.steps, title=args.name)
    return Done(f"wrote {out}", {"ordering": args.name, "file": str(out)})


def import_deepspeed(args: argparse.Namespace) -> list[dict[str, Any]]:
    definitions = curriculum.from_deepspeed(args.config, seed=args.seed)
    rows = []
    for metric, definition in definitions.items():
        row: dict[str, Any] = {"metric": metric, "definition": definition.to_dict()}
        if isinstance(definition, curriculum.SeqlenCurriculum):  # single cluster: every row admitted, nothing to order
            row["admits"] = "every row"
        elif args.source:
            name = f"{args.prefix}{metric}"
            row["ordering"] = name
            row["version"] = curriculum.build_ordering(_store(args), name, args.source, definition)
        rows.append(row)
    return rows


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("curriculum", help="difficulty scores, orderings and pacing")
    cmds = parser.add_subparsers(dest="curriculum_command", metavar="ACTION")
    cmds.required = True
    p = cmds.add_parser("score-length", help="score a table's rows by the length of a list or text column")
    p.add_argument("source")
    p.add_argument("--column", default="tokens")
    p.add_argument("--metric", default="seq_len")
    p.add_argument("--id-column", default="sample_id")
    p.set_defaults(func=score_length)
    p = cmds.add_parser("order", help="build (or replace) a named ordering of a source")
    p.add_argument("name")
    p.add_argument("source")
    p.add_argument("--direction", default="easy_to_hard", choices=["easy_to_hard", "hard_to_easy", "random", "list"])
    p.add_argument("--metric")
    p.add_argument("--seed", type=integer(0), default=0)
    p.add_argument("--pacing", help='JSON, e.g. \'{"type": "sqrt", "c0": 0.1, "T": 1000}\'')
    p.add_argument("--ids", help="comma-separated sample ids (list orderings)")
    p.add_argument("--id-column", default="sample_id")
    p.set_defaults(func=order)
    cmds.add_parser("list", help="stored orderings with their definitions").set_defaults(func=list_)
    p = cmds.add_parser("compare", help="Kendall tau and top-k overlap of two orderings")
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--k", type=integer(1), default=100)
    p.set_defaults(func=compare)
    p = cmds.add_parser("plot", help="plot an ordering's pacing schedule to a PNG")
    p.add_argument("name")
    p.add_argument("out", type=output_file, help="PNG file to write (its folder must exist)")
    p.add_argument("--steps", type=integer(1))
    p.set_defaults(func=plot)
    p = cmds.add_parser("import-deepspeed", help="turn a DeepSpeed curriculum config (JSON file) into ordering definitions")
    p.add_argument("config", type=input_file)
    p.add_argument("--source", help="also build one ordering per metric of this source (scores must exist)")
    p.add_argument("--prefix", default="deepspeed-")
    p.add_argument("--seed", type=integer(0), default=0)
    p.set_defaults(func=import_deepspeed)
