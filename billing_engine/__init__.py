"""billing_engine: a self-hosted recurring-billing core.

Public surface (everything else is internal):

- services by domain noun: ``plans``, ``customers``, ``payment_methods``, ``consents``,
  ``subscriptions``, ``invoices``, ``payments``, ``dunning``, ``notifications``
- the lifecycle: ``first_charge`` (subscribe, charged at once), ``plan_changes`` (+ the pure
  ``proration``), ``reactivations``, ``edits`` (+ ``metadata``), ``guarantees``
- the run-cycle: :func:`run_cycle`, :class:`CycleSummary`
- values: :class:`Money`, :class:`Interval`
- errors: :class:`BillingError` and subclasses in ``billing_engine.errors``
- gateways: ``billing_engine.gateway`` (``PaymentGateway``, ``FakeGateway``, ``StripeGateway``)
"""

from billing_engine.errors import (
    BillingError,
    ConfigurationError,
    Conflict,
    ConsentRequired,
    InvalidTransition,
    NotFound,
    ValidationError,
)
from billing_engine.money import Money
from billing_engine.periods import Interval

__all__ = [
    "BillingError",
    "ConfigurationError",
    "Conflict",
    "ConsentRequired",
    "Interval",
    "InvalidTransition",
    "Money",
    "NotFound",
    "ValidationError",
    "run_cycle",
    "CycleSummary",
]


def __getattr__(name: str) -> object:  # lazy: keep `import billing_engine` light
    if name in ("run_cycle", "CycleSummary"):
        from billing_engine import cycle

        return getattr(cycle, name)
    raise AttributeError(name)
