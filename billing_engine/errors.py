"""One error hierarchy for the engine.

Each error names the condition, carries the field (if any) and a readable message.
api/ maps them to HTTP status codes in one handler; cli/ maps them to one line on
stderr and a non-zero exit code. The class docstring is the default message.
"""

from __future__ import annotations


class BillingError(Exception):
    """Billing operation failed."""

    http_status: int = 400
    exit_code: int = 1
    code: str = "billing_error"

    def __init__(self, message: str | None = None, *, field: str | None = None, **data: object) -> None:
        self.message = message or (self.__doc__ or self.code).strip().splitlines()[0]
        self.field = field
        self.data = data
        super().__init__(self.message)

    def __str__(self) -> str:
        if self.field and not self.message.startswith(self.field):
            return f"{self.field}: {self.message}"
        return self.message


class ValidationError(BillingError):
    """Invalid input."""

    http_status = 422
    exit_code = 2
    code = "validation_error"


class NotFound(BillingError):
    """Not found."""

    http_status = 404
    exit_code = 3
    code = "not_found"


class Conflict(BillingError):
    """The request conflicts with the current state."""

    http_status = 409
    exit_code = 4
    code = "conflict"


class ConsentRequired(Conflict):
    """No recorded consent for off-session charges on this payment method."""

    code = "consent_required"


class InvalidTransition(Conflict):
    """That change is not allowed in the current status."""

    code = "invalid_transition"


class PaymentDeclined(BillingError):
    """The card was declined."""

    http_status = 402
    exit_code = 5
    code = "payment_declined"


class PaymentRequiresAction(PaymentDeclined):
    """The card needs the customer's authentication (3-D Secure)."""

    code = "payment_requires_action"


class ConfigurationError(BillingError):
    """Invalid configuration."""

    http_status = 500
    exit_code = 78  # EX_CONFIG
    code = "configuration_error"


class GatewayUnavailable(BillingError):
    """The payment gateway could not be reached."""

    http_status = 503
    exit_code = 75  # EX_TEMPFAIL
    code = "gateway_unavailable"


class DatabaseUnavailable(BillingError):
    """The database could not be reached or refused the work; nothing was lost."""

    http_status = 503
    exit_code = 70  # EX_SOFTWARE, as the README lists for database errors
    code = "database_unavailable"
