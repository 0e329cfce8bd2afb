"""`replaystore ui`: a read-only web view of a store, served on the loopback address by default.

Pages for the store, each table, exemplar buffers, experiences, curricula, GeRe states,
priorities and SQL, rendered on the server (Jinja2) with inline SVG charts, so they work with no
network. Needs the `ui` extra (Starlette, uvicorn, Jinja2). This package sits above the memory
kinds (README.md, "Layers") and only reads.
"""

from replaystore.ui.app import create_app
from replaystore.ui.server import bind_host, serve

__all__ = ["bind_host", "create_app", "serve"]
