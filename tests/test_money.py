from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from billing_engine.errors import ValidationError
from billing_engine.money import (
    CURRENCY_EXPONENTS,
    Money,
    exponent,
    format_minor,
    normalize_currency,
    round_half_even,
)

PROPS = settings(max_examples=250, deadline=None)


# --- currency table -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("codes", "exp"),
    [
        ("BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF", 0),
        ("USD EUR GBP CHF CAD AUD CNY INR BRL MXN SEK NOK DKK PLN ZAR SGD HKD NZD", 2),
        ("BHD IQD JOD KWD LYD OMR TND", 3),
        ("CLF UYW", 4),
    ],
)
def test_currency_table_has_iso_exponents(codes: str, exp: int) -> None:
    for code in codes.split():
        assert CURRENCY_EXPONENTS[code] == exp, code
        assert exponent(code) == exp


def test_currency_table_codes_are_three_upper_letters() -> None:
    assert len(CURRENCY_EXPONENTS) > 150
    for code in CURRENCY_EXPONENTS:
        assert len(code) == 3 and code.isascii() and code.isalpha() and code.isupper()


def test_normalize_currency_strips_and_upper_cases() -> None:
    assert normalize_currency("  usd ") == "USD"
    assert normalize_currency("Jpy") == "JPY"


@pytest.mark.parametrize("bad", ["XYZ", "", "US", "USDD", "us d", "€"])
def test_unknown_currency_is_rejected_naming_the_field(bad: str) -> None:
    with pytest.raises(ValidationError) as exc:
        normalize_currency(bad)
    assert exc.value.field == "currency"
    assert "ISO-4217" in str(exc.value)


def test_unknown_currency_message_is_readable() -> None:
    with pytest.raises(ValidationError) as exc:
        normalize_currency("xyz")
    assert str(exc.value) == (
        "currency: unknown currency 'XYZ' (expected an ISO-4217 code such as USD)"
    )


def test_non_string_currency_is_rejected() -> None:
    with pytest.raises(ValidationError):
        normalize_currency(840)  # type: ignore[arg-type]


# --- Money construction -----------------------------------------------------------------


@pytest.mark.parametrize("amount", [1.0, 17.5, Decimal("1"), Fraction(1), True, False, "17", None])
def test_money_rejects_anything_but_int_amount(amount: object) -> None:
    with pytest.raises(ValidationError) as exc:
        Money(amount, "USD")  # type: ignore[arg-type]
    assert exc.value.field == "amount"


def test_money_normalises_currency() -> None:
    assert Money(5, " eur ") == Money(5, "EUR")
    assert Money(5, "eur").currency == "EUR"


def test_money_rejects_unknown_currency() -> None:
    with pytest.raises(ValidationError) as exc:
        Money(5, "ABC")
    assert exc.value.field == "currency"


def test_money_is_frozen() -> None:
    m = Money(5, "USD")
    with pytest.raises(AttributeError):
        m.amount = 6  # type: ignore[misc]


# --- parsing ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "currency", "minor"),
    [
        ("17", "USD", 1700),
        ("17.0", "USD", 1700),
        ("17.00", "USD", 1700),
        ("0.99", "USD", 99),
        ("0", "USD", 0),
        (" 17.5 ", "EUR", 1750),
        ("1700", "JPY", 1700),
        ("1.5", "KWD", 1500),
        ("0.001", "BHD", 1),
        ("0.0001", "CLF", 1),
        ("007.10", "USD", 710),
    ],
)
def test_parse_accepts_plain_decimals(text: str, currency: str, minor: int) -> None:
    assert Money.parse(text, currency) == Money(minor, currency)


