"""Kubernetes resource quantities ("16Gi", "500m", "1e9", 4): parsing and canonical form.

Parsing lets `parse` check what the apiserver cannot (requests <= limits, a whole number of
bytes for `ecTransfer.bufferSize`). The canonical form is what the apiserver stores for a
Quantity (the rules of k8s.io/apimachinery's `Quantity.String()`), so the renderer can emit
exactly what a read-back returns and a no-op resync sees no difference.
"""

from __future__ import annotations

import re
from decimal import ROUND_CEILING, Decimal, InvalidOperation, localcontext
from typing import Final, Literal

# The pattern controller-gen puts on Quantity fields; the apiserver checks it for us.
QUANTITY_PATTERN: Final = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
_RE = re.compile(QUANTITY_PATTERN)
_BINARY: Final = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_DECIMAL: Final = {
    "n": -9,
    "u": -6,
    "m": -3,
    "": 0,
    "k": 3,
    "M": 6,
    "G": 9,
    "T": 12,
    "P": 15,
    "E": 18,
}
_DECIMAL_SUFFIX: Final = {v: k for k, v in _DECIMAL.items()}
_BINARY_SUFFIX: Final = {v // 10: k for k, v in _BINARY.items()}

Format = Literal["BinarySI", "DecimalSI", "DecimalExponent"]


class QuantityError(ValueError):
    """Not a Kubernetes quantity."""


def _split(text: str) -> tuple[str, str]:
    m = re.match(r"^([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(.*)$", text)
    if m is None:
        raise QuantityError(f"{text!r} is not a Kubernetes quantity")
    return m.group(1), m.group(2)


def parse_quantity(value: int | str) -> tuple[Decimal, Format]:
    """The exact value of a quantity (rounded up to nano units, like Kubernetes) and its format."""
    if isinstance(value, bool):
        raise QuantityError(f"{value!r} is not a Kubernetes quantity")
    if isinstance(value, int):
        return Decimal(value), "DecimalSI"
    text = value.strip()
    if _RE.match(text) is None:
        raise QuantityError(f"{value!r} is not a Kubernetes quantity (e.g. 16Gi, 500m, 1e9)")
    number, suffix = _split(text)
    with localcontext() as ctx:
        ctx.prec = 60
        try:
            base = Decimal(number)
        except InvalidOperation as exc:  # pragma: no cover - the regex guards this
            raise QuantityError(f"{value!r} is not a Kubernetes quantity") from exc
        fmt: Format
        if suffix in _BINARY:
            amount = base * (Decimal(2) ** _BINARY[suffix])
            fmt = "BinarySI"
        elif suffix in _DECIMAL:
            amount = base.scaleb(_DECIMAL[suffix])
            fmt = "DecimalSI"
        else:
            fmt = "DecimalExponent"
            try:
                amount = base.scaleb(int(Decimal(suffix[1:])))
            except (InvalidOperation, OverflowError) as exc:
                # "8e91234567" matches the grammar (a hex hash can look like that) but no
                # context holds it: out of range, as the apiserver says too.
                raise QuantityError(f"{value!r} is out of range for a quantity") from exc
        nano = amount.scaleb(9).to_integral_value(rounding=ROUND_CEILING)
        return nano.scaleb(-9).normalize(), fmt


def quantity_value(value: int | str) -> Decimal:
    return parse_quantity(value)[0]


def canonical_quantity(value: int | str) -> str:
    """The string the apiserver stores for this quantity (e.g. "1.5Gi" -> "1536Mi")."""
    amount, fmt = parse_quantity(value)
    if amount == 0:
        return "0"
    if fmt == "BinarySI" and (-1024 < amount < 1024 or amount != amount.to_integral_value()):
        fmt = "DecimalSI"
    if fmt == "BinarySI":
        mantissa, exp = int(amount), 0
        while mantissa % 1024 == 0 and exp < 6:
            mantissa //= 1024
            exp += 1
        return f"{mantissa}{_BINARY_SUFFIX[exp]}" if exp else str(mantissa)
    # Decimal: an integer mantissa with an exponent that is a multiple of 3, as large as
    # possible (1000 -> 1k, 1500 -> 1500, 0.5 -> 500m).
    sign, digits, exponent = amount.as_tuple()
    assert isinstance(exponent, int)
    mantissa = int("".join(map(str, digits)))
    exp10 = exponent
    while exp10 % 3 != 0:
        mantissa *= 10
        exp10 -= 1
    while mantissa % 1000 == 0 and exp10 < 18:
        mantissa //= 1000
        exp10 += 3
    text = f"{'-' if sign else ''}{mantissa}"
    if fmt == "DecimalExponent":
        return f"{text}e{exp10}" if exp10 else text
    if exp10 > 18:  # pragma: no cover - beyond exa: Kubernetes falls back to an exponent
        return f"{text}e{exp10}"
    return f"{text}{_DECIMAL_SUFFIX[exp10]}"
