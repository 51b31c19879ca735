"""Opaque display ids with a type prefix, such as ``cus_01hz...``."""

from __future__ import annotations

import base64
import os
import threading

# 15 random bytes are 120 bits, which base32 spells in 24 characters without padding.
_RANDOM_BYTES = 15
# Random bytes read from the operating system at once: enough for 256 ids. A batch of 1,000
# signals makes about 2,000 ids, and one read and one encoding per id were about a tenth of
# its CPU time.
_BUFFER_BYTES = _RANDOM_BYTES * 256
# Base32 spells each 5 bytes as 8 characters, so the encoding of the whole buffer, cut every
# 24 characters, gives the same ids as encoding each 15 bytes alone.
_ID_CHARACTERS = _RANDOM_BYTES // 5 * 8

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


class _RandomBuffer(threading.local):
    """Id bodies from os.urandom, encoded a buffer at a time. Each thread has its own buffer."""

    def __init__(self) -> None:
        self.text = ""
        self.offset = 0

    def take(self) -> str:
        if self.offset + _ID_CHARACTERS > len(self.text):
            self.text = base64.b32encode(os.urandom(_BUFFER_BYTES)).decode("ascii").lower()
            self.offset = 0
        start = self.offset
        self.offset += _ID_CHARACTERS
        return self.text[start : self.offset]


_random = _RandomBuffer()


def _forget_buffer() -> None:
    # A forked child must not hand out the bytes its parent still holds: both would make the
    # same ids.
    global _random
    _random = _RandomBuffer()


os.register_at_fork(after_in_child=_forget_buffer)


def new_id(kind: str) -> str:
    """Return a new random id for an object of `kind`, one of PREFIXES' keys."""
    prefix = PREFIXES[kind]
    return f"{prefix}_{_random.take()}"
