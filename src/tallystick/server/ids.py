"""Opaque display ids with a type prefix, such as ``cus_01hz...``."""

from __future__ import annotations

import base64
import secrets

# 15 random bytes are 120 bits, which base32 spells in 24 characters without padding.
_RANDOM_BYTES = 15

PREFIXES = {
    "organization": "org",
    "api_key": "key",
    "customer": "cus",
    "credit_currency": "ccur",
    "product": "prod",
    "product_attribute": "pattr",
    "plan": "plan",
    "plan_attribute": "plattr",
    "credit_benefit": "cben",
    "credit_grant": "cgrant",
    "ledger_entry": "ctx",
    "signal": "sig",
    "hold": "hold",
    "pending_consumption": "pcon",
    "outbox_event": "evt",
    "checkout": "chk",
    "order": "ord",
    "order_line": "ordl",
    "invoice": "inv",
    "invoice_line": "invl",
    "payment": "pay",
    "payment_method": "pm",
    "operator": "op",
    "operator_session": "opses",
    "customer_portal": "cpor",
    "billing_period": "bper",
    "credit_allocation": "calloc",
    "test_clock": "clock",
    "webhook_endpoint": "wh",
    "webhook_delivery": "whdl",
    "webhook_attempt": "what",
    "low_balance_threshold": "lowbal",
    "cost_record": "cost",
    "price_override": "cpo",
    "value_model_version": "vmod",
    "value_receipt": "vrec",
}


def new_id(kind: str) -> str:
    """Return a new random id for an object of `kind`, one of PREFIXES' keys."""
    prefix = PREFIXES[kind]
    body = base64.b32encode(secrets.token_bytes(_RANDOM_BYTES)).decode("ascii").lower()
    return f"{prefix}_{body}"
