"""The HTTP side of `mwtap view`: the page and its JSON API, on a loopback address only.

Every URL starts with a random token (`/TOKEN/…`): the page's relative URLs carry it, and a request
without it is refused (403), so another local user or a web page that guesses the port gets
nothing. The page loads nothing from outside (Content-Security-Policy), and no Referer leaves it.
"""

from __future__ import annotations

import secrets
import sys
import threading
import time
from importlib import resources
from typing import Callable

import orjson
from aiohttp import web

from analysis.view.queries import Filter, Queries

STATIC = ("index.html", "app.js", "timeline.js", "api.js", "style.css")
CONTENT_TYPES = {"html": "text/html", "js": "text/javascript", "css": "text/css"}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
                               "form-action 'none'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


class View:
    """The state the handlers share: the queries over the index, the lock the follower takes while it
    adds records, and the token."""

    def __init__(self, queries: Queries, lock: threading.Lock, following: Callable[[], bool]):
        self.queries = queries
        self.lock = lock
        self.following = following
        self.token = secrets.token_urlsafe(18)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard])
        base = f"/{self.token}"
        app.router.add_get(base, lambda _: web.HTTPFound(base + "/"))
        app.router.add_get(base + "/", lambda _: self._static("index.html"))
        app.router.add_get(base + "/static/{name}", lambda r: self._static(r.match_info["name"]))
        for name, handler in (("summary", self._summary), ("consumers", self._consumers), ("frames", self._frames),
                              ("position", self._position), ("frame", self._frame),
                              ("violations", self._violations), ("timeline", self._timeline)):
            app.router.add_get(f"{base}/api/{name}", handler)
        return app

    @web.middleware
    async def _guard(self, request: web.Request, handler) -> web.StreamResponse:
        first = request.path.split("/", 2)[1] if request.path.startswith("/") else ""
        if not secrets.compare_digest(first.encode(), self.token.encode()):
            response: web.StreamResponse = web.Response(status=403, text="403: this page needs the URL mwtap view "
                                                                         "printed (with its token)\n")
        else:
            try:
                response = await handler(request)
            except (ValueError, KeyError, IndexError) as e:  # a bad query parameter
                response = web.json_response({"error": str(e)}, status=400)
        response.headers.update(SECURITY_HEADERS)
        return response

    def _static(self, name: str) -> web.Response:
        if name not in STATIC:
            raise web.HTTPNotFound()
        body = resources.files("recorder.view").joinpath("static", name).read_bytes()
        return web.Response(body=body, content_type=CONTENT_TYPES[name.rpartition(".")[2]], charset="utf-8")

    def _json(self, answer: Callable[[], object]) -> web.Response:
        with self.lock:
            body = orjson.dumps(answer(), option=orjson.OPT_NON_STR_KEYS)
        return web.Response(body=body, content_type="application/json")

    async def _summary(self, request: web.Request) -> web.Response:
        return self._json(lambda: {**self.queries.summary(), "following": self.following()})

    async def _consumers(self, request: web.Request) -> web.Response:
        return self._json(self.queries.consumers)

    async def _frames(self, request: web.Request) -> web.Response:
        q = request.query
        return self._json(lambda: self.queries.frames(int(q["conn"]), int(q.get("start", 0)), int(q.get("count", 100)),
                                                      Filter.of(q)))

    async def _position(self, request: web.Request) -> web.Response:
        q = request.query
        return self._json(lambda: {"position": self.queries.position(int(q["conn"]), int(q["g"]), Filter.of(q))})

    async def _frame(self, request: web.Request) -> web.Response:
        return self._json(lambda: self.queries.frame(int(request.query["g"])))

    async def _violations(self, request: web.Request) -> web.Response:
        conn = request.query.get("conn")
        return self._json(lambda: self.queries.violations(int(conn) if conn else None))

    async def _timeline(self, request: web.Request) -> web.Response:
        q = request.query

        def number(name):
            return float(q[name]) if q.get(name) else None
        return self._json(lambda: self.queries.timeline(int(q["conn"]), number("t0"), number("t1"),
                                                        int(q.get("buckets", 400))))


class Follower(threading.Thread):
    """Feeds the index the records appended to a capture while it is being written."""

    def __init__(self, index, records_of: Callable, lock: threading.Lock, poll_s: float = 0.2):
        super().__init__(name="mwtap-view-follow", daemon=True)
        self.index = index
        self.records_of = records_of
        self.lock = lock
        self.poll_s = poll_s
        self.caught_up = threading.Event()  # the first time the end of the file was reached
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self._last_read = time.monotonic()

    def run(self) -> None:
        try:
            _, records = self.records_of(self._wait)
            add = self.index.add
            for rec, file, offset, line in records:
                with self.lock:
                    add(rec, file, offset, line)
                self._last_read = time.monotonic()
        except Exception as e:  # before the first end of file: raised by the command; later: said here
            if self.caught_up.is_set():
                print(f"mwtap view: stopped following: {e}", file=sys.stderr, flush=True)
            self.error = e
        finally:
            self.caught_up.set()

    def _wait(self) -> bool:
        """At the end of the file: let the capture's clock run on as the wall clock does (deadlines
        fire as in `record --live`), then look again."""
        self.caught_up.set()
        if self.stop.wait(self.poll_s):
            return False
        with self.lock:
            self.index.advance(self.index.last_t + time.monotonic() - self._last_read)
        return True