@pytest.mark.parametrize(
    ("text", "currency"),
    [
        ("17.001", "USD"),
        ("17.000", "USD"),
        ("1.5", "JPY"),
        ("17.0", "JPY"),
        ("0.0001", "KWD"),
        ("1e3", "USD"),
        ("1E3", "USD"),
        ("1,000", "USD"),
        ("1,000.00", "USD"),
        ("1.000,00", "EUR"),
        ("1_000", "USD"),
        ("1 000", "USD"),
        ("17. 00", "USD"),
        ("", "USD"),
        ("   ", "USD"),
        ("NaN", "USD"),
        ("nan", "USD"),
        ("inf", "USD"),
        ("Infinity", "USD"),
        ("+17", "USD"),
        ("-17", "USD"),
        ("17.", "USD"),
        (".5", "USD"),
        ("$17", "USD"),
        ("17 USD", "USD"),
        ("0x10", "USD"),
        ("١٧", "USD"),  # Arabic-Indic digits: int() would accept them
        ("1" * 41, "USD"),
        ("99999999999999999999", "USD"),
    ],
)
def test_parse_rejects_anything_not_strictly_a_decimal(text: str, currency: str) -> None:
    with pytest.raises(ValidationError) as exc:
        Money.parse(text, currency, field="price")
    assert exc.value.field == "price"
    assert str(exc.value).startswith("price: ")


def test_parse_too_many_decimals_names_the_currency_limit() -> None:
    with pytest.raises(ValidationError) as exc:
        Money.parse("1.5", "JPY")
    assert "JPY allows at most 0" in str(exc.value)


def test_parse_negative_only_when_allowed() -> None:
    assert Money.parse("-17.25", "USD", allow_negative=True) == Money(-1725, "USD")
    with pytest.raises(ValidationError, match="negative"):
        Money.parse("-17.25", "USD")


@pytest.mark.parametrize("value", [17.0, Decimal("17"), 17, None])
def test_parse_accepts_only_strings(value: object) -> None:
    with pytest.raises(ValidationError) as exc:
        Money.parse(value, "USD")  # type: ignore[arg-type]
    assert exc.value.field == "amount"


def test_parse_unknown_currency_is_a_currency_error() -> None:
    with pytest.raises(ValidationError) as exc:
        Money.parse("1.00", "XYZ")
    assert exc.value.field == "currency"


# --- formatting -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("minor", "currency", "text"),
    [
        (1700, "USD", "17.00"),
        (99, "USD", "0.99"),
        (5, "USD", "0.05"),
        (0, "USD", "0.00"),
        (-5, "USD", "-0.05"),
        (-1700, "USD", "-17.00"),
        (1700, "JPY", "1700"),
        (-1700, "JPY", "-1700"),
        (1500, "KWD", "1.500"),
        (1, "KWD", "0.001"),
        (1, "CLF", "0.0001"),
    ],
)
def test_format_minor_has_exactly_the_currency_decimals(minor: int, currency: str, text: str) -> None:
    assert format_minor(minor, currency) == text
    assert Money(minor, currency).to_major_str() == text


def test_str_shows_amount_and_currency() -> None:
    assert str(Money(1700, "USD")) == "17.00 USD"
    assert str(Money(1700, "JPY")) == "1700 JPY"


@PROPS
@given(
    currency=st.sampled_from(sorted(CURRENCY_EXPONENTS)),
    minor=st.integers(min_value=-(10**15), max_value=10**15),
)
def test_format_then_parse_round_trips_for_every_currency(currency: str, minor: int) -> None:
    text = format_minor(minor, currency)
    exp = CURRENCY_EXPONENTS[currency]
    assert (len(text.split(".")[1]) if "." in text else 0) == exp
    assert Money.parse(text, currency, allow_negative=True) == Money(minor, currency)
    assert Decimal(text) == Decimal(minor).scaleb(-exp)


@pytest.mark.parametrize("currency", sorted(CURRENCY_EXPONENTS))
def test_smallest_unit_round_trips_in_every_currency(currency: str) -> None:
    text = format_minor(1, currency)
    assert Money.parse(text, currency).amount == 1
    too_fine = "0." + "0" * exponent(currency) + "1"
    with pytest.raises(ValidationError):
        Money.parse(too_fine, currency)


# --- arithmetic -------------------------------------------------------------------------


def test_add_subtract_negate_same_currency() -> None:
    a, b = Money(1700, "USD"), Money(250, "USD")
    assert a + b == Money(1950, "USD")
    assert a - b == Money(1450, "USD")
    assert b - a == Money(-1450, "USD")
    assert -a == Money(-1700, "USD")


