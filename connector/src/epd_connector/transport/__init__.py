"""epd_connector.transport (see DESIGN.md)."""
