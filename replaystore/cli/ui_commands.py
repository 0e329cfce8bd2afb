"""`replaystore ui`: serve the read-only web view of the store (replaystore.ui) until Ctrl-C.

The web stack is the `ui` extra, checked before the store is opened; a store that does not exist
is refused rather than created, since the view only reads.
"""

from __future__ import annotations

import argparse

from replaystore.cli.arguments import port
from replaystore.cli.stores import open_store
from replaystore.extras import require


def ui(args: argparse.Namespace) -> str:
    for module in ("starlette", "uvicorn", "jinja2"):
        require(module, extra="ui", feature="replaystore ui")
    from replaystore.ui import serve

    url = serve(open_store(args), port=args.port, host=args.host, token=args.token, say=lambda line: print(line, flush=True))
    return f"stopped serving {url}"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ui", help="serve a read-only web view of the store on 127.0.0.1 (Ctrl-C stops)")
    p.add_argument("--port", type=port, default=8765, help="port to listen on (default: 8765)")
    p.add_argument("--host", default=None, help="address to bind instead of 127.0.0.1 (only when given; consider --token)")
    p.add_argument("--token", nargs="?", const="", default=None, help="require this access token (without a value: generate one)")
    p.set_defaults(func=ui)
