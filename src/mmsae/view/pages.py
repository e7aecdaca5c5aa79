"""The viewer's routes: the feature list, feature pages, rendered images by id, the image page and its
model endpoint, the steering playground (playground.py), the vendored assets, and errors as a page or JSON (never a traceback)."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from ..index import browse
from .data import VIEWS, IndexView, NotFound
from .forms import PROMPT_LIMIT, read_image
from .model import Busy, JobGate, ModelRunner, ModelUnavailable, Neighbours
from .playground import playground_routes
from .security import TOKEN_COOKIE, TOKEN_NEEDED, HostCheck, token_ok

log = logging.getLogger("mmsae.view")
HERE = Path(__file__).parent
# The assets, read once at start-up by name: a request never names a path on disk.
ASSETS = {name: (HERE / "static" / name).read_bytes() for name in ("view.js", "playground.js", "view.css")}
ASSET_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
PNG_HEADERS = {"cache-control": "private, max-age=3600", "x-content-type-options": "nosniff"}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


def _env() -> Environment:
    env = Environment(loader=FileSystemLoader(str(HERE / "templates")), autoescape=True)
    env.filters["num"] = lambda v, d=3: "–" if v is None else (f"{v:.{d}g}" if isinstance(v, float) else str(v))
    env.filters["pct"] = lambda v: "–" if v is None else f"{100 * v:.0f}%"
    return env


def split_context(context: str) -> tuple[str, str, str]:
    """'a b <<tok>> c' -> ('a b ', 'tok', ' c'): the index marks the firing token with << >>."""
    a = context.find("<<")
    b = context.find(">>", a + 2)
    if a < 0 or b < 0:
        return context, "", ""
    return context[:a], context[a + 2:b], context[b + 2:]


def make_app(cfg, token: str, allowed_hosts: tuple[str, ...]) -> Starlette:
    view = IndexView(cfg.index, cfg.data)
    meta = view.meta
    runner = ModelRunner(cfg.model or meta.get("model"), cfg.sae or meta.get("sae"), meta.get("layer"), cfg.device)
    neighbours = Neighbours(cfg.sae or meta.get("sae"))
    gate = JobGate(cfg.max_jobs, cfg.max_queue)
    env = _env()

    def page(name: str, request: Request, status: int = 200, **ctx) -> HTMLResponse:
        html = env.get_template(name).render(request=request, meta=meta, **ctx)
        return HTMLResponse(html, status_code=status, headers={"content-security-policy": CSP,
                                                                 "x-content-type-options": "nosniff"})

    def with_token_cookie(request: Request):
        """The start-up URL carries the token: keep it in a cookie and drop it from the address bar."""
        if "token" not in request.query_params:
            return None
        query = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "token"])
        response = RedirectResponse(request.url.path + ("?" + query if query else ""), status_code=303)
        if token_ok(request, token):
            response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict")
        return response

    def feature_list(request: Request):
        redirect = with_token_cookie(request)
        if redirect is not None:
            return redirect
        p = request.query_params
        args = {"q": p.get("q", "")[:200], "sort": p.get("sort", "frequency"), "concept": p.get("concept", ""),
                "status": p.get("status", ""), "dir": p.get("dir", "")}
        try:
            page_no, per_page = int(p.get("page", 1)), int(p.get("per_page", 50))
        except ValueError:
            raise ValueError("page and per_page must be integers") from None
        with view.cursor() as con:
            result = browse.list_features(con, args["q"], args["sort"],
                                          None if not args["dir"] else args["dir"] == "desc",
                                          args["concept"] or None, args["status"] or None, page=page_no,
                                          per_page=per_page)
            classes = browse.concept_classes(con)
            n_all = browse.n_features(con)
        if p.get("format") == "json":
            return JSONResponse({"total": result.total, "page": result.page, "n_pages": result.n_pages,
                                 "features": [r.__dict__ for r in result.rows]})

        def link(**change):
            q = {**args, "page": page_no, **change}
            return "/?" + urlencode({k: v for k, v in q.items() if v not in ("", None)})

        return page("list.html", request, result=result, args=args, classes=classes, n_all=n_all, link=link,
                    sorts=list(browse.SORTS), statuses=browse.STATUSES)

    def feature_page(request: Request):
        f = request.path_params["feature"]
        data = view.feature(f)
        peak = max((c.activation for c in data["contexts"]), default=0.0) or 1.0
        contexts = [(c, *split_context(c.context), max(0.0, min(1.0, c.activation / peak)))
                    for c in data["contexts"]]
        data["contexts"] = contexts
        return page("feature.html", request, f=f, **data, neighbours=neighbours.of(f),
                    views=VIEWS)

    def example_png(request: Request):
        pp = request.path_params
        return Response(view.example_png(pp["feature"], pp["rank"], pp["view"]), media_type="image/png",
                        headers=PNG_HEADERS)

    def record_png(request: Request):
        pp = request.path_params
        return Response(view.record_png(pp["sample"], pp["image_index"]), media_type="image/png",
                        headers=PNG_HEADERS)

    def asset(request: Request):
        name = request.path_params["name"]
        if name not in ASSETS:
            raise NotFound(f"no asset {name!r}")
        return Response(ASSETS[name], media_type=ASSET_TYPES[Path(name).suffix],
                        headers={"x-content-type-options": "nosniff"})

    def image_page(request: Request):
        redirect = with_token_cookie(request)
        if redirect is not None:
            return redirect
        with view.cursor() as con:
            picks = browse.indexed_images(con)
        return page("image.html", request, picks=picks, unavailable=runner.available(),
                    has_token=token_ok(request, token), prompt=meta.get("prompt") or "<image>",
                    max_mb=cfg.max_upload_bytes / 2**20)

    async def analyze(request: Request):
        if not token_ok(request, token):
            return JSONResponse({"error": TOKEN_NEEDED}, status_code=403)
        why = runner.available()
        if why:
            return JSONResponse({"error": why}, status_code=503)
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > cfg.max_upload_bytes + 65536:
            return JSONResponse({"error": f"the upload is {length} bytes; the limit is {cfg.max_upload_bytes}"},
                                status_code=413)
        form = await request.form(max_files=1, max_fields=8, max_part_size=cfg.max_upload_bytes + 1)
        prompt = str(form.get("prompt") or meta.get("prompt") or "<image>")[:PROMPT_LIMIT]
        image, shown = await read_image(form, view, cfg)
        if "{caption}" in prompt or "{text}" in prompt:
            prompt = prompt.replace("{caption}", "").replace("{text}", "")
        result = await gate.run(runner.analyze, image, prompt)
        return JSONResponse({**result, "image": shown, "prompt": prompt})

    def wants_json(request: Request) -> bool:
        return request.url.path.startswith("/api/") or request.query_params.get("format") == "json" or \
            request.url.path.endswith(".png")

    def error(request: Request, status: int, message: str):
        if wants_json(request):
            return JSONResponse({"error": message}, status_code=status)
        return page("error.html", request, status=status, code=status, message=message)

    async def on_http(request, exc: HTTPException):
        msg = {404: "no such page", 405: "method not allowed"}.get(exc.status_code, exc.detail)
        return error(request, exc.status_code, msg if exc.status_code != 404 else f"{msg}: {request.url.path}")

    async def on_not_found(request, exc):
        return error(request, 404, str(exc))

    async def on_bad(request, exc):
        return error(request, 400, str(exc))

    async def on_busy(request, exc):
        return error(request, 503, str(exc))

    async def on_crash(request, exc):
        log.exception("viewer error on %s", request.url.path)
        return error(request, 500, f"internal error ({type(exc).__name__}); the server log has the details")

    routes = [
        Route("/", feature_list), Route("/feature/{feature:int}", feature_page),
        Route("/img/{feature:int}/{rank:int}/{view}.png", example_png),
        Route("/record/{sample:int}/{image_index:int}.png", record_png),
        Route("/static/{name}", asset), Route("/image", image_page),
        Route("/api/analyze", analyze, methods=["POST"]),
        *playground_routes(cfg, token, view, runner, gate, page, with_token_cookie),
    ]
    app = Starlette(routes=routes, middleware=[Middleware(HostCheck, allowed=allowed_hosts)],
                    exception_handlers={HTTPException: on_http, NotFound: on_not_found, ValueError: on_bad,
                                        Busy: on_busy, ModelUnavailable: on_busy, Exception: on_crash},
                    lifespan=_lifespan(view))
    app.state.token = token
    app.state.view = view
    app.state.gate = gate
    app.state.runner = runner
    return app


def _lifespan(view):
    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        view.close()
    return lifespan

