"""A local stand-in for a Confluent schema registry, speaking the part of its REST
protocol producers and consumers use:

* ``GET /schemas/ids/{id}`` -> ``{"schema": "<JSON text>"}``; unknown id: 404
  ``{"error_code": 40403, "message": "Schema 42 not found"}``;
* ``POST /subjects/{subject}/versions`` ``{"schema": ...}`` -> ``{"id": n}`` (the same
  schema text gets the same id under every subject, as Confluent's does);
* ``POST /subjects/{subject}`` (is this schema registered here?) -> the version, or 404
  with 40401 (no such subject) / 40403 (schema not under it).

``hits`` counts requests by ``(method, path)`` so tests can see what was cached.
``stop()`` closes the port (clients then get "connection refused").
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


class RegistryStandIn:
    def __init__(self) -> None:
        self.schemas: dict[int, str] = {}  # id -> schema JSON text
        self.subjects: dict[str, list[int]] = {}  # subject -> ids, version order
        self.hits: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add(self, schema: str | dict[str, Any], schema_id: int | None = None) -> int:
        """Store a schema as a producer elsewhere would have (no subject); its id."""
        text = schema if isinstance(schema, str) else json.dumps(schema)
        with self._lock:
            sid = schema_id if schema_id is not None else max(self.schemas, default=0) + 1
            self.schemas[sid] = text
        return sid

    def _id_for(self, text: str) -> int:
        canon = json.dumps(json.loads(text), sort_keys=True)
        for sid, known in self.schemas.items():
            if json.dumps(json.loads(known), sort_keys=True) == canon:
                return sid
        sid = max(self.schemas, default=0) + 1
        self.schemas[sid] = text
        return sid

    def start(self) -> RegistryStandIn:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet test output
                pass

            def _send(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                standin.hits["GET", self.path] += 1
                m = re.fullmatch(r"/schemas/ids/(\d+)", self.path)
                if not m:
                    self._send(404, {"error_code": 404, "message": "HTTP 404 Not Found"})
                    return
                sid = int(m.group(1))
                with standin._lock:
                    text = standin.schemas.get(sid)
                if text is None:
                    self._send(404, {"error_code": 40403, "message": f"Schema {sid} not found"})
                    return
                self._send(200, {"schema": text})

            def do_POST(self) -> None:  # noqa: N802
                standin.hits["POST", self.path] += 1
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                m = re.fullmatch(r"/subjects/([^/]+)(/versions)?", self.path)
                if not m or "schema" not in body:
                    self._send(422, {"error_code": 42201, "message": "Invalid schema"})
                    return
                subject, register = m.group(1), m.group(2) is not None
                with standin._lock:
                    if register:
                        sid = standin._id_for(body["schema"])
                        versions = standin.subjects.setdefault(subject, [])
                        if sid not in versions:
                            versions.append(sid)
                        self._send(200, {"id": sid})
                        return
                    versions = standin.subjects.get(subject)
                    if versions is None:
                        self._send(
                            404, {"error_code": 40401, "message": f"Subject '{subject}' not found."}
                        )
                        return
                    canon = json.dumps(json.loads(body["schema"]), sort_keys=True)
                    for version, sid in enumerate(versions, 1):
                        if json.dumps(json.loads(standin.schemas[sid]), sort_keys=True) == canon:
                            self._send(
                                200,
                                {
                                    "subject": subject,
                                    "id": sid,
                                    "version": version,
                                    "schema": standin.schemas[sid],
                                },
                            )
                            return
                self._send(404, {"error_code": 40403, "message": "Schema not found"})

        # Same port on a restart: a worker that saw the registry go away finds it again.
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
