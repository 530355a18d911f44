"""Kubernetes quantities: exact values and the canonical strings the apiserver stores."""

from __future__ import annotations

from decimal import Decimal

import pytest

from epd_operator.api.quantity import QuantityError, canonical_quantity, quantity_value


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1", Decimal(1)),
        (4, Decimal(4)),
        ("500m", Decimal("0.5")),
        ("1Gi", Decimal(2**30)),
        ("1.5Gi", Decimal(3 * 2**29)),
        ("1G", Decimal(10**9)),
        ("1e9", Decimal(10**9)),
        ("1.5e9", Decimal(15 * 10**8)),
        ("1n", Decimal("1e-9")),
        ("0.1n", Decimal("1e-9")),  # rounded up to nano units, like Kubernetes
        ("-2k", Decimal(-2000)),
    ],
)
def test_value(text: int | str, value: Decimal) -> None:
    assert quantity_value(text) == value


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("16Gi", "16Gi"),
        ("1024Mi", "1Gi"),
        ("1.5Gi", "1536Mi"),
        ("1000Mi", "1000Mi"),
        ("512Ki", "512Ki"),
        ("0.5Ki", "512"),
        ("1000", "1k"),
        ("1500", "1500"),
        ("0.5", "500m"),
        ("100m", "100m"),
        ("1000m", "1"),
        ("8", "8"),
        (8, "8"),
        ("1G", "1G"),
        ("1000M", "1G"),
        ("1e9", "1e9"),
        ("1.5e9", "1500e6"),
        ("0", "0"),
        ("0Gi", "0"),
    ],
)
def test_canonical(text: int | str, canonical: str) -> None:
    assert canonical_quantity(text) == canonical


# "8e91234567": the grammar's, but out of any range (a revision hash once looked like it).
@pytest.mark.parametrize("bad", ["lots", "1.5.2", "Gi", "", "1 Gi", "1gi", True, "8e91234567"])
def test_rejects(bad: str) -> None:
    with pytest.raises(QuantityError):
        quantity_value(bad)
