"""Money: an integer count of minor units plus an ISO-4217 currency. Never a float.

``Money`` is the frozen value type; amounts are parsed strictly from major-unit decimal
strings ("17.00") and formatted back with exactly the currency's exponent. ``Decimal``
(or ``Fraction``) appears only for ratios (proration, MRR normalisation), and every
ratio goes through the one rounding function, :func:`round_half_even`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction

from billing_engine.errors import ValidationError

# Minor-unit exponents of the active ISO-4217 currencies (the "E" column of the
# standard), excluding funds/metals without minor units (XAU, XDR, XXX ...).
# Withdrawn codes (HRK, CUC, ...) are left out; ANG stays until XCG fully replaces it.
_TWO_DECIMALS = """
    AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BOV BRL BSD BTN
    BWP BYN BZD CAD CDF CHE CHF CHW CNY COP COU CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB
    EUR FJD FKP GBP GEL GHS GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS
    KHR KPW KYD KZT LAK LBP LKR LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN
    MXV MYR MZN NAD NGN NIO NOK NPR NZD PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD
    SCR SDG SEK SGD SHP SLE SLL SOS SRD SSP STN SVC SYP SZL THB TJS TMT TOP TRY TTD TWD
    TZS UAH USD USN UYU UZS VED VES WST XCD XCG YER ZAR ZMW ZWG
"""
_ZERO_DECIMALS = "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF"
_THREE_DECIMALS = "BHD IQD JOD KWD LYD OMR TND"
_FOUR_DECIMALS = "CLF UYW"

CURRENCY_EXPONENTS: dict[str, int] = {
    **{code: 2 for code in _TWO_DECIMALS.split()},
    **{code: 0 for code in _ZERO_DECIMALS.split()},
    **{code: 3 for code in _THREE_DECIMALS.split()},
    **{code: 4 for code in _FOUR_DECIMALS.split()},
}

# Largest magnitude a parsed amount may have: what a signed 64-bit column holds.
MAX_MINOR = 2**63 - 1

# Plain decimal: optional minus, ASCII digits, optional "." and ASCII digits. Nothing else.
_DECIMAL_RE = re.compile(r"(-?)([0-9]+)(?:\.([0-9]+))?")


def normalize_currency(code: str) -> str:
    """Return the upper-cased ISO-4217 code, or raise ValidationError(field="currency")."""
    if not isinstance(code, str):
        raise ValidationError(
            f"currency must be a 3-letter ISO-4217 code such as USD, got {type(code).__name__}",
            field="currency",
        )
    norm = code.strip().upper()
    if norm not in CURRENCY_EXPONENTS:
        raise ValidationError(
            f"unknown currency {norm!r} (expected an ISO-4217 code such as USD)",
            field="currency",
        )
    return norm


def exponent(currency: str) -> int:
    """Number of minor-unit decimals of ``currency`` (JPY 0, USD 2, KWD 3)."""
    return CURRENCY_EXPONENTS[normalize_currency(currency)]


def round_half_even(value: Decimal | Fraction | int) -> int:
    """Round an exact ratio to an integer, ties to even. The one rounding rule for money."""
    if isinstance(value, bool) or not isinstance(value, Decimal | Fraction | int):
        raise TypeError(f"round_half_even takes Decimal, Fraction or int, not {type(value).__name__}")
    if isinstance(value, int):
        return value
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"cannot round {value} to an amount")
        return int(value.to_integral_value(rounding=ROUND_HALF_EVEN))
    return _round_fraction(value.numerator, value.denominator)


def _round_fraction(numerator: int, denominator: int) -> int:
    """Exact half-even rounding of numerator/denominator (denominator > 0)."""
    q, r = divmod(numerator, denominator)  # floor division: 0 <= r < denominator
    twice = 2 * r
    if twice > denominator or (twice == denominator and q % 2 == 1):
        return q + 1
    return q


def format_minor(amount_minor: int, currency: str) -> str:
    """Major-unit string with exactly the currency's decimals: 1700 USD -> "17.00"."""
    return Money(amount_minor, currency).to_major_str()


