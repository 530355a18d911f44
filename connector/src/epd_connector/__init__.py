"""epd-connector: what runs inside EPD pods (launch contract, router, engine simulator)."""

# Released in lockstep with epd-operator (epd_operator.__version__; a unit test keeps them equal).
__version__ = "0.1.0"
