"""Request body limit as a plain ASGI middleware: 413 before the body is read when Content-Length says it is too
large, and as soon as a chunked body passes the limit."""

from __future__ import annotations

import json


class BodyTooLarge(Exception):
    pass


class BodyLimit:
    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    too_large = int(value) > self.limit
                except ValueError:
                    return await _reject(send, 400, "body", "Content-Length is not a number")
                if too_large:
                    return await self._reject_size(send)
        seen = 0
        started = False

        async def counting_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise BodyTooLarge
            return message

        async def tracking_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await self._reject_size(send)

    async def _reject_size(self, send):
        await _reject(send, 413, "body", f"request body above the limit of {self.limit} bytes "
                                         "(MEMPLAN_BODY_LIMIT)")


async def _reject(send, status: int, field: str, message: str) -> None:
    body = json.dumps({"error": message, "detail": [{"field": field, "message": message}]}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
