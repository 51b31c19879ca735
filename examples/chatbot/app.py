"""A minimal AI chatbot billed with tallystick: one Chat Credit per answered message.

Run a tallystick server with the catalog of this folder applied, then:

    export TALLYSTICK_API_URL=http://127.0.0.1:8000
    export TALLYSTICK_API_KEY=tsk_...          # tallystick api-keys create --org "Acme AI"
    export OPENAI_API_KEY=...                   # or OPENAI_BASE_URL for an OpenAI-compatible server
    python app.py alice

`tallystick demo` runs this same integration with a local model endpoint and no internet.
"""

from __future__ import annotations

import sys

import openai

from tallystick import autoinstrument, has_credits, initialize_tracing, signal, tracing

CURRENCY_KEY = "chat_credits"
PRODUCT_ID = "chatbot"


def main(customer_id: str) -> None:
    # Once at startup: send traces to tallystick and instrument the openai library.
    initialize_tracing()
    autoinstrument(["openai"])
    client = openai.OpenAI()
    history = [{"role": "system", "content": "You are a concise support assistant."}]

    for question in sys.stdin:
        # Block usage when the customer has no credits left.
        if not has_credits(customer_id, CURRENCY_KEY):
            print("You are out of Chat Credits. Upgrade your plan to keep chatting.")
            break

        history.append({"role": "user", "content": question.strip()})
        # The AI call is traced; the signal sent in the same context takes its cost.
        with tracing(customer_id, external_product_id=PRODUCT_ID):
            completion = client.chat.completions.create(model="gpt-4o-mini", messages=history)
            reply = completion.choices[0].message.content or ""
            # Delivered value: a duration field with its unit, for value receipts.
            signal(
                "chat_message",
                data={"minutes_saved": 4, "minutes_saved_unit": "minutes"},
                enable_cost_tracing=True,
            )
        history.append({"role": "assistant", "content": reply})
        print(reply)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "demo-customer")
