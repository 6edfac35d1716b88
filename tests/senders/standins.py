"""Local stand-ins speaking the providers' HTTP protocols, on 127.0.0.1 free ports.

Each records what it received and replays scripted failures from ``fail_next``:
``(status, body_dict, headers)`` tuples, or ``("sleep", seconds)`` to provoke a
client timeout.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
import uuid
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class StandIn:
    """A ThreadingHTTPServer with a request log and a failure script."""

    protocol_version = "HTTP/1.1"

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.fail_next: deque[tuple[Any, ...]] = deque()
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = owner.protocol_version
            disable_nagle_algorithm = True  # else ~40 ms per keep-alive request

            def log_message(self, *args: Any) -> None:
                return None

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                status, payload, headers = owner.dispatch(self, body)
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> StandIn:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()
            self.fail_next.clear()

    def scripted(self) -> tuple[int, Any, dict[str, str]] | None:
        with self.lock:
            step = self.fail_next.popleft() if self.fail_next else None
        if step is None:
            return None
        if step[0] == "sleep":
            time.sleep(step[1])
            return None
        status, body, *rest = step
        return status, body, (rest[0] if rest else {})

    def dispatch(
        self, handler: BaseHTTPRequestHandler, body: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        raise NotImplementedError


class TwilioStandIn(StandIn):
    """``POST /2010-04-01/Accounts/{sid}/Messages.json`` with Basic auth."""

    protocol_version = "HTTP/1.0"  # Twilio's client closes anyway; avoids Nagle stalls

    def __init__(self, sid: str, token: str) -> None:
        super().__init__()
        self.sid, self.token = sid, token

    def dispatch(
        self, handler: BaseHTTPRequestHandler, body: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        expected = "Basic " + base64.b64encode(f"{self.sid}:{self.token}".encode()).decode()
        if handler.headers.get("Authorization") != expected:
            return 401, {"code": 20003, "message": "Authenticate", "status": 401}, {}
        if urlsplit(handler.path).path != f"/2010-04-01/Accounts/{self.sid}/Messages.json":
            return 404, {"code": 20404, "message": "not found", "status": 404}, {}
        form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        failure = self.scripted()
        if failure:
            return failure
        with self.lock:
            self.requests.append(form)
        sid = "SM" + uuid.uuid4().hex
        return (
            201,
            {
                "account_sid": self.sid,
                "api_version": "2010-04-01",
                "body": form.get("Body"),
                "date_created": "Mon, 24 Nov 2026 22:45:37 +0000",
                "date_sent": None,
                "date_updated": "Mon, 24 Nov 2026 22:45:37 +0000",
                "direction": "outbound-api",
                "error_code": None,
                "error_message": None,
                "from": form.get("From"),
                "messaging_service_sid": form.get("MessagingServiceSid"),
                "num_media": "0",
                "num_segments": "1",
                "price": None,
                "price_unit": "USD",
                "sid": sid,
                "status": "accepted" if form.get("MessagingServiceSid") else "queued",
                "subresource_uris": {},
                "to": form.get("To"),
                "uri": f"/2010-04-01/Accounts/{self.sid}/Messages/{sid}.json",
            },
            {},
        )


def fcm_error(http: int, status: str, code: str) -> tuple[int, Any, dict[str, str]]:
    return (
        http,
        {
            "error": {
                "code": http,
                "message": code,
                "status": status,
                "details": [
                    {
                        "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                        "errorCode": code,
                    }
                ],
            }
        },
        {},
    )


class FcmStandIn(StandIn):
    """``POST /v1/projects/{p}/messages:send``; per-token failures via ``token_errors``."""

    def __init__(self, bearer: str) -> None:
        super().__init__()
        self.bearer = bearer
        self.token_errors: dict[str, tuple[int, Any, dict[str, str]]] = {}

    def dispatch(
        self, handler: BaseHTTPRequestHandler, body: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        if handler.headers.get("Authorization") != f"Bearer {self.bearer}":
            return fcm_error(401, "UNAUTHENTICATED", "THIRD_PARTY_AUTH_ERROR")
        project = handler.path.split("/")[3]
        message = json.loads(body)["message"]
        token = message.get("token") or message.get("fid")
        if token in self.token_errors:
            return self.token_errors[token]
        failure = self.scripted()
        if failure:
            return failure
        with self.lock:
            self.requests.append(message)
        return 200, {"name": f"projects/{project}/messages/0:{uuid.uuid4().hex[:16]}"}, {}


def _b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64u(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class WebPushStandIn(StandIn):
    """A push service: verifies VAPID, decrypts aes128gcm with the browser's keys.

    ``subscribe()`` plays the browser: it makes an ECDH key and auth secret and returns
    the subscription record the platform would store. ``gone`` holds endpoint ids that
    answer 410; ``status_for`` maps an id to a scripted response.
    """

    def __init__(self, vapid_public_key: str) -> None:
        super().__init__()
        self.vapid_public_key = vapid_public_key
        self.browsers: dict[str, tuple[Any, bytes]] = {}
        self.status_for: dict[str, tuple[int, Any, dict[str, str]]] = {}

    def subscribe(self) -> dict[str, str]:
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        key = ec.generate_private_key(ec.SECP256R1())
        auth = uuid.uuid4().bytes
        sub_id = uuid.uuid4().hex
        self.browsers[sub_id] = (key, auth)
        public = key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
        return {
            "endpoint": f"{self.base_url}/wpush/v2/{sub_id}",
            "p256dh": _b64u(public),
            "auth": _b64u(auth),
        }

    def dispatch(
        self, handler: BaseHTTPRequestHandler, body: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        import http_ece
        from py_vapid import Vapid02

        sub_id = handler.path.rsplit("/", 1)[-1]
        if sub_id not in self.browsers:
            return 404, {"error": "no such subscription"}, {}
        if sub_id in self.status_for:
            return self.status_for[sub_id]
        auth = handler.headers.get("Authorization", "")
        try:
            assert Vapid02.verify(auth)
            params = dict(p.split("=", 1) for p in auth.split(" ", 1)[1].split(","))
            assert params["k"] == self.vapid_public_key
            claims = json.loads(_unb64u(params["t"].split(".")[1]))
            assert claims["aud"] == self.base_url and claims["exp"] > time.time()
            assert claims["sub"].startswith("mailto:")
        except Exception:
            return 401, {"error": "bad VAPID"}, {}
        if handler.headers.get("Content-Encoding") != "aes128gcm":
            return 400, {"error": "encoding"}, {}
        failure = self.scripted()
        if failure:
            return failure
        key, secret = self.browsers[sub_id]
        plain = http_ece.decrypt(body, private_key=key, auth_secret=secret, version="aes128gcm")
        with self.lock:
            self.requests.append(
                {
                    "sub_id": sub_id,
                    "payload": json.loads(plain),
                    "ttl": handler.headers.get("TTL"),
                    "topic": handler.headers.get("Topic"),
                    "urgency": handler.headers.get("Urgency"),
                }
            )
        return 201, b"", {"Location": f"{self.base_url}/m/{uuid.uuid4().hex}"}