@pytest.mark.parametrize("op", ["add", "sub", "lt", "le", "gt", "ge"])
def test_mixing_currencies_is_a_validation_error(op: str) -> None:
    usd, eur = Money(1, "USD"), Money(1, "EUR")
    fn = {
        "add": lambda: usd + eur,
        "sub": lambda: usd - eur,
        "lt": lambda: usd < eur,
        "le": lambda: usd <= eur,
        "gt": lambda: usd > eur,
        "ge": lambda: usd >= eur,
    }[op]
    with pytest.raises(ValidationError) as exc:
        fn()
    assert exc.value.field == "currency"


def test_money_equality_includes_currency() -> None:
    assert Money(1, "USD") != Money(1, "EUR")
    assert Money(1, "USD") == Money(1, "usd")
    assert Money(1, "USD") != 1


def test_multiply_by_int_only() -> None:
    m = Money(333, "USD")
    assert m * 3 == Money(999, "USD")
    assert 3 * m == Money(999, "USD")
    for factor in (1.5, Decimal("2"), Fraction(1, 2), True, "2"):
        with pytest.raises(TypeError):
            m * factor  # type: ignore[operator]
        with pytest.raises(TypeError):
            factor * m  # type: ignore[operator]


def test_adding_a_plain_number_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        Money(1, "USD") + 1  # type: ignore[operator]
    with pytest.raises(TypeError):
        Money(1, "USD") + 1.0  # type: ignore[operator]


def test_comparisons_within_a_currency() -> None:
    a, b = Money(100, "USD"), Money(200, "USD")
    assert a < b and a <= b and b > a and b >= a and a <= a and a >= a
    assert not (b < a) and not (a > b)
    assert max(a, b) == b and sorted([b, a]) == [a, b]


def test_zero_and_is_zero() -> None:
    z = Money.zero("jpy")
    assert z == Money(0, "JPY") and z.is_zero()
    assert not Money(1, "JPY").is_zero()


# --- rounding ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Decimal("0.5"), 0),
        (Decimal("1.5"), 2),
        (Decimal("2.5"), 2),
        (Decimal("2.5000001"), 3),
        (Decimal("-0.5"), 0),
        (Decimal("-1.5"), -2),
        (Decimal("-2.6"), -3),
        (Decimal("2.4999"), 2),
        (Fraction(5, 2), 2),
        (Fraction(7, 2), 4),
        (Fraction(-7, 2), -4),
        (Fraction(1, 3), 0),
        (7, 7),
    ],
)
def test_round_half_even(value: Decimal | Fraction | int, expected: int) -> None:
    assert round_half_even(value) == expected


@pytest.mark.parametrize("bad", [2.5, True, "2.5"])
def test_round_half_even_refuses_floats_and_others(bad: object) -> None:
    with pytest.raises(TypeError):
        round_half_even(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [Decimal("NaN"), Decimal("Infinity")])
def test_round_half_even_refuses_non_finite(bad: Decimal) -> None:
    with pytest.raises(ValueError):
        round_half_even(bad)


@pytest.mark.parametrize(
    ("amount", "num", "den", "expected"),
    [
        (1000, 1, 3, 333),
        (1000, 2, 3, 667),
        (1, 1, 2, 0),
        (3, 1, 2, 2),
        (5, 1, 2, 2),
        (-5, 1, 2, -2),
        (1999, 15, 31, 967),  # 967.258...
        (10**30 + 1, 1, 2, 5 * 10**29),  # exact far beyond Decimal's 28 digits
    ],
)
def test_a_ratio_of_an_amount_rounds_half_even(amount: int, num: int, den: int, expected: int) -> None:
    assert round_half_even(Fraction(amount * num, den)) == expected


@PROPS
@given(
    amount=st.integers(min_value=-(10**12), max_value=10**12),
    num=st.integers(min_value=0, max_value=10**6),
    den=st.integers(min_value=1, max_value=10**6),
)
def test_a_ratio_rounded_exactly_matches_decimal_half_even(amount: int, num: int, den: int) -> None:
    exact = Fraction(amount * num, den)
    got = round_half_even(exact)
    assert abs(exact - got) <= Fraction(1, 2)
    if abs(exact - got) == Fraction(1, 2):
        assert got % 2 == 0
    assert got == round_half_even(Decimal(amount) * num / den)
