"""The Lua scripts in lua/, one per backend verb, loaded once per client."""

from __future__ import annotations

from importlib import resources
from typing import Any

import redis

SCRIPT_NAMES = (
    "push", "claim", "requeue", "retry", "kill", "discard",
    "stage_due", "take_orphans", "release", "beat",
    "move_to_queue", "move_to_dead", "fire_periodic",
)


def source(name: str) -> str:
    """The text of lua/<name>.lua."""
    folder = resources.files("difo.backends.redis").joinpath("lua")
    return folder.joinpath(f"{name}.lua").read_text()


def load(client: redis.Redis) -> dict[str, Any]:
    """Every script registered on `client` (EVALSHA, loading the script when Redis lacks it)."""
    return {name: client.register_script(source(name)) for name in SCRIPT_NAMES}
