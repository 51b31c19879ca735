"""`tallystick demo`: the whole integration guide on the embedded SQLite store.

It starts the server, applies the chatbot catalog, creates an API key and buys the Pro plan
through the hosted checkout with the test card. Then it runs a chatbot conversation with the real
openai client against a local OpenAI-compatible endpoint, using the SDK for balance checks,
traced AI calls and cost-attributed signals. It ends with a summary read back from the API.
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from tallystick import Client
from tallystick.demo import servers
from tallystick.demo.chatbot import CURRENCY_KEY, PRODUCT_ID, QUESTIONS, ChatBot
from tallystick.demo.checkout_flow import buy_plan
from tallystick.demo.llm_stub import create_llm_app
from tallystick.demo.value import HOURLY_RATE_CENTS, configure_value_model, publish_receipt

log = logging.getLogger(__name__)

CATALOG_FILE = Path(__file__).with_name("chatbot_catalog.yaml")
ORGANIZATION = "Demo Company"
CUSTOMER_ID = "demo-customer"
OPERATOR_EMAIL = "operator@demo.example"
PLAN_ID = "pro"
# Seconds to wait for traced costs to reach the server and attach to their signals.
_COST_WAIT_SECONDS = 20.0


@dataclass
class DemoSummary:
    messages_sent: int
    messages_answered: int
    credits_used: Decimal
    credits_left: Decimal
    ai_cost: Decimal
    revenue: Decimal
    margin: Decimal
    minutes_saved: Decimal
    money_saved_cents: int
    receipt_url: str
    priced_signals: int


def remove_database(path: Path) -> None:
    """Delete the demo's SQLite file and its WAL companions from an earlier run."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def run_demo(
    *, messages: int, port: int, database: Path, console: Console, serve: bool
) -> DemoSummary:
    from tallystick.cli.catalog_apply import plan_changes, read_state
    from tallystick.cli.catalog_file import load_catalog_file
    from tallystick.server.api_keys import create_api_key
    from tallystick.server.app import create_app
    from tallystick.server.dashboard.operators import create_operator, generate_password
    from tallystick.server.db import Store
    from tallystick.server.migrate import upgrade_to_head
    from tallystick.server.settings import Settings

    if not servers.port_is_free(port):
        raise DemoError(f"port {port} is in use; pass --port with a free port")
    folder = database.resolve().parent
    if not folder.is_dir():
        raise DemoError(f"the folder {folder} of --database does not exist; create it or pass another --database")
    if not os.access(folder, os.W_OK):
        raise DemoError(f"the folder {folder} of --database is not writable; pass another --database")

    remove_database(database)
    url = f"sqlite:///{database.resolve()}"
    console.print(f"[bold]1.[/bold] Starting tallystick on {escape(url)}", soft_wrap=True)
    upgrade_to_head(url)
    store = Store.open(url)
    # No secret key here: the server keeps one in the database, so the signed links that the
    # summary prints stay valid when `tallystick serve` reopens this store.
    settings = Settings(database_url=url)
    server = servers.start(create_app(settings, store=store), port)
    root = server.root

    operator_password = generate_password()
    with store.transaction() as session:
        created_key = create_api_key(session, ORGANIZATION, "demo")
        create_operator(
            session, organization_id=created_key.organization_id, email=OPERATOR_EMAIL, password=operator_password
        )
    key = created_key.secret
    api = Client(root, key)

    console.print(
        "[bold]2.[/bold] Applying the chatbot catalog (Chat Credits, ChatBot, three plans) and a value model",
        soft_wrap=True,
    )
    catalog = load_catalog_file(CATALOG_FILE)
    state = read_state(api)
    for change in plan_changes(api, catalog.spec, state):
        if change.apply is not None:
            change.apply()
    configure_value_model(api)
    product = api.get(f"/products/external/{PRODUCT_ID}")
    plan = api.get(f"/plans/external/{PLAN_ID}")

    console.print(f"[bold]3.[/bold] Buying the Pro plan for customer '{CUSTOMER_ID}' through the hosted checkout")
    api.post("/customers/", {"name": "Ada Example", "externalId": CUSTOMER_ID, "email": "ada@example.com"})
    checkout = buy_plan(
        api,
        product_id=product["id"],
        plan_id=plan["id"],
        customer=CUSTOMER_ID,
        success_url=f"{root}/healthz?checkout={{CHECKOUT_ID}}",
    )
    console.print(f"   checkout {checkout['id']} completed, order {checkout.get('orderId')}", soft_wrap=True)

    llm_app, llm_endpoint = create_llm_app()
    llm = servers.start(llm_app, servers.free_port())
    console.print(
        f"[bold]4.[/bold] Chatting: {messages} messages through openai to a local endpoint at {llm.root}",
        soft_wrap=True,
    )
    answered = _chat(api, key, root, llm.root, messages, console)

    started_at = datetime.now(UTC) - timedelta(hours=1)
    summary = _summarize(api, messages, answered, started_at)
    _print_summary(console, summary, root, key, api, f"{OPERATOR_EMAIL} / {operator_password}")
    llm.stop()

    if not serve:
        console.print(
            f"\nThe server has stopped (--no-serve). To browse these pages, run:\n"
            f"  {escape(_cli_command())} serve --port {port} --database-url {escape(url)}",
            soft_wrap=True,
        )
    else:
        console.print(f"\nServing at {root}. Press Ctrl-C to stop.", soft_wrap=True)
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            console.print("Stopping.")
    server.stop()
    store.dispose()
    log.info("demo.finished", extra={"requests_to_llm": llm_endpoint.requests})
    return summary


