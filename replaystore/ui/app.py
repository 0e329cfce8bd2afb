"""The web app: one Starlette route per page, server-rendered with Jinja2, read-only by construction.

Every route answers GET (and HEAD) only; any other method is refused with 405 before a handler
runs, and the handlers call only readers (Lance scans, manifests, the confined SQL layer), so no
request can commit a version. With a token, a request must carry it once (`?token=…`, then a
cookie) or get 401.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route

from replaystore.errors import NotFoundError, ReplayStoreError, ValidationError
from replaystore.store import Store, Version
from replaystore.ui import curriculum, exemplars, experiences, gere, priorities, sql, tables

READ_METHODS = ("GET", "HEAD")
TOKEN_COOKIE = "replaystore_ui_token"
PAGES = (("/", "Store"), ("/exemplars", "Exemplar buffers"), ("/experiences", "Experiences"), ("/curriculum", "Curriculum"),
         ("/gere", "GeRe"), ("/priorities", "Priorities"), ("/sql", "SQL"))  # fmt: skip

_templates = Environment(loader=PackageLoader("replaystore.ui", "templates"), autoescape=select_autoescape(["html"]))
_templates.filters["bytes"] = lambda n: (
    "—" if n is None else f"{n:,} B" if n < 10_000 else f"{n / 1024:,.1f} KiB" if n < 10_000_000 else f"{n / 2**20:,.1f} MiB"
)


def _number(request: Request, name: str, default: Any, kind: type) -> Any:
    """A query parameter as an int or float, or one line naming it and what it must be."""
    text = request.query_params.get(name)
    if text is None or text == "":
        return default
    try:
        return kind(text)
    except ValueError:
        raise ValidationError(name, f"must be {'an integer' if kind is int else 'a number'}, got {text!r}") from None


def _version(request: Request) -> Version | None:
    """`?version=` as a version number or a tag (None: the latest)."""
    text = request.query_params.get("version") or None
    return int(text) if text is not None and text.isdigit() else text


def create_app(store: Store, token: str | None = None) -> Starlette:
    """The UI over `store`; `token` (optional) is required of every request when given."""

    def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        html = _templates.get_template(template).render(pages=PAGES, path=request.url.path, store=store.uri, **context)
        return HTMLResponse(html, status_code=status_code)

    def page(handler: Callable[[Request], HTMLResponse]) -> Callable[[Request], HTMLResponse]:
        """Run a page's readers; a bad parameter or an unknown name is one line on the page, not a traceback."""

        def endpoint(request: Request) -> HTMLResponse:
            try:
                return handler(request)
            except NotFoundError as exc:
                return render(request, "error.html", 404, message=str(exc))
            except ReplayStoreError as exc:
                return render(request, "error.html", 400, message=str(exc))

        return endpoint

    def store_page(request: Request) -> HTMLResponse:
        return render(request, "store.html", tables=tables.overview(store))

    def table_page(request: Request) -> HTMLResponse:
        name = request.path_params["name"]
        number = _number(request, "page", 0, int)
        if number < 0:
            raise ValidationError("page", f"must be ≥ 0, got {number}")
        return render(
            request, "table.html", name=name, history=tables.history(store, name), contract=tables.contract(store, name),
            page=tables.page(store, name, number, _version(request)), asked_version=request.query_params.get("version", ""),
        )  # fmt: skip

    def exemplars_page(request: Request) -> HTMLResponse:
        names = exemplars.buffers(store)
        name = request.path_params.get("name") or (names[0] if names else None)
        report = exemplars.report(store, name, _version(request)) if name else None
        return render(request, "exemplars.html", names=names, report=report, asked_version=request.query_params.get("version", ""))

    def experiences_page(request: Request) -> HTMLResponse:
        names = experiences.tables(store)
        table = request.query_params.get("table") or (names[0] if names else None)
        freq, utility = _number(request, "freq", 5, int), _number(request, "utility", 0.5, float)
        report = experiences.report(store, table, freq, utility) if table else None
        return render(request, "experiences.html", names=names, report=report)

    def curriculum_page(request: Request) -> HTMLResponse:
        listed = curriculum.orderings(store)
        name = request.query_params.get("ordering") or (listed[0]["ordering"] if listed else None)
        c0, total = _number(request, "c0", 0.3, float), _number(request, "T", 100, int)
        report = curriculum.report(store, name, c0, total) if name else None
        return render(request, "curriculum.html", orderings=listed, report=report, c0=c0, T=total)

    def gere_page(request: Request) -> HTMLResponse:
        return render(request, "gere.html", report=gere.report(store))

    def priorities_page(request: Request) -> HTMLResponse:
        names = priorities.tables(store)
        table = request.query_params.get("table") or (names[0] if names else None)
        return render(request, "priorities.html", names=names, report=priorities.report(store, table) if table else None)

    def sql_page(request: Request) -> HTMLResponse:
        query = request.query_params.get("q", "")
        versions = request.query_params.get("versions", "")
        result = sql.run(store, query, versions)
        return render(
            request, "sql.html", query=query, versions=versions, result=result, tables=store.table_names(), status_code=400 if result["error"] else 200
        )

    routes = [
        Route("/", page(store_page), methods=["GET"]),
        Route("/table/{name}", page(table_page), methods=["GET"]),
        Route("/exemplars", page(exemplars_page), methods=["GET"]),
        Route("/exemplars/{name}", page(exemplars_page), methods=["GET"]),
        Route("/experiences", page(experiences_page), methods=["GET"]),
        Route("/curriculum", page(curriculum_page), methods=["GET"]),
        Route("/gere", page(gere_page), methods=["GET"]),
        Route("/priorities", page(priorities_page), methods=["GET"]),
        Route("/sql", page(sql_page), methods=["GET"]),
    ]
    return Starlette(routes=routes, middleware=[Middleware(BaseHTTPMiddleware, dispatch=_guard(token))])


def _guard(token: str | None) -> Callable[[Request, Callable[[Request], Awaitable[Response]]], Awaitable[Response]]:
    """Refuse every method but GET and HEAD, and (with a token) every request without it."""

    async def dispatch(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if request.method not in READ_METHODS:
            return PlainTextResponse("replaystore ui is read-only: only GET and HEAD are allowed\n", 405, headers={"Allow": ", ".join(READ_METHODS)})
        given = request.query_params.get("token") or request.cookies.get(TOKEN_COOKIE) or ""
        if token is not None and not hmac.compare_digest(given.encode(), token.encode()):
            return PlainTextResponse("replaystore ui: this server needs its access token: open the URL it printed (?token=…)\n", 401)
        response = await call_next(request)
        if token is not None and request.query_params.get("token"):
            response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict")
        return response

    return dispatch
