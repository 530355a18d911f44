"""epd_operator.reconcile (see DESIGN.md)."""
