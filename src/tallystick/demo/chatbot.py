"""The integration guide's chatbot: check credits, make a traced AI call, send the signal.

`examples/chatbot/app.py` is the same integration as a standalone app to copy.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from tallystick import Client, has_credits, signal, tracing

CURRENCY_KEY = "chat_credits"
PRODUCT_ID = "chatbot"
MODEL = "gpt-4o-mini"
# Minutes of a support agent's time that one answered message saves: the delivered-value
# figure the demo reports (a value type multiplies it by an hourly rate for money saved).
MINUTES_SAVED_PER_ANSWER = 4

# Long enough (over 1,024 tokens) that the provider caches it between turns, as real support
# bots with product documentation in the system prompt do.
SYSTEM_PROMPT = (
    "You are the support assistant of Acme Cloud, a project management product. Answer in two "
    "or three sentences, point to the exact menu path in the app, and never invent features. "
) + " ".join(
    f"Documentation section {number}: Acme Cloud organizes work into workspaces, projects and "
    f"tasks. Billing settings live under Settings > Billing; members under Settings > Members; "
    f"API keys under Developers > API keys; webhooks under Developers > Webhooks. Plans renew "
    f"monthly on the signup day, invoices are emailed to the billing contact, and exports are "
    f"available as CSV or PDF."
    for number in range(1, 15)
)

QUESTIONS = [
    "How do I export last quarter's invoices?",
    "Can I invite a teammate without giving them admin rights?",
    "When does my plan renew, and can I switch to a bigger one mid-month?",
    "What happens if our webhook endpoint is down for an hour?",
    "Do your APIs support idempotency keys?",
    "Why does the usage chart show a different day than my server logs?",
]


@dataclass
class ChatBot:
    """One customer's conversation, billed one Chat Credit per answered message."""

    openai_client: Any
    customer_id: str
    api: Client
    conversation_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    history: list[dict[str, str]] = field(default_factory=lambda: [{"role": "system", "content": SYSTEM_PROMPT}])

    def answer(self, question: str) -> str | None:
        """Return the assistant's reply, or None when the customer has no credits left."""
        # Step 6 of the guide: check the balance before doing any work.
        if not has_credits(self.customer_id, CURRENCY_KEY, client=self.api):
            return None

        self.history.append({"role": "user", "content": question})
        # Steps 3 and 4: the AI call is traced, and the signal sent in the same context takes
        # its cost, so the dashboard shows this message's margin.
        with tracing(self.customer_id, external_product_id=PRODUCT_ID):
            completion = self.openai_client.chat.completions.create(model=MODEL, messages=self.history)
            reply = completion.choices[0].message.content or ""
            signal(
                "chat_message",
                data={
                    "conversation_id": self.conversation_id,
                    "minutes_saved": MINUTES_SAVED_PER_ANSWER,
                    "minutes_saved_unit": "minutes",
                },
                enable_cost_tracing=True,
            )
        self.history.append({"role": "assistant", "content": reply})
        return reply
