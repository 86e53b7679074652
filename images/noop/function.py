"""noop: the smallest HTTP function. Answers every request with a JSON status.

The body says how many requests this process has served (a restored replica continues the
count of the process it was baked from) and the process's boot id, fixed at initialisation.
"""
import json
import os
import signal
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

BOOT = {"pid": os.getpid(), "initialised_at": time.time()}
served = 0


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def _reply(self):
        global served
        served += 1
        body = json.dumps({"ok": True, "served": served, **BOOT}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Served", str(served))
        self.end_headers()
        self.wfile.write(body)
        print(f"request {served} {self.command} {self.path}", flush=True)

    do_GET = _reply
    do_POST = _reply

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    port = int(os.environ.get("PORT", "8080"))
    # As pid 1 a process ignores SIGTERM unless it handles it: stop cleanly (docker stop, kill).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    # The image asks the runtime for PREBAKE_RESTORE_SIGNAL=SIGUSR2 after a restore; noop has no
    # per-replica state to renew, but must not die of the signal's default action.
    signal.signal(signal.SIGUSR2, lambda *_: None)
    server = HTTPServer(("0.0.0.0", port), Handler)
    print(f"noop listening on {port}", flush=True)
    sys.stdout.flush()
    server.serve_forever()
