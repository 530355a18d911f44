"""OpenAI-style error bodies, the shape vLLM's server and OpenAI clients use, shared by the
router (errors it raises itself) and the simulator (errors it answers like vLLM would)."""

from __future__ import annotations

from aiohttp import web


def error_response(
    status: int, message: str, err_type: str, param: str | None = None
) -> web.Response:
    """`{"error": {message, type, param, code}}` with `status` as the HTTP status."""
    return web.json_response(
        {"error": {"message": message, "type": err_type, "param": param, "code": status}},
        status=status,
    )


class OpenAIError(Exception):
    """End the request with this status and an OpenAI-style body."""

    def __init__(self, status: int, message: str, err_type: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.err_type, self.param = status, message, err_type, param

    def response(self) -> web.Response:
        return error_response(self.status, self.message, self.err_type, self.param)
