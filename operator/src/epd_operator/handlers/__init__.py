"""epd_operator.handlers (see DESIGN.md)."""
