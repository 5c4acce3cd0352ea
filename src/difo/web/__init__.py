"""The web dashboard (`difo web`, or mount `create_app()` in any ASGI app).

    from difo.web import create_app
    app = create_app(url="redis://localhost:6379/0", auth="admin:secret")

Needs the `web` extra (starlette, jinja2, uvicorn); nothing else in difo imports it.
"""

from __future__ import annotations

from difo.web.app import Dashboard, create_app

__all__ = ["Dashboard", "create_app"]
