"""OpenAI-style error bodies and the failure types the router's flows raise."""

from __future__ import annotations

from aiohttp import web

from ..openai_errors import OpenAIError, error_response

__all__ = ["ClientFacingError", "UpstreamRejected", "error_response"]


class ClientFacingError(OpenAIError):
    """End the request with this status and message (no retry)."""


class UpstreamRejected(Exception):
    """An engine answered 4xx: the request itself is wrong; pass the answer through unchanged."""

    def __init__(self, status: int, body: bytes, content_type: str) -> None:
        super().__init__(f"upstream answered {status}")
        self.status, self.body, self.content_type = status, body, content_type

    def response(self) -> web.Response:
        return web.Response(status=self.status, body=self.body, content_type=self.content_type)


class UpstreamFailed(Exception):
    """An engine could not serve this attempt (connect/reset/timeout/5xx): retry elsewhere.

    `pod_down` marks failures that say the pod itself is gone (connection refused or reset,
    connect timeout), which take it out of rotation until a health check brings it back.
    """

    def __init__(
        self,
        role: str,
        pod: str,
        reason: str,
        *,
        pod_down: bool,
        timeout: bool = False,
        status: int | None = None,
    ) -> None:
        super().__init__(f"{role} {pod}: {reason}")
        self.role, self.pod, self.reason = role, pod, reason
        self.pod_down, self.timeout, self.status = pod_down, timeout, status
