"""ORM models. Importing this package registers every table on `Base.metadata`."""

from tallystick.server.models.base import Base
from tallystick.server.models.catalog import (
    CreditBenefit,
    CreditCurrency,
    Plan,
    PlanAttribute,
    Product,
    ProductAttribute,
)
from tallystick.server.models.checkout import Checkout
from tallystick.server.models.cost import CostAttributionClaim, CostRecord, PriceOverride
from tallystick.server.models.customer import Customer
from tallystick.server.models.event import OutboxEvent
from tallystick.server.models.ledger import (
    CreditAccount,
    CreditGrant,
    CreditHold,
    LedgerEntry,
    PendingConsumption,
)
from tallystick.server.models.order import (
    BillingPeriod,
    CreditAllocation,
    Invoice,
    InvoiceLine,
    Order,
    OrderLine,
    Payment,
    PaymentMethod,
    PaymentSettings,
    TestClock,
    TestClockCustomer,
)
from tallystick.server.models.organization import ApiKey, Organization
from tallystick.server.models.server import ServerSecret
from tallystick.server.models.signal import Signal
from tallystick.server.models.user import CustomerPortal, Operator, OperatorSession
from tallystick.server.models.value import (
    SignalValue,
    SignalValueEvaluation,
    ValueModelVersion,
    ValueReceipt,
    ValueReceiptLine,
)
from tallystick.server.models.webhook import (
    LowBalanceThreshold,
    WebhookDelivery,
    WebhookDeliveryAttempt,
    WebhookEndpoint,
    WebhookSigningSecret,
)

__all__ = [
    "ApiKey",
    "Base",
    "Checkout",
    "CostAttributionClaim",
    "CostRecord",
    "CreditAccount",
    "CreditBenefit",
    "CreditCurrency",
    "CreditGrant",
    "CustomerPortal",
    "CreditHold",
    "Customer",
    "BillingPeriod",
    "CreditAllocation",
    "Invoice",
    "InvoiceLine",
    "LedgerEntry",
    "Order",
    "OrderLine",
    "Operator",
    "OperatorSession",
    "Organization",
    "OutboxEvent",
    "Payment",
    "PaymentMethod",
    "PaymentSettings",
    "ServerSecret",
    "TestClock",
    "TestClockCustomer",
    "PendingConsumption",
    "Plan",
    "PlanAttribute",
    "PriceOverride",
    "Product",
    "ProductAttribute",
    "Signal",
    "SignalValue",
    "SignalValueEvaluation",
    "ValueModelVersion",
    "ValueReceipt",
    "ValueReceiptLine",
    "LowBalanceThreshold",
    "WebhookDelivery",
    "WebhookDeliveryAttempt",
    "WebhookEndpoint",
    "WebhookSigningSecret",
]