class DemoError(RuntimeError):
    """The demo cannot run; the message gives the reason and the fix."""


def _chat(api: Client, key: str, root: str, llm_root: str, messages: int, console: Console) -> int:
    import openai

    from tallystick import autoinstrument, initialize_tracing
    from tallystick.tracing import flush

    initialize_tracing(api_key=key, api_url=root)
    autoinstrument(["openai"])
    openai_client = openai.OpenAI(base_url=f"{llm_root}/v1", api_key="local-demo-endpoint", max_retries=0)
    bot = ChatBot(openai_client=openai_client, customer_id=CUSTOMER_ID, api=api)

    answered = 0
    questions = itertools.cycle(QUESTIONS)
    with Progress(TextColumn("   messages"), BarColumn(), MofNCompleteColumn(), console=console) as progress:
        task = progress.add_task("chat", total=messages)
        for _ in range(messages):
            if bot.answer(next(questions)) is None:
                console.print("   The customer ran out of credits: the chatbot would now show an upgrade prompt.")
                break
            answered += 1
            progress.advance(task)
    flush(timeout=10)
    return answered


def _signals_of_customer(api: Client) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    offset = 0
    while True:
        page = api.get("/signals/", externalCustomerId=CUSTOMER_ID, limit=500, offset=offset)
        items.extend(page["data"])
        if not page["pagination"]["hasMore"]:
            return items
        offset += len(page["data"])


def _summarize(api: Client, sent: int, answered: int, started_at: datetime) -> DemoSummary:
    # Spans are exported in the background; wait until every signal has its cost attached.
    deadline = time.monotonic() + _COST_WAIT_SECONDS
    while True:
        signals = _signals_of_customer(api)
        priced = [item for item in signals if (item.get("cost") or {}).get("status") == "priced"]
        if len(priced) >= answered or time.monotonic() > deadline:
            break
        time.sleep(0.25)

    balances = api.get(f"/customers/external/{CUSTOMER_ID}/credits/balances")["data"]
    balance = next(item for item in balances if item["currencyKey"] == CURRENCY_KEY)

    receipt = publish_receipt(api, CUSTOMER_ID, started_at)
    lines = {line["valueTypeSlug"]: line for line in receipt.get("lines", [])}

    def total(field: str) -> Decimal:
        return sum((Decimal(str((item.get(field) or {}).get("amount", "0"))) for item in signals), Decimal(0))

    return DemoSummary(
        messages_sent=sent,
        messages_answered=answered,
        credits_used=sum((Decimal(str(item.get("creditsConsumed") or "0")) for item in signals), Decimal(0)),
        credits_left=Decimal(str(balance.get("availableDecimal", balance["available"]))),
        ai_cost=total("cost"),
        revenue=total("revenue"),
        margin=total("margin"),
        minutes_saved=Decimal(lines["time_saved"]["quantity"]) if "time_saved" in lines else Decimal(0),
        money_saved_cents=int(lines["money_saved"].get("money") or 0) if "money_saved" in lines else 0,
        receipt_url=receipt["publicUrl"],
        priced_signals=len(priced),
    )


def _usd(amount: Decimal) -> str:
    return f"${amount.quantize(Decimal('0.000001'))}"


def _print_summary(console: Console, summary: DemoSummary, root: str, key: str, api: Client, login: str) -> None:
    hours, minutes = divmod(int(summary.minutes_saved), 60)
    saved = f"{hours} h {minutes} min" if hours else f"{minutes} min"
    console.print("\n[bold]Summary[/bold]")
    rows = [
        ("Messages answered", f"{summary.messages_answered} of {summary.messages_sent}"),
        ("Credits used", f"{summary.credits_used.normalize():f} chat_credits"),
        ("Credits left", f"{summary.credits_left.normalize():f} chat_credits"),
        ("AI cost", _usd(summary.ai_cost)),
        ("Revenue of credits used", _usd(summary.revenue)),
        ("Margin", _usd(summary.margin)),
        ("Value delivered", f"{saved} of support time saved"),
        ("Money saved", f"${Decimal(summary.money_saved_cents) / 100:.2f} at ${HOURLY_RATE_CENTS // 100}/hour"),
        ("Signals with priced cost", str(summary.priced_signals)),
    ]
    for label, value in rows:
        console.print(f"  {label:<26}{value}")
    console.print(f"\n  API:        {root}/api/v2", soft_wrap=True)
    console.print(f"  API key:    {key}", soft_wrap=True)
    console.print(f"  API docs:   {root}/docs", soft_wrap=True)
    console.print(f"  Dashboard:  {root}/dashboard", soft_wrap=True)
    console.print(f"  Login:      {login}", soft_wrap=True)
    console.print(f"  Receipt:    {summary.receipt_url}", soft_wrap=True)
    try:
        portal = api.post("/customer-portals/", {"externalCustomerId": CUSTOMER_ID})
        console.print(f"  Portal:     {portal.get('url')}", soft_wrap=True)
    except Exception as error:  # noqa: BLE001 - the summary is still useful without a portal link
        log.warning("demo.portal_unavailable", extra={"error": str(error)})


def _cli_command() -> str:
    """Return how to run this installation's `tallystick` from the current shell.

    `make demo` installs it in .venv/bin, which is seldom on PATH, so the hint names the script
    by its path unless PATH finds this same script.
    """
    script = Path(sys.executable).with_name("tallystick")
    if not script.exists():
        return "tallystick"
    found = shutil.which("tallystick")
    if found is not None and Path(found).resolve() == script.resolve():
        return "tallystick"
    try:
        return str(script.relative_to(Path.cwd()))
    except ValueError:
        return str(script)