@dataclass(frozen=True, slots=True)
class Money:
    """An amount of minor units in one currency."""

    amount: int
    currency: str

    def __post_init__(self) -> None:
        if isinstance(self.amount, bool) or not isinstance(self.amount, int):
            raise ValidationError(
                f"amount must be an integer number of minor units, not {type(self.amount).__name__}",
                field="amount",
            )
        object.__setattr__(self, "amount", int(self.amount))
        object.__setattr__(self, "currency", normalize_currency(self.currency))

    @classmethod
    def parse(cls, text: str, currency: str, *, field: str = "amount",
              allow_negative: bool = False) -> Money:
        """Strictly parse a major-unit decimal string such as "17.00" or "0.99"."""
        cur = normalize_currency(currency)
        exp = CURRENCY_EXPONENTS[cur]
        example = format_minor(17 * 10**exp, cur)
        if not isinstance(text, str):
            raise ValidationError(
                f"must be a decimal string such as {example!r}, not {type(text).__name__}",
                field=field,
            )
        raw = text.strip()
        m = _DECIMAL_RE.fullmatch(raw) if len(raw) <= 40 else None
        if m is None:
            raise ValidationError(
                f"{text!r} is not a plain decimal amount (expected e.g. {example!r}; "
                "no exponents, separators or signs)",
                field=field,
            )
        sign, whole, frac = m.group(1), m.group(2), m.group(3) or ""
        if sign and not allow_negative:
            raise ValidationError(f"must not be negative, got {text!r}", field=field)
        if len(frac) > exp:
            raise ValidationError(
                f"{text!r} has {len(frac)} decimal place(s) but {cur} allows at most {exp}",
                field=field,
            )
        minor = int(whole + frac.ljust(exp, "0"))
        if minor > MAX_MINOR:
            raise ValidationError(f"{text!r} is too large", field=field)
        return cls(-minor if sign else minor, cur)

    @classmethod
    def zero(cls, currency: str) -> Money:
        return cls(0, currency)

    def is_zero(self) -> bool:
        return self.amount == 0

    def to_major_str(self) -> str:
        exp = CURRENCY_EXPONENTS[self.currency]
        sign = "-" if self.amount < 0 else ""
        digits = str(abs(self.amount))
        if exp == 0:
            return sign + digits
        digits = digits.rjust(exp + 1, "0")
        return f"{sign}{digits[:-exp]}.{digits[-exp:]}"

    def __str__(self) -> str:
        return f"{self.to_major_str()} {self.currency}"

    def _check_same(self, other: Money, op: str) -> None:
        if other.currency != self.currency:
            raise ValidationError(
                f"cannot {op} {self.currency} and {other.currency} amounts", field="currency"
            )

    def __add__(self, other: object) -> Money:
        if not isinstance(other, Money):
            return NotImplemented
        self._check_same(other, "add")
        return Money(self.amount + other.amount, self.currency)

    def __sub__(self, other: object) -> Money:
        if not isinstance(other, Money):
            return NotImplemented
        self._check_same(other, "subtract")
        return Money(self.amount - other.amount, self.currency)

    def __neg__(self) -> Money:
        return Money(-self.amount, self.currency)

    def __mul__(self, factor: object) -> Money:
        if isinstance(factor, bool) or not isinstance(factor, int):
            return NotImplemented
        return Money(self.amount * factor, self.currency)

    __rmul__ = __mul__

    def _cmp_amounts(self, other: object, op: str) -> tuple[int, int] | None:
        if not isinstance(other, Money):
            return None
        self._check_same(other, op)
        return self.amount, other.amount

    def __lt__(self, other: object) -> bool:
        pair = self._cmp_amounts(other, "compare")
        return NotImplemented if pair is None else pair[0] < pair[1]

    def __le__(self, other: object) -> bool:
        pair = self._cmp_amounts(other, "compare")
        return NotImplemented if pair is None else pair[0] <= pair[1]

    def __gt__(self, other: object) -> bool:
        pair = self._cmp_amounts(other, "compare")
        return NotImplemented if pair is None else pair[0] > pair[1]

    def __ge__(self, other: object) -> bool:
        pair = self._cmp_amounts(other, "compare")
        return NotImplemented if pair is None else pair[0] >= pair[1]
