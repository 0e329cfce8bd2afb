"""`replaystore ui`: serve the read-only web view of the store (replaystore.ui) until Ctrl-C.

The web stack is the `ui` extra, checked before the store is opened; a store that does not exist
is refused rather than created, since the view only reads.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import replaystore
from replaystore.errors import NotFoundError
from replaystore.extras import require
from replaystore.store import DEFAULT_URI


def ui(args: argparse.Namespace) -> str:
    for module in ("starlette", "uvicorn", "jinja2"):
        require(module, extra="ui", feature="replaystore ui")
    from replaystore.ui import serve

    uri = args.uri or os.environ.get("REPLAYSTORE_URI") or DEFAULT_URI
    if "://" not in uri and not Path(uri).expanduser().is_dir():
        raise NotFoundError(f"no store at {uri}: give --uri of an existing store (the UI only reads, it creates nothing)")
    url = serve(replaystore.open(uri), port=args.port, host=args.host, token=args.token, say=lambda line: print(line, flush=True))
    return f"stopped serving {url}"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ui", help="serve a read-only web view of the store on 127.0.0.1 (Ctrl-C stops)")
    p.add_argument("--port", type=int, default=8765, help="port to listen on (default: 8765)")
    p.add_argument("--host", default=None, help="address to bind instead of 127.0.0.1 (only when given; consider --token)")
    p.add_argument("--token", nargs="?", const="", default=None, help="require this access token (without a value: generate one)")
    p.set_defaults(func=ui)
