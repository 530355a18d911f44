"""`epd-router`: OpenAI-compatible front door driving encoder -> (prefill) -> decode
(docs/router.md)."""
