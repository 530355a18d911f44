"""`epd-router`: OpenAI-compatible front door driving encoder -> (prefill) -> decode (DESIGN §5)."""
