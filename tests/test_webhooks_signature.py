"""The SDK's webhook signature helpers and the rules for webhook target addresses."""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import subprocess
import sys
from datetime import timedelta

import pytest

from tallystick.webhooks import (
    WebhookSignatureError,
    compute_webhook_signature,
    sign_webhook_payload,
    verify_webhook_signature,
)

SECRET = "whsec_test_secret"
BODY = b'{"id":"evt_1","event":"billing-invoice-paid","isTest":false,"data":{"invoice":{}}}'
SENT_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
SENT_SECONDS = SENT_MS / 1000


def test_signature_is_base64_hmac_over_t_dot_body():
    header = sign_webhook_payload(BODY, SECRET, SENT_MS)

    expected = base64.b64encode(
        hmac.new(SECRET.encode(), f"{SENT_MS}.".encode() + BODY, hashlib.sha256).digest()
    ).decode()
    assert header == f"t={SENT_MS},s={expected}"
    assert expected.endswith("=")  # 32 bytes in base64 keep one "=" of padding
    assert compute_webhook_signature(BODY, SECRET, SENT_MS) == expected


def test_verify_accepts_valid_signature():
    header = sign_webhook_payload(BODY, SECRET, SENT_MS)

    verify_webhook_signature(BODY, header, SECRET, now=SENT_SECONDS + 10)
    verify_webhook_signature(BODY.decode(), header, SECRET, now=SENT_SECONDS + 10)
    verify_webhook_signature(BODY, header.replace(",", ", "), SECRET, now=SENT_SECONDS)


@pytest.mark.parametrize(
    ("body", "secret", "now", "message"),
    [
        (BODY + b" ", SECRET, SENT_SECONDS, "does not match"),
        (BODY, "whsec_other", SENT_SECONDS, "does not match"),
        (BODY, SECRET, SENT_SECONDS + 301, "more than the 300 s allowed"),
        (BODY, SECRET, SENT_SECONDS - 301, "more than the 300 s allowed"),
    ],
    ids=["changed body", "other secret", "too old", "from the future"],
)
def test_verify_rejects(body, secret, now, message):
    header = sign_webhook_payload(BODY, SECRET, SENT_MS)

    with pytest.raises(WebhookSignatureError, match=message):
        verify_webhook_signature(body, header, secret, now=now)


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (None, "missing x-webhook-signature"),
        ("", "missing x-webhook-signature"),
        ("s=abc=", "no t part"),
        (f"t={SENT_MS}", "no s part"),
        ("t=yesterday,s=abc=", "invalid t part"),
    ],
)
def test_verify_rejects_malformed_header(header, message):
    with pytest.raises(WebhookSignatureError, match=message):
        verify_webhook_signature(BODY, header, SECRET, now=SENT_SECONDS)


def test_verify_tolerance_is_configurable():
    header = sign_webhook_payload(BODY, SECRET, SENT_MS)
    an_hour_later = SENT_SECONDS + timedelta(hours=1).total_seconds()

    verify_webhook_signature(BODY, header, SECRET, now=an_hour_later, tolerance_seconds=3600)
    with pytest.raises(WebhookSignatureError):
        verify_webhook_signature(BODY, header, SECRET, now=an_hour_later)


def test_sdk_helper_imports_without_server_modules():
    script = (
        "import sys, tallystick.webhooks; "
        "loaded = [m for m in sys.modules if m.split('.')[0] in ('fastapi', 'sqlalchemy') "
        "or m.startswith('tallystick.server')]; "
        "print(loaded); sys.exit(1 if loaded else 0)"
    )
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)

    assert completed.returncode == 0, completed.stdout + completed.stderr


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("8.8.8.8", None),
        ("2001:4860:4860::8888", None),
        ("127.0.0.1", "a loopback address"),
        ("::1", "a loopback address"),
        ("10.0.0.5", "a private-range address"),
        ("172.16.0.1", "a private-range address"),
        ("192.168.1.1", "a private-range address"),
        ("fc00::1", "a private-range address"),
        ("169.254.169.254", "a link-local address"),
        ("fe80::1", "a link-local address"),
        ("::ffff:127.0.0.1", "a loopback address"),
        ("2002:c0a8:0101::", "a private-range address"),
        ("0.0.0.0", "the unspecified address"),
        ("100.64.0.1", "not a public address"),
        ("224.0.0.1", "a multicast address"),
    ],
)
def test_webhook_address_rules(address, problem):
    from tallystick.server.webhooks.targets import address_problem

    assert address_problem(ipaddress.ip_address(address)) == problem
