"""A local OpenAI-compatible chat endpoint for the demo, with realistic token usage.

It answers `POST /v1/chat/completions` the way the OpenAI API does, without a model: the reply
text comes from a fixed list, and the usage counts follow OpenAI's accounting closely enough for
cost tracking to be meaningful. Prompt tokens are estimated at four characters per token plus a
few tokens of overhead per message, and prompts of 1,024 tokens or more report the previous
turn's prompt as cached in 128-token steps, as OpenAI's prompt caching does.
"""

from __future__ import annotations

import itertools
import time
import uuid
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

# The model name the endpoint reports, as OpenAI reports a dated snapshot for an alias.
RESPONSE_MODEL = "gpt-4o-mini-2024-07-18"
_TOKENS_PER_MESSAGE = 4
_CHARS_PER_TOKEN = 4
# OpenAI caches prompt prefixes of at least 1,024 tokens, in steps of 128 tokens.
_CACHE_MINIMUM_TOKENS = 1024
_CACHE_STEP_TOKENS = 128

REPLIES = [
    "You can export your invoices from Settings > Billing > Invoices; pick a date range and "
    "choose CSV or PDF. Each export includes line items and tax.",
    "To add a teammate, open Settings > Members, click Invite and enter their email. They get "
    "the Viewer role until you change it.",
    "Your plan renews on the same day each month. You can switch plans at any time and the "
    "change applies from the next billing period.",
    "Webhooks are retried with exponential backoff for up to three days, and each attempt is "
    "listed under Developers > Webhooks with its status code.",
    "Yes, the API supports idempotency keys: send the same key again and the request is counted "
    "once, even after a timeout.",
    "The usage chart shows one bar per day in your account's time zone; hover a bar for the "
    "exact count.",
]


def estimate_prompt_tokens(messages: list[dict[str, Any]]) -> int:
    total = 0
    for message in messages:
        content = message.get("content") or ""
        if isinstance(content, list):
            content = " ".join(part.get("text", "") for part in content if isinstance(part, dict))
        total += _TOKENS_PER_MESSAGE + max(1, len(str(content)) // _CHARS_PER_TOKEN)
    return total


def cached_tokens(prompt_tokens: int, previous_prompt_tokens: int) -> int:
    """Return the tokens of the prompt's prefix that an earlier request left in the cache."""
    if prompt_tokens < _CACHE_MINIMUM_TOKENS or previous_prompt_tokens < _CACHE_MINIMUM_TOKENS:
        return 0
    prefix = min(previous_prompt_tokens, prompt_tokens)
    return (prefix // _CACHE_STEP_TOKENS) * _CACHE_STEP_TOKENS


class ChatEndpoint:
    """The endpoint's state: which reply comes next and the last prompt size per conversation."""

    def __init__(self) -> None:
        self._replies = itertools.cycle(REPLIES)
        self._previous_prompt: dict[str, int] = {}
        self.requests = 0

    async def chat_completions(self, request: Request) -> JSONResponse:
        body = await request.json()
        messages = body.get("messages") or []
        if not messages:
            return JSONResponse(
                {"error": {"message": "messages must not be empty", "type": "invalid_request_error"}},
                status_code=400,
            )
        self.requests += 1

        # The first message (the system prompt) names the conversation, for the cache estimate.
        conversation = str(messages[0].get("content", ""))[:64]
        prompt_tokens = estimate_prompt_tokens(messages)
        cached = cached_tokens(prompt_tokens, self._previous_prompt.get(conversation, 0))
        self._previous_prompt[conversation] = prompt_tokens

        reply = next(self._replies)
        completion_tokens = max(1, len(reply) // _CHARS_PER_TOKEN)
        return JSONResponse(
            {
                "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": RESPONSE_MODEL,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": reply, "refusal": None},
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                    "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
                    "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
                },
                "service_tier": "default",
                "system_fingerprint": "fp_demo",
            }
        )


def create_llm_app() -> tuple[Starlette, ChatEndpoint]:
    endpoint = ChatEndpoint()
    app = Starlette(routes=[Route("/v1/chat/completions", endpoint.chat_completions, methods=["POST"])])
    return app, endpoint
