"""The one-statement balance read behind `GET .../credits/balances`."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from sqlalchemy import event, update

from tallystick.server import clock
from tallystick.server.ledger import balance_read, service
from tallystick.server.models import CreditGrant, CreditHold
from tests.ledger_factories import Account, consume, grant
from tests.test_ledger_api import make_currency, make_customer, post_grant


def _hold(store, account: Account, amount: str) -> str:  # type: ignore[no-untyped-def]
    with store.transaction() as session:
        result = service.place_hold(session, **account.keys, amount=Decimal(amount))
    assert result.allowed
    assert result.hold is not None
    return result.hold.id


def _seed_two_currencies(store, tenant) -> tuple[str, dict[str, str]]:  # type: ignore[no-untyped-def]
    """Give a customer every kind of row a balance counts or skips, in two currencies.

    Chat Credits: 10 granted with 4 used and 2 held, a grant that starts tomorrow, a grant
    past its expiry that no write has swept, and a hold past its expiry. Agent Credits: 1
    granted and used, with 2 credits of pending consumption. The currency created first has
    the name that sorts last, so the read's order by name shows.
    """
    customer_id = make_customer(tenant, "reader-1")
    currencies = {
        "chat": make_currency(tenant, key="chat_credits", name="Chat Credits"),
        "agent": make_currency(tenant, key="agent_credits", name="Agent Credits"),
    }
    now = clock.now()
    chat = Account(tenant.organization_id, customer_id, currencies["chat"])
    agent = Account(tenant.organization_id, customer_id, currencies["agent"])
    grant(store, chat, "10", expires_at=now + timedelta(days=30))
    grant(store, chat, "7", starts_at=now + timedelta(days=1))
    consume(store, chat, "4")
    lapsed = grant(store, chat, "5", expires_at=now + timedelta(days=2))
    _hold(store, chat, "2")
    lapsed_hold = _hold(store, chat, "1")
    grant(store, agent, "1")
    consume(store, agent, "3")
    with store.transaction() as session:
        session.execute(update(CreditGrant).where(CreditGrant.id == lapsed.id).values(expires_at=now - timedelta(minutes=1)))
        session.execute(update(CreditHold).where(CreditHold.id == lapsed_hold).values(expires_at=now - timedelta(minutes=1)))
    return customer_id, currencies


def test_balances_count_only_active_rows(store, tenant):
    customer_id, currencies = _seed_two_currencies(store, tenant)

    response = tenant.http.get("/customers/external/reader-1/credits/balances")

    assert response.status_code == 200, response.text
    agent, chat = response.json()["data"]
    assert agent["creditsCurrencyId"] == currencies["agent"]
    assert agent["availableDecimal"] == "0"
    assert agent["usedDecimal"] == "1"
    assert agent["pendingDecimal"] == "2"
    assert chat["creditsCurrencyId"] == currencies["chat"]
    assert chat["currencyKey"] == "chat_credits"
    assert chat["availableDecimal"] == "4"
    assert chat["usedDecimal"] == "4"
    assert chat["totalDecimal"] == "10"
    assert chat["heldDecimal"] == "2"
    assert [grant["totalDecimal"] for grant in chat["grants"]] == ["10"]
    assert chat["grants"][0]["availableDecimal"] == "4"


def test_balances_match_per_currency_queries(store, tenant):
    customer_id, _ = _seed_two_currencies(store, tenant)

    by_id = tenant.http.get(f"/customers/{customer_id}/credits/balances")
    by_external_id = tenant.http.get("/customers/external/reader-1/credits/balances")

    assert by_id.status_code == 200, by_id.text
    assert by_id.json() == by_external_id.json()
    with store.read_sessions() as session:
        expected = service.customer_balances(session, tenant.organization_id, customer_id, clock.now())
    read = by_id.json()["data"]
    assert [balance["creditsCurrencyId"] for balance in read] == [currency.id for currency, _ in expected]
    for balance, (_, view) in zip(read, expected, strict=True):
        assert Decimal(balance["availableDecimal"]) == view.available
        assert Decimal(balance["heldDecimal"]) == view.held
        assert Decimal(balance["pendingDecimal"]) == view.pending
        assert Decimal(balance["totalDecimal"]) == view.total
        assert [grant["id"] for grant in balance["grants"]] == [item.grant.id for item in view.grants]
        assert [Decimal(grant["availableDecimal"]) for grant in balance["grants"]] == [
            item.available for item in view.grants
        ]


def test_balances_of_deleted_customer_not_found(tenant):
    customer_id = make_customer(tenant, "gone-1")
    make_currency(tenant)
    assert post_grant(tenant, "external/gone-1", {"creditCurrencyKey": "chat_credits", "amount": 5}).status_code == 201
    assert tenant.http.delete(f"/customers/{customer_id}").status_code in (200, 204)

    by_external_id = tenant.http.get("/customers/external/gone-1/credits/balances")
    by_id = tenant.http.get(f"/customers/{customer_id}/credits/balances")

    assert by_external_id.status_code == 404
    assert "gone-1" in by_external_id.json()["error"]
    assert by_id.status_code == 404
    assert customer_id in by_id.json()["error"]


def test_balance_read_is_one_statement(store, tenant):
    customer_id, currencies = _seed_two_currencies(store, tenant)
    statements: list[str] = []

    def record(connection, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if connection is session_connection:
            statements.append(statement)

    with store.statement_reads() as session:
        # Checked out first: on SQLite this sends the read's BEGIN, which is not counted.
        session_connection = session.connection()
        engines = {store.engine, store.read_engine}
        for engine in engines:
            event.listen(engine, "before_cursor_execute", record)
        try:
            found = balance_read.load_customer_credits(
                session, tenant.organization_id, clock.now(), external_id="reader-1"
            )
        finally:
            for engine in engines:
                event.remove(engine, "before_cursor_execute", record)
        if not store.is_sqlite:
            # Autocommit: no BEGIN was sent, so no transaction is open after the read.
            status = session_connection.connection.dbapi_connection.info.transaction_status
            assert status.name == "IDLE"

    assert len(statements) == 1
    assert found is not None
    assert found.customer_id == customer_id
    assert found.clock_time is None
    assert found.renewal_due is False
    assert [account.currency.id for account in found.accounts] == [currencies["agent"], currencies["chat"]]
    agent, chat = found.accounts
    assert agent.pending == [Decimal(2)]
    assert sorted(grant.amount for grant in chat.grants) == [Decimal(5), Decimal(7), Decimal(10)]
    assert sorted(reserved for reserved, _ in chat.holds) == [Decimal(1), Decimal(2)]


def test_balance_read_of_unknown_customer(store, tenant):
    with store.statement_reads() as session:
        found = balance_read.load_customer_credits(session, tenant.organization_id, clock.now(), external_id="nobody")

    assert found is None
