"""epd_operator.render (see DESIGN.md)."""
