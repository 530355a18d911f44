"""epd_connector.router (see DESIGN.md)."""
