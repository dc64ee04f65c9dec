"""The benchmark's ceiling: a bare Starlette handler answering 202, served exactly like the
durable webhook (one uvicorn process, uvloop, httptools, no access log)."""

from __future__ import annotations

import sys
import uuid

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


async def deposit(request: Request) -> JSONResponse:
    await request.body()
    return JSONResponse({"ok": True, "tx_id": str(uuid.uuid4())}, 202)


app = Starlette(routes=[Route("/api/v1/webhooks/deposit", deposit, methods=["POST"])])

if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_config=None,
        backlog=2048,
    )
