"""epd-operator: turns one EPDCluster into a vLLM encoder / prefill / decode serving cluster."""

__version__ = "0.1.0"
