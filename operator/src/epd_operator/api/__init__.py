"""epd_operator.api (see DESIGN.md)."""
