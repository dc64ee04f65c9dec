"""Pure ASGI middleware: refuse requests with too many or too large headers (431).

The HTTP parser has read them by then; this bounds what the app does with them (every
header is decoded and looked at by someone: Starlette, the signature check, the logs).
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Receive, Scope, Send


class HeaderLimitsMiddleware:
    def __init__(self, app: ASGIApp, max_count: int, max_bytes: int) -> None:
        self.app = app
        self.max_count = max_count
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = scope["headers"]
            size = sum(len(name) + len(value) for name, value in headers)
            if len(headers) > self.max_count or size > self.max_bytes:
                detail = (
                    f"at most {self.max_count} request headers of {self.max_bytes} bytes in all"
                )
                body = json.dumps(
                    {"ok": False, "error": "headers_too_large", "detail": detail}
                ).encode()
                await send(
                    {
                        "type": "http.response.start",
                        "status": 431,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
