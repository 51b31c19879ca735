"""Malformed and forged x-webhook-signature headers all raise WebhookSignatureError."""

from __future__ import annotations

import pytest

from tallystick.webhooks import WebhookSignatureError, sign_webhook_payload, verify_webhook_signature

SECRET = "whsec_test_secret"
BODY = b'{"id":"evt_1","event":"billing-invoice-paid","isTest":false,"data":{}}'
SENT_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
SENT_SECONDS = SENT_MS / 1000


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (f"t={SENT_MS},s=ü", "invalid s part"),
        (f"t={SENT_MS},s=abc=,s=ü", "invalid s part"),
        ("t=²,s=abc=", "invalid t part"),
        ("t=١٧٦٧٢٢٥٦٠٠٠٠٠,s=abc=", "invalid t part"),
        ("t=" + "9" * 30 + ",s=abc=", "invalid t part"),
        ("t=" + "9" * 5000 + ",s=abc=", "invalid t part"),
        ("t=-5,s=abc=", "invalid t part"),
    ],
    ids=[
        "non-ascii s",
        "second s non-ascii",
        "superscript t",
        "arabic digits t",
        "30 digit t",
        "5000 digit t",
        "negative t",
    ],
)
def test_verify_malformed_header_raises(header, message):
    with pytest.raises(WebhookSignatureError, match=message):
        verify_webhook_signature(BODY, header, SECRET, now=SENT_SECONDS)


def test_verify_non_ascii_signature_in_window():
    header = f"t={SENT_MS},s=\u00fc\u00fc\u00fc"

    with pytest.raises(WebhookSignatureError):
        verify_webhook_signature(BODY, header, SECRET, now=SENT_SECONDS + 1)


def test_verify_old_timestamp_message_readable():
    header = sign_webhook_payload(BODY, SECRET, timestamp_ms=1)

    with pytest.raises(WebhookSignatureError) as raised:
        verify_webhook_signature(BODY, header, SECRET, now=SENT_SECONDS)

    message = str(raised.value)
    assert message == "signature timestamp is 1767225600 s in the past, more than the 300 s allowed"


def test_verify_future_timestamp_message_readable():
    header = sign_webhook_payload(BODY, SECRET, timestamp_ms=9_999_999_999_999)

    with pytest.raises(WebhookSignatureError) as raised:
        verify_webhook_signature(BODY, header, SECRET, now=SENT_SECONDS)

    message = str(raised.value)
    assert "s in the future, more than the 300 s allowed" in message
    assert "-" not in message


def test_verify_valid_among_several_signatures():
    valid = sign_webhook_payload(BODY, SECRET, SENT_MS)
    header = valid.replace(",s=", ",s=AAAA,s=")

    verify_webhook_signature(BODY, header, SECRET, now=SENT_SECONDS)


def test_verify_header_given_as_bytes():
    header = sign_webhook_payload(BODY, SECRET, SENT_MS)

    verify_webhook_signature(BODY, header.encode("ascii"), SECRET, now=SENT_SECONDS)
    with pytest.raises(WebhookSignatureError, match="not ASCII"):
        verify_webhook_signature(BODY, "t=1,s=ü".encode(), SECRET, now=SENT_SECONDS)
