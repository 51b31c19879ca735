"""Opaque display ids with a type prefix, such as ``sig_3od4prgsuq3vincb5jyqaj4h``.

An id's body is 24 characters: 9 that spell the creation time in milliseconds, then 15
random ones (75 bits). Ids made later sort after earlier ones. The primary key and id indexes
of the busiest tables therefore take new entries at their right edge, whose pages stay in
memory, instead of on random pages of an index that grows with history. The order is only as
good as the machines' clocks, and nothing relies on it for correctness.
"""

from __future__ import annotations

import base64
import os
import threading
import time

# The base32 characters in ASCII order, so that a fixed-width time sorts as its value.
_SORTED_ALPHABET = "234567abcdefghijklmnopqrstuvwxyz"
# 9 characters of 5 bits spell 45 bits of milliseconds: about 1,100 years from 1970.
_TIME_CHARACTERS = 9
_RANDOM_CHARACTERS = 15
# Random bytes read from the operating system at once: 3,840 characters, enough for 256 ids.
# A batch of 1,000 signals makes about 2,000 ids, and one read and one encoding per id were
# about a tenth of its CPU time.
_BUFFER_BYTES = 2_400

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
    """Random id characters from os.urandom, encoded a buffer at a time, one buffer per thread.

    It also caches the spelling of the last millisecond requested, which all ids made within
    that millisecond share.
    """

    def __init__(self) -> None:
        self.text = ""
        self.offset = 0
        self.millisecond = -1
        self.time_text = ""

    def take(self) -> str:
        if self.offset + _RANDOM_CHARACTERS > len(self.text):
            self.text = base64.b32encode(os.urandom(_BUFFER_BYTES)).decode("ascii").lower()
            self.offset = 0
        start = self.offset
        self.offset += _RANDOM_CHARACTERS
        return self.text[start : self.offset]

    def time_of(self, millisecond: int) -> str:
        if millisecond != self.millisecond:
            self.millisecond = millisecond
            self.time_text = _spell_time(millisecond)
        return self.time_text


def _spell_time(millisecond: int) -> str:
    characters = []
    for _ in range(_TIME_CHARACTERS):
        characters.append(_SORTED_ALPHABET[millisecond & 31])
        millisecond >>= 5
    return "".join(reversed(characters))


_random = _RandomBuffer()


def _forget_buffer() -> None:
    # A forked child must not hand out the bytes its parent still holds: both would make the
    # same ids.
    global _random
    _random = _RandomBuffer()


os.register_at_fork(after_in_child=_forget_buffer)


def new_id(kind: str) -> str:
    """Return a new id for an object of `kind`, one of PREFIXES' keys: its time, then random."""
    prefix = PREFIXES[kind]
    buffer = _random
    return f"{prefix}_{buffer.time_of(time.time_ns() // 1_000_000)}{buffer.take()}"
