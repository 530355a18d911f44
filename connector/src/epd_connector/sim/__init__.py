"""Engine simulator for GPU-free clusters and tests (`python -m epd_connector.sim`).

vLLM 0.33's HTTP surface and EC/KV transfer behaviour per EPD role, with real bytes over the
Mooncake transfer engine.
"""
