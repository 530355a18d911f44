"""epd_connector.sim (see DESIGN.md)."""
