"""``tinynet explore --watch RUN_DIR``: the explorer page, live, served from the standard
library's ``http.server`` while ``tinynet train --out RUN_DIR`` runs.

    GET /                   the page (``render_html`` with ``assets/live.js``)
    GET /api/metrics        the run's state, its epochs and per-step points
    GET /api/layers         per-layer gradient norms and update ratios
    GET /api/activations    the fixed image's activation snapshots

(``tinynet.explore.watch`` says what each holds.) Nothing else is answered (a browser's
``/favicon.ico`` gets an empty 204): there is no file
serving, so no path of a request (``../``, an absolute or %-encoded one) reaches a file; the
JSON comes from the run folder's own files, read without following links out of it. The
server binds to 127.0.0.1 unless told otherwise, and there it answers only requests addressed
to a loopback name (``Host: 127.0.0.1:P``, ``localhost:P``), so a web page elsewhere cannot
read the run through a name it points at 127.0.0.1 (DNS rebinding). Each answer carries an
ETag: a poll that finds nothing new gets 304 and no body.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import socket
import sys
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from tinynet.explore.html import asset, render_html
from tinynet.explore.watch import RunFolder

LOCALHOST = "127.0.0.1"
POLL_MILLISECONDS = 1000
ENDPOINTS = {"/api/metrics": "metrics", "/api/layers": "layers", "/api/activations": "activations"}
_LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


def page(folder: RunFolder, poll_ms: int = POLL_MILLISECONDS) -> str:
    """The watch page of ``folder``: the explorer's page with the live panel's script."""
    data = {
        "title": f"tinynet: watching {folder.name}",
        "info": {"run folder": str(folder.path)},
        "watch": {"endpoints": {v: k for k, v in ENDPOINTS.items()}, "poll_ms": poll_ms},
    }
    return render_html(data, scripts=(asset("live.js"),))


class WatchServer(ThreadingHTTPServer):
    """Serves ``folder``'s page and JSON at ``(host, port)`` (port 0: a free one)."""

    daemon_threads = True  # a request being answered does not hold up Ctrl-C

    def __init__(self, folder: RunFolder, host: str = LOCALHOST, port: int = 0):
        self.folder = folder
        self.page = page(folder).encode("utf-8")
        self.loopback_only = _is_loopback(host)
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            super().__init__((host, port), _Handler)
        except OSError as error:
            raise OSError(
                f"cannot serve on {host}:{port}: {error.strerror or error}"
                + (" (choose another --port, or 0 for a free one)" if port else "")
            ) from error

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}/"


class _Handler(BaseHTTPRequestHandler):
    server: WatchServer
    server_version = "tinynet-explore"

    def do_GET(self):
        self._answer(send_body=True)

    def do_HEAD(self):
        self._answer(send_body=False)

    def _answer(self, send_body: bool) -> None:
        if self.server.loopback_only and not _addressed_to_loopback(self.headers.get("Host")):
            return self._send(HTTPStatus.FORBIDDEN, _error("requests must be addressed to "
                              "127.0.0.1 or localhost"), send_body)  # fmt: skip
        path = urlsplit(self.path).path
        if path == "/favicon.ico":  # what a browser asks for by itself: none, and no error
            return self._send(HTTPStatus.NO_CONTENT, b"", send_body)
        if path == "/":
            body, kind = self.server.page, "text/html; charset=utf-8"
        elif path in ENDPOINTS:
            content = getattr(self.server.folder, ENDPOINTS[path])()
            body = json.dumps(content, allow_nan=False, separators=(",", ":")).encode()
            kind = "application/json"
        else:
            return self._send(HTTPStatus.NOT_FOUND, _error("not found"), send_body)
        tag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        if tag in (self.headers.get("If-None-Match") or ""):
            return self._send(HTTPStatus.NOT_MODIFIED, b"", False, tag=tag)
        self._send(HTTPStatus.OK, body, send_body, kind, tag)

    def _send(self, status, body: bytes, send_body: bool, kind="application/json", tag=None):
        self.send_response(status)
        if status != HTTPStatus.NOT_MODIFIED:
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
        if tag:
            self.send_header("ETag", tag)
        self.send_header("Cache-Control", "no-cache")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def log_message(self, format, *args):  # one line per poll would bury the URL
        pass


def _error(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _addressed_to_loopback(host_header: str | None) -> bool:
    """Whether a Host header names this machine by a loopback name (any port)."""
    if not host_header:
        return False
    host = urlsplit("//" + host_header.strip()).hostname
    return host is not None and (host in _LOOPBACK_NAMES or _is_loopback(host))


def serve(run_dir, host: str = LOCALHOST, port: int = 0, out=sys.stdout) -> None:
    """Serve ``run_dir``'s live page until Ctrl-C (KeyboardInterrupt, raised to the caller
    once the socket is closed); prints the URL to ``out`` first."""
    folder = RunFolder(run_dir)
    server = WatchServer(folder, host, port)
    try:
        print(f"watching {run_dir} at {server.url} (Ctrl-C to stop)", file=out, flush=True)
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
