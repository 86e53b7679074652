"""serve: the HTTP conventions the sample functions share (markdown, resize, ml).

A function imports this module first, initialises (at import, the cost a cold start pays and a
restore does not), then calls serve() with a handler. From then on:

- it listens on 0.0.0.0:$PORT (default 8080) and prints "<name> listening on <port>";
- every request is counted; the count is in the X-Served header of every answer, and each
  request prints "request N METHOD PATH" once answered;
- a request the handler leaves alone (it returns None: GET / for instance, the readiness probe)
  gets the JSON status {"ok", "served", "pid", "initialised_at", "init_seconds", "function", ...}.
  A restored replica continues the count and keeps pid and initialised_at of the process it was
  baked from, so a client tells a restore from a cold start;
- init_seconds is the time from this module's import to serve(): the function's initialisation;
- SIGTERM (from the import on, initialisation included) exits 0, as pid 1 too, where the default
  action would be to ignore it;
- a handler raising BadRequest answers 400, any other exception 500, both as JSON;
- after a restore the prebake runtime sends the signal named by PREBAKE_RESTORE_SIGNAL (the
  images set SIGUSR2): the replica then reseeds `random` from the OS, takes a new replica id
  and runs the hooks registered with after_restore(), so that replicas of one checkpoint do not
  share random state or identity. The status says "restored": true from then on.
"""
import json
import os
import signal
import sys
import time
import traceback
from http.server import BaseHTTPRequestHandler, HTTPServer

_STARTED = time.perf_counter()

# As pid 1 a process ignores SIGTERM unless it handles it: stop cleanly (docker stop, kill).
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

MAX_BODY = 16 << 20

import random
import uuid

# What differs per replica: renewed after a restore (see after_restore).
_replica = {"replica": str(uuid.uuid4()), "restored": False}
_after_restore_hooks = []


def after_restore(hook):
    """Registers hook() to run in each replica right after it was restored from a checkpoint."""
    _after_restore_hooks.append(hook)
    return hook


def _restored(*_):
    random.seed(os.urandom(32))
    _replica["replica"] = str(uuid.UUID(bytes=os.urandom(16), version=4))
    _replica["restored"] = True
    for hook in _after_restore_hooks:
        hook()


_restore_signal = os.environ.get("PREBAKE_RESTORE_SIGNAL", "")
if _restore_signal:
    signal.signal(getattr(signal, _restore_signal if _restore_signal.startswith("SIG") else "SIG" + _restore_signal), _restored)


class BadRequest(Exception):
    """The request is unusable; its message goes back to the client with status 400."""


class Request:
    __slots__ = ("method", "path", "query", "headers", "body", "served")

    def __init__(self, method, target, headers, body, served):
        self.method = method
        self.path, _, self.query = target.partition("?")
        self.headers = headers
        self.body = body
        # This request's number: 1 for the first request the process answers.
        self.served = served


class Response:
    __slots__ = ("status", "content_type", "body")

    def __init__(self, status, content_type, body):
        self.status = status
        self.content_type = content_type
        self.body = body

    @classmethod
    def json(cls, value, status=200):
        return cls(status, "application/json", json.dumps(value).encode())


def serve(name, handle, info=None):
    """Answers requests with handle(Request) -> Response | None (None: the JSON status). Never returns."""
    boot = {"pid": os.getpid(), "initialised_at": time.time(), "init_seconds": round(time.perf_counter() - _STARTED, 6)}
    status = {**boot, "function": name, **(info or {})}
    served = 0

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def _reply(self):
            nonlocal served
            served += 1
            try:
                length = int(self.headers.get("Content-Length") or 0)
                if length < 0 or length > MAX_BODY:
                    raise BadRequest(f"a body of {length} bytes is not accepted (at most {MAX_BODY})")
                body = self.rfile.read(length) if length else b""
                response = handle(Request(self.command, self.path, self.headers, body, served))
                if response is None:
                    response = Response.json({"ok": True, "served": served, **status, **_replica})
            except BadRequest as e:
                response = Response.json({"ok": False, "served": served, "error": str(e)}, 400)
            except Exception as e:
                traceback.print_exc()
                response = Response.json({"ok": False, "served": served, "error": f"{type(e).__name__}: {e}"}, 500)
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(response.body)))
            self.send_header("X-Served", str(served))
            self.end_headers()
            self.wfile.write(response.body)
            print(f"request {served} {self.command} {self.path}", flush=True)

        do_GET = _reply
        do_POST = _reply

        def log_message(self, *args):
            pass

    port = int(os.environ.get("PORT", "8080"))
    server = HTTPServer(("0.0.0.0", port), Handler)
    print(f"{name} listening on {port}", flush=True)
    server.serve_forever()
