"""Print command results as aligned tables for people or JSON for machines."""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Done:
    """What an action command did: a sentence for people and the same facts as data for `--json`."""

    message: str
    data: Mapping[str, Any]


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _cell(value: Any) -> str:
    value = _plain(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else str(value)


def render_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Left-aligned columns with a header rule; numbers right-aligned."""
    if not rows:
        return "(no rows)"
    headers = list(dict.fromkeys(k for row in rows for k in row))
    cells = [[_cell(row.get(h)) for h in headers] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    numeric = [all(isinstance(row.get(h), (int, float)) for row in rows if row.get(h) is not None) for h in headers]

    def line(values: list[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def emit(result: Any, as_json: bool) -> None:
    if result is None:
        return
    if isinstance(result, Done):
        result = result.data if as_json else result.message
    if as_json:
        payload = {"message": result} if isinstance(result, str) else _plain(result)
        print(json.dumps(payload, indent=2, default=str))
    elif isinstance(result, str):
        print(result)
    elif isinstance(result, Mapping):
        print(render_table([{"key": k, "value": _cell(v)} for k, v in result.items()]))
    else:
        print(render_table(list(result)))


def fail(message: str, debug: bool, code: int = 1) -> int:
    if debug:
        traceback.print_exc()
    print("error: " + " ".join(line.strip() for line in message.splitlines() if line.strip()), file=sys.stderr)  # one line
    return code
