"""Transient faults and a cloud's latency on the way to an object store, injected for tests and benchmarks: an HTTP
proxy on 127.0.0.1 in front of a store's local server (moto for S3, Azurite for Azure) that holds every request for
a fixed latency (a cloud's time to first byte, which a local server does not have), fails a seeded share of the
ranged GETs (member reads and shard parts) and passes everything else through, counting the GETs."""
from __future__ import annotations

import collections
import socket
import sys
import time


class FaultyProxy:
    """An HTTP proxy on 127.0.0.1 in front of a store's server that fails a seeded share of the ranged GETs (member
    reads): answered 503 SlowDown, the connection reset before the answer, or the answer's headers and half its
    body sent and then a stall past the client's read timeout and a cut (an SDK's own retries end at the headers).
    Everything else is passed through, every request after `latency` s. `gets` counts the GET requests (listings,
    whole objects and ranges), `ranged` the ranged GETs by path. Bounded: it stops with its close()."""

    def __init__(self, upstream: str, share: float, seed: int, stall: float, latency: float = 0.0):
        import http.client
        import http.server
        import random
        import threading
        from urllib.parse import urlparse

        target, proxy = urlparse(upstream), self
        self.faults, self.requests, self.gets = [], 0, 0
        self.ranged = collections.Counter()  # path -> ranged GETs of it
        rng, lock = random.Random(seed), threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _forward(self):
                if latency:
                    time.sleep(latency)
                with lock:
                    proxy.requests += 1
                    proxy.gets += self.command == "GET"
                    if self.command == "GET" and "Range" in self.headers:
                        proxy.ranged[self.path.partition("?")[0]] += 1
                    fault = rng.choice(("503", "reset", "stall")) if (
                        self.command == "GET" and "Range" in self.headers and rng.random() < share) else None
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if fault:
                    proxy.faults.append(fault)
                if fault == "503":
                    text = b"<Error><Code>SlowDown</Code><Message>Reduce your request rate.</Message></Error>"
                    self.send_response(503)
                    self.send_header("Content-Length", str(len(text)))
                    self.end_headers()
                    self.wfile.write(text)
                    return
                if fault == "reset":  # before any byte of the answer
                    self._cut()
                    return
                upstream_conn = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
                upstream_conn.request(self.command, self.path, body=body or None, headers=dict(self.headers))
                answer = upstream_conn.getresponse()
                data = answer.read()
                upstream_conn.close()
                self.send_response(answer.status)
                for name, value in answer.getheaders():
                    if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if fault == "stall":  # the headers and half the body, then nothing: the client's timeout, then cut
                    self.wfile.write(data[:len(data) // 2])
                    self.wfile.flush()
                    time.sleep(stall)
                    self._cut()
                    return
                self.wfile.write(data)

            def _cut(self):
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                self.close_connection = True
                self.connection.close()

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward

        class Server(http.server.ThreadingHTTPServer):
            def handle_error(self, request, client_address):  # a client that went away (a hedge cancelled, a cut)
                if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
                    super().handle_error(request, client_address)

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
