"""Serving the UI: on the loopback address unless a host is named explicitly.

There is no environment variable or default that binds elsewhere: `bind_host(None)` is always
127.0.0.1, so a store's contents reach the network only when someone typed `--host`.
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
import sys
from collections.abc import Callable

from replaystore.errors import ValidationError
from replaystore.store import Store

LOOPBACK = "127.0.0.1"
DEFAULT_PORT = 8765


def bind_host(host: str | None) -> str:
    """The address to bind: loopback by default, `host` only when one is given explicitly."""
    if host is None:
        return LOOPBACK
    if not isinstance(host, str) or not host.strip():
        raise ValidationError("--host", f"must be an address or host name, got {host!r}")
    return host.strip()


def is_loopback(host: str) -> bool:
    """Whether every address `host` resolves to is a loopback one."""
    try:
        infos = socket.getaddrinfo(host, None)
    except socket.gaierror:
        return False
    return all(ipaddress.ip_address(str(info[4][0]).split("%")[0]).is_loopback for info in infos)


def check_port(port: object) -> int:
    """A TCP port a server can listen on (0, "any free port", would hide where the UI is)."""
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValidationError("--port", f"must be a port number between 1 and 65535, got {port!r}")
    return port


def serve(store: Store, port: int = DEFAULT_PORT, host: str | None = None, token: str | None = None, say: Callable[[str], None] = print) -> str:
    """Serve the UI of `store` until interrupted; returns where it served."""
    import uvicorn

    from replaystore.ui.app import create_app

    address = bind_host(host)
    port = check_port(port)
    if token == "":  # asked for a token without giving one: make one
        token = secrets.token_urlsafe(16)
    if not is_loopback(address) and token is None:
        print(f"replaystore ui: serving {address} without an access token; anyone who reaches it can read the store (add --token)", file=sys.stderr)
    url = f"http://{address if ':' not in address else f'[{address}]'}:{port}/" + (f"?token={token}" if token else "")
    say(f"replaystore ui: {store.uri} at {url} (read-only; Ctrl-C stops)")
    config = uvicorn.Config(create_app(store, token), host=address, port=port, log_level="warning", access_log=False, lifespan="off")
    uvicorn.Server(config).run()
    return url
