"""A stand-in for the Stripe API on 127.0.0.1 that serves the few calls the `stripe` provider makes.

It serves the Stripe-shaped payloads in tests/fixtures/stripe, records every request (path,
decoded form parameters, Idempotency-Key) and, like Stripe, replays the stored response of a
request whose Idempotency-Key it has seen. Tests queue the outcomes of PaymentIntent creations
("succeed", "decline", "error" for a 500).
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlparse

FIXTURES = Path(__file__).parent / "fixtures" / "stripe"


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text())


@dataclass
class StubRequest:
    method: str
    path: str
    params: dict[str, str]
    idempotency_key: str | None
    authorization: str | None


@dataclass
class StripeStub:
    url: str = ""
    requests: list[StubRequest] = field(default_factory=list)
    # Outcomes of the next PaymentIntent creations, first one first; "succeed" once empty.
    intent_outcomes: list[str] = field(default_factory=list)
    _answers: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def calls(self, method: str, path_prefix: str) -> list[StubRequest]:
        return [item for item in self.requests if item.method == method and item.path.startswith(path_prefix)]

    def answer(self, request: StubRequest) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.requests.append(request)
            key = f"{request.path}:{request.idempotency_key}" if request.idempotency_key else None
            if key is not None and key in self._answers:
                return self._answers[key]
            status, body = self._new_answer(request)
            # Stripe stores the result of a request that ran, errors included, but not a 500.
            if key is not None and status < 500:
                self._answers[key] = (status, body)
            return status, body

    def _new_answer(self, request: StubRequest) -> tuple[int, dict[str, Any]]:
        if request.method == "POST" and request.path == "/v1/checkout/sessions":
            session = fixture("checkout_session")
            session["metadata"] = _nested(request.params, "metadata")
            session["client_reference_id"] = request.params.get("client_reference_id")
            session["success_url"] = request.params.get("success_url")
            session["cancel_url"] = request.params.get("cancel_url")
            return 200, session
        if request.method == "GET" and request.path.startswith("/v1/payment_intents/"):
            intent = fixture("payment_intent_succeeded")
            intent["id"] = request.path.rsplit("/", 1)[1]
            return 200, intent
        if request.method == "POST" and request.path == "/v1/payment_intents":
            outcome = self.intent_outcomes.pop(0) if self.intent_outcomes else "succeed"
            if outcome == "decline":
                return 402, fixture("card_declined")
            if outcome == "error":
                return 500, {"error": {"type": "api_error", "message": "An unknown error occurred."}}
            intent = fixture("payment_intent_succeeded")
            intent["id"] = f"pi_renewal_{len(self.calls('POST', '/v1/payment_intents'))}"
            intent["amount"] = int(request.params["amount"])
            intent["payment_method"] = request.params["payment_method"]
            intent["metadata"] = _nested(request.params, "metadata")
            return 200, intent
        return 404, {"error": {"type": "invalid_request_error", "message": f"Unrecognized request URL ({request.path})."}}


def _nested(params: dict[str, str], name: str) -> dict[str, str]:
    """Collect form keys such as metadata[checkout] into {"checkout": ...}."""
    prefix = f"{name}["
    return {key[len(prefix) : -1]: value for key, value in params.items() if key.startswith(prefix) and key.endswith("]")}


@contextmanager
def running_stub() -> Iterator[StripeStub]:
    stub = StripeStub()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # keep test output quiet
            return

        def _handle(self) -> None:
            parsed = urlparse(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode() if length else ""
            params = dict(parse_qsl(body or parsed.query, keep_blank_values=True))
            request = StubRequest(
                method=self.command,
                path=parsed.path,
                params=params,
                idempotency_key=self.headers.get("Idempotency-Key"),
                authorization=self.headers.get("Authorization"),
            )
            status, payload = stub.answer(request)
            encoded = json.dumps(copy.deepcopy(payload)).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(encoded)))
            self.send_header("Request-Id", "req_stub")
            self.end_headers()
            self.wfile.write(encoded)

        do_GET = _handle
        do_POST = _handle

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    stub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield stub
    finally:
        server.shutdown()
        server.server_close()


def signed_event(payload: dict[str, Any], secret: str, *, timestamp: int | None = None) -> tuple[bytes, str]:
    """Return the body and Stripe-Signature header Stripe would send for `payload`.

    The scheme is Stripe's documented v1 signature: HMAC-SHA256 of "<timestamp>.<body>".
    """
    body = json.dumps(payload).encode()
    moment = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{moment}.".encode() + body, hashlib.sha256).hexdigest()
    return body, f"t={moment},v1={digest}"
