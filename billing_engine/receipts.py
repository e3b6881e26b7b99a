"""Receipts of paid invoices: the hosted page and the PDF show the same facts.

Seller (``BILLING_SELLER_NAME`` / ``_ADDRESS`` / ``_TAX_ID``), the gapless invoice
number (:mod:`billing_engine.invoice_numbers`), the customer, what was bought and for
which period, the amount paid (and refunded), when, and with which card (brand/last4
of the payment that settled it). Only a paid invoice has a receipt.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlmodel import Session, col, select

from billing_engine import i18n
from billing_engine.errors import NotFound
from billing_engine.models import (
    AttemptStatus,
    Customer,
    Invoice,
    InvoiceStatus,
    PaymentAttempt,
    PaymentMethod,
    Plan,
)
from billing_engine.settings import Settings

TEMPLATES = Path(__file__).parent / "templates" / "receipt"
_env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=select_autoescape(["html"]))


@dataclass(frozen=True, kw_only=True)
class Receipt:
    invoice_id: str
    number: str
    seller_name: str
    seller_address: list[str]
    seller_tax_id: str
    customer_name: str
    customer_email: str
    description: str
    period: str
    amount: str
    refunded: str  # "" when nothing was refunded
    paid_on: str
    card: str  # "Visa ending 4242" or ""
    subscription_id: str


def address_lines(text: str) -> list[str]:
    return [p.strip() for p in text.replace(" | ", "\n").splitlines() if p.strip()]


def for_invoice(session: Session, invoice_id: str, *, customer_id: str, settings: Settings,
                tr: i18n.Translator | None = None) -> Receipt:
    """The receipt of ``invoice_id``, which must be a paid invoice of ``customer_id``; its
    period, dates, amounts and card in ``tr``'s language (the hosted page and the PDF: the
    customer's), English when not given."""
    tr = tr or i18n.translator()
    inv = session.get(Invoice, invoice_id)
    if inv is None or inv.customer_id != customer_id or inv.status != InvoiceStatus.PAID or not inv.number:
        raise NotFound("no receipt for this invoice on this account", field="invoice")
    customer = session.get(Customer, inv.customer_id)
    plan = session.get(Plan, inv.plan_id)
    assert customer is not None and plan is not None
    paid = session.exec(select(PaymentAttempt).where(
        PaymentAttempt.invoice_id == inv.id, PaymentAttempt.status == AttemptStatus.SUCCEEDED,
    ).order_by(col(PaymentAttempt.completed_at))).first()
    pm = session.get(PaymentMethod, paid.payment_method_id) if paid and paid.payment_method_id else None
    return Receipt(
        invoice_id=inv.id, number=inv.number, seller_name=settings.seller_name or settings.company_name,
        seller_address=address_lines(settings.seller_address or settings.company_address),
        seller_tax_id=settings.seller_tax_id or settings.company_tax_id,
        customer_name=customer.name, customer_email=customer.email, description=plan.name,
        period=tr.gettext("%(start)s to %(end)s", start=tr.date(inv.period_start), end=tr.date(inv.period_end)),
        amount=tr.money(inv.amount_paid_minor or inv.amount_minor, inv.currency),
        refunded=tr.money(inv.amount_refunded_minor, inv.currency) if inv.amount_refunded_minor else "",
        paid_on=tr.date(inv.paid_at),
        card=tr.gettext("%(brand)s ending %(last4)s", brand=pm.brand.title(), last4=pm.last4)
        if pm is not None and pm.last4 else "",
        subscription_id=inv.subscription_id,
    )


def pdf_filename(receipt: Receipt) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in receipt.number)
    return f"receipt-{safe}.pdf"


def render_html(receipt: Receipt, tr: i18n.Translator | None = None) -> str:
    """The receipt as a stand-alone HTML document (the PDF's source), its labels in ``tr``'s
    language (English when not given): pass the translator :func:`for_invoice` wrote the
    receipt's dates and amounts with."""
    tr = tr or i18n.translator()
    return _env.get_template("receipt_pdf.html").render(r=receipt, _=tr.gettext, lang=tr.tag, dir=tr.dir)


def render_pdf(receipt: Receipt, tr: i18n.Translator | None = None) -> bytes:
    """The receipt as a PDF (weasyprint; no network: the document has no external resources)."""
    from weasyprint import HTML

    def no_fetch(url: str, *args: object, **kwargs: object) -> dict[str, object]:
        raise ValueError(f"receipts load no external resources ({url})")

    pdf = HTML(string=render_html(receipt, tr), url_fetcher=no_fetch).write_pdf()
    assert pdf is not None
    return bytes(pdf)
