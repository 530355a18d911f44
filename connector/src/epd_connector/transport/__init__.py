"""Mooncake transfer-engine helpers: P2PHANDSHAKE init over TCP/RDMA, buffers, preflight."""

from .engine import Engine, HostBuffer, PreflightResult, TransportError, preflight

__all__ = ["Engine", "HostBuffer", "PreflightResult", "TransportError", "preflight"]
