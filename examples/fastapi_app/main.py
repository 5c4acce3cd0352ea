"""The web app: `uvicorn fastapi_app.main:app`, run from examples/.

POST /signup enqueues a unit without blocking the event loop; /difo is the dashboard.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from pydantic import BaseModel

import difo.aio  # a submodule: `import difo` alone does not load it
from difo.web import create_app

from .tasks import send_welcome


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    await difo.aio.close()  # the connections difo opened on this event loop


app = FastAPI(lifespan=lifespan)


class Signup(BaseModel):
    email: str


@app.post("/signup", status_code=202)
async def signup(body: Signup) -> dict[str, str]:
    jid = await difo.aio.perform(send_welcome, body.email)
    return {"jid": jid}


# The dashboard reads REDIS_URL as the server does. It can delete units and stop servers, so
# it always asks for a password: DIFO_WEB_AUTH=user:password.
app.mount("/difo", create_app(auth=os.environ["DIFO_WEB_AUTH"]))
