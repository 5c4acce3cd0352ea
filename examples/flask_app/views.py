"""The views: enqueue and answer at once; a difo server does the slow part."""

from __future__ import annotations

from flask import Blueprint, request

from .tasks import send_welcome

blueprint = Blueprint("signup", __name__)


@blueprint.post("/signup")
def signup() -> tuple[dict[str, str], int]:
    email = request.form.get("email", "")
    if not email:
        return {"error": "email is required"}, 400
    return {"jid": send_welcome.perform(email)}, 202
