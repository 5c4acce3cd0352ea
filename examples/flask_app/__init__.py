"""Flask and difo: a view enqueues, and every unit runs inside the app's context.

    flask --app flask_app run                                    # the web app
    difo server --setup flask_app.worker:setup --import flask_app.tasks
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask


def create_app(**config: Any) -> Flask:
    """The app factory: defaults, then FLASK_* variables (FLASK_MAIL_SENDER=...), then `config`."""
    app = Flask(__name__)
    app.config.from_mapping(
        MAIL_SENDER="hello@example.com",
        REDIS_URL=os.environ.get("REDIS_URL", "redis://localhost:6379/0"),  # as difo reads it
    )
    app.config.from_prefixed_env()
    app.config.update(config)

    from . import views

    app.register_blueprint(views.blueprint)
    return app
