"""epd-connector: what runs inside EPD pods (launch contract, router, engine simulator)."""

__version__ = "0.1.0"
