"""The local demo's app: a tiny HTTP server reporting its version on / and /health.

Settings come from ``behaviour.json`` next to this file (written by scripts/demo):
``{"version": "1", "port": 18080}``. Standard library only.
"""

from __future__ import annotations

import http.server
import json
import socket
import sys
from pathlib import Path

SETTINGS = json.loads((Path(__file__).parent / "behaviour.json").read_text())


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"demo app version {SETTINGS['version']}\n".encode()
        self.send_response(200 if self.path in ("/", "/health") else 404)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt: str, *args: object) -> None:
        sys.stderr.write(f"{self.address_string()} {fmt % args}\n")


class Server(http.server.HTTPServer):
    def server_bind(self) -> None:
        # HTTPServer.server_bind calls getfqdn(), which can hang without DNS; so bind
        # here, keeping SO_REUSEADDR so a restart can rebind while old sockets linger.
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(self.server_address)
        self.server_name, self.server_port = "127.0.0.1", self.server_address[1]


if __name__ == "__main__":
    Server(("127.0.0.1", int(SETTINGS["port"])), Handler).serve_forever()
