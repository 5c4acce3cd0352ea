"""Settings: the environment, then flags, into one frozen `Settings`.

Client and server read the same names, so one environment serves both. `REDIS_URL`, `WORKERS`
and `QUEUES` keep the original design's names; every other setting is `DIFO_<NAME>` with a
matching `--flag`. This module only parses and checks; it opens nothing.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from difo.errors import ConfigError

DEFAULT_URL = "redis://localhost:6379/0"
URL_SCHEMES = ("redis", "rediss", "unix", "sqlite")
LOG_FORMATS = ("plain", "json")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_WEIGHT = re.compile(r"^(?P<name>.+):(?P<weight>\d+)$")
_QUEUE_NAME = re.compile(r"^[A-Za-z0-9_:.\-]+$")


@dataclass(frozen=True)
class QueueSpec:
    """One queue a server serves, with its weight (1 when the list is not weighted)."""

    name: str
    weight: int = 1


@dataclass(frozen=True)
class BackendURL:
    """A parsed backend URL. `password` is never shown: use `masked` in messages and logs."""

    scheme: str
    host: str = "localhost"
    port: int = 6379
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    path: str = ""
    options: tuple[tuple[str, str], ...] = ()
    masked: str = ""

    @property
    def is_redis(self) -> bool:
        return self.scheme in ("redis", "rediss", "unix")


@dataclass(frozen=True)
class Settings:
    """Everything a client or server reads from its environment and flags."""

    url: str = DEFAULT_URL
    workers: int = 10
    queues: tuple[QueueSpec, ...] = (QueueSpec("default"),)
    weighted: bool = False
    timeout: float = 25.0
    unit_timeout: float | None = None
    log_format: str = "plain"
    log_level: str = "INFO"
    imports: tuple[str, ...] = ()
    dead_after: float = 15.0
    heartbeat: float = 5.0
    poll_interval: float = 0.5
    prefetch: int | None = None
    tag: str = ""
    async_workers: int = 100
    processes: int = 1
    max_units_per_child: int | None = None
    max_memory: int | None = None  # MB of resident memory before a child is recycled
    setup: str | None = None  # "module:function" called before the server starts

    @property
    def backend_url(self) -> BackendURL:
        return parse_url(self.url)

    @property
    def queue_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.queues)

    def with_overrides(self, **overrides: Any) -> Settings:
        """These settings with flag values applied; `None` means "flag not given"."""
        given = {key: value for key, value in overrides.items() if value is not None}
        if "queues" in given and isinstance(given["queues"], str):
            given["queues"], given["weighted"] = parse_queues(given["queues"], "--queues")
        if "url" in given:
            parse_url(given["url"])
        settings = replace(self, **given)
        _check(settings)
        return settings


def load(env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Settings from `env` (default: os.environ), then `overrides` (flags) on top."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    url = env.get("DIFO_URL") or env.get("REDIS_URL")
    if url:
        parse_url(url, "DIFO_URL" if env.get("DIFO_URL") else "REDIS_URL")
        values["url"] = url
    if "WORKERS" in env:
        values["workers"] = _int(env["WORKERS"], "WORKERS", minimum=1)
    if "QUEUES" in env:
        values["queues"], values["weighted"] = parse_queues(env["QUEUES"], "QUEUES")
    for name, key, parse in _DIFO_SETTINGS:
        raw = env.get(name)
        if raw is not None and raw != "":
            values[key] = parse(raw, name)
    settings = Settings(**values)
    _check(settings)
    return settings.with_overrides(**overrides) if overrides else settings


def parse_queues(text: str, setting: str = "QUEUES") -> tuple[tuple[QueueSpec, ...], bool]:
    """`"critical:3 default:1"` -> specs and whether the list is weighted (any weight given)."""
    specs: list[QueueSpec] = []
    weighted = False
    for word in text.split():
        match = _WEIGHT.match(word)
        if match:
            weighted = True
            name, weight = match["name"], int(match["weight"])
            if weight < 1:
                raise ConfigError(f"{setting}: queue {name!r} has weight 0; weights start at 1")
        else:
            name, weight = word, 1
        if not _QUEUE_NAME.match(name):
            raise ConfigError(
                f"{setting}: {name!r} is not a queue name; use letters, digits and _ : . -"
            )
        if any(spec.name == name for spec in specs):
            raise ConfigError(f"{setting}: queue {name!r} is listed twice")
        specs.append(QueueSpec(name, weight))
    if not specs:
        raise ConfigError(f"{setting} is empty; name at least one queue, e.g. 'default'")
    return tuple(specs), weighted


def check_queue_name(name: str, setting: str = "queue") -> str:
    """`name`, if QUEUES could name it (else no server could ever serve it); or ConfigError."""
    if not isinstance(name, str) or not _QUEUE_NAME.match(name):
        raise ConfigError(
            f"{setting}: {name!r} is not a queue name; use letters, digits and _ : . -"
        )
    return name


def parse_url(url: str, setting: str = "url") -> BackendURL:
    """Parse a backend URL, reading `redis://secret@host` as a password (the original design)."""
    # urllib's messages may quote part of the password (a bad "port"), so none are shown.
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ConfigError(
            f"{setting}: cannot parse {mask_url(url)!r} as redis://[[user:]password@]host"
            "[:port][/db]; percent-encode / ? # @ in a password"
        ) from None
    scheme = parts.scheme.lower()
    if scheme not in URL_SCHEMES:
        raise ConfigError(
            f"{setting}: {mask_url(url)!r} has scheme {scheme or 'none'!r}; expected one of "
            "redis://, rediss://, unix://, sqlite:///"
        )
    username, password = _userinfo(parts.netloc)
    options = tuple(parse_qsl(parts.query))
    if scheme == "sqlite":
        path = url[len("sqlite:///") :] if url.startswith("sqlite:///") else ""
        if not path:
            raise ConfigError(f"{setting}: {url!r} names no file; use sqlite:///path/to/difo.db")
        return BackendURL(scheme, host="", port=0, path=unquote(path.split("?")[0]), masked=url)
    if scheme == "unix":
        if not parts.path:
            raise ConfigError(f"{setting}: {mask_url(url)!r} names no socket path")
        db = _db(dict(options).get("db", "0"), url, setting)
        return BackendURL(
            scheme, host="", port=0, db=db, username=username, password=password,
            path=parts.path, options=options, masked=mask_url(url),
        )
    if not parts.hostname:
        raise ConfigError(f"{setting}: {mask_url(url)!r} names no host")
    if "@" in parts.path + parts.fragment:
        # A password holding an unencoded / or # would otherwise name the wrong host.
        raise ConfigError(
            f"{setting}: cannot parse {mask_url(url)!r}; percent-encode / ? # @ in a password"
        )
    db_text = parts.path.lstrip("/") or "0"
    return BackendURL(
        scheme, host=parts.hostname, port=port or 6379, db=_db(db_text, url, setting),
        username=username, password=password, options=options, masked=mask_url(url),
    )


def mask_url(url: str) -> str:
    """The URL with any password replaced by `***`, for messages and logs.

    The user info runs to the last `@`, so a password holding an unencoded / ? # or @ is
    hidden too (at worst a little more than the password is masked).
    """
    head, sep, rest = url.partition("//")
    if not sep or rest.startswith("/") or "@" not in rest:
        return url
    userinfo, _, hostpart = rest.rpartition("@")
    user, colon, _ = userinfo.partition(":")
    keep = f"{user}:" if colon and not any(c in user for c in "/?#") else ""
    return f"{head}//{keep}***@{hostpart}"


def _userinfo(netloc: str) -> tuple[str | None, str | None]:
    if "@" not in netloc:
        return None, None
    userinfo = netloc.rpartition("@")[0]
    if ":" in userinfo:
        user, password = userinfo.split(":", 1)
        return (unquote(user) or None), unquote(password)
    return None, unquote(userinfo)


def _db(text: str, url: str, setting: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise ConfigError(f"{setting}: {mask_url(url)!r} has database {text!r}; expected a number")
    return int(text)


def _int(raw: str, name: str, minimum: int = 0) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number") from None
    if value < minimum:
        raise ConfigError(f"{name}={raw!r} must be at least {minimum}")
    return value


def _seconds(raw: str, name: str) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{name}={raw!r} must be a finite number of seconds, 0 or more")
    return value


def _positive_seconds(raw: str, name: str) -> float:
    value = _seconds(raw, name)
    if value == 0:
        raise ConfigError(f"{name}={raw!r} must be more than 0 seconds")
    return value


def _choice(options: tuple[str, ...], upper: bool = False) -> Any:
    def parse(raw: str, name: str) -> str:
        value = raw.strip().upper() if upper else raw.strip().lower()
        if value not in options:
            raise ConfigError(f"{name}={raw!r} is not one of {', '.join(options)}")
        return value

    return parse


def _words(raw: str, name: str) -> tuple[str, ...]:
    return tuple(raw.replace(",", " ").split())


def _modules(raw: str, name: str) -> tuple[str, ...]:
    """Module names (`myapp myapp.jobs`), each a dotted Python name."""
    words = _words(raw, name)
    for word in words:
        if not all(part.isidentifier() for part in word.split(".")):
            raise ConfigError(
                f"{name}={raw!r}: {word!r} is not a module name; list importable modules, "
                "e.g. myapp or myapp.jobs"
            )
    return words


def _text(raw: str, name: str) -> str:
    return raw


def _count(raw: str, name: str) -> int:
    return _int(raw, name, minimum=0)


def _positive_count(raw: str, name: str) -> int:
    return _int(raw, name, minimum=1)


def parse_megabytes(raw: str, name: str) -> int:
    """`512`, `512M` or `2G` -> megabytes."""
    text = raw.strip().upper().removesuffix("B")
    factor = 1024 if text.endswith("G") else 1
    return _int(text.rstrip("MG") or raw, name, minimum=1) * factor


_DIFO_SETTINGS: tuple[tuple[str, str, Any], ...] = (
    ("DIFO_TIMEOUT", "timeout", _seconds),
    ("DIFO_UNIT_TIMEOUT", "unit_timeout", _positive_seconds),
    ("DIFO_LOG_FORMAT", "log_format", _choice(LOG_FORMATS)),
    ("DIFO_LOG_LEVEL", "log_level", _choice(LOG_LEVELS, upper=True)),
    ("DIFO_IMPORTS", "imports", _modules),
    ("DIFO_DEAD_AFTER", "dead_after", _positive_seconds),
    ("DIFO_HEARTBEAT", "heartbeat", _positive_seconds),
    ("DIFO_POLL_INTERVAL", "poll_interval", _positive_seconds),
    ("DIFO_PREFETCH", "prefetch", _count),
    ("DIFO_TAG", "tag", _text),
    ("DIFO_ASYNC_WORKERS", "async_workers", _positive_count),
    ("DIFO_PROCESSES", "processes", _positive_count),
    ("DIFO_MAX_UNITS_PER_CHILD", "max_units_per_child", _positive_count),
    ("DIFO_MAX_MEMORY", "max_memory", parse_megabytes),
    ("DIFO_SETUP", "setup", _text),
)


def _check(settings: Settings) -> None:
    """Checks that span settings, or that flags (already typed by click) may still break."""
    if settings.workers < 1:
        raise ConfigError(f"WORKERS={settings.workers} must be at least 1")
    for name, value in (("DIFO_ASYNC_WORKERS", settings.async_workers),
                        ("DIFO_PROCESSES", settings.processes),
                        ("DIFO_MAX_UNITS_PER_CHILD", settings.max_units_per_child),
                        ("DIFO_MAX_MEMORY", settings.max_memory)):
        if value is not None and value < 1:
            raise ConfigError(f"{name}={value} must be at least 1")
    if settings.setup is not None and ":" not in settings.setup:
        raise ConfigError(f"DIFO_SETUP={settings.setup!r} must be module:function")
    if settings.heartbeat * 2 > settings.dead_after:
        raise ConfigError(
            f"DIFO_DEAD_AFTER={settings.dead_after:g} must be at least twice "
            f"DIFO_HEARTBEAT={settings.heartbeat:g}, or live servers would look dead"
        )
    if settings.log_format not in LOG_FORMATS:
        raise ConfigError(f"--log-format {settings.log_format!r} is not one of plain, json")
    if settings.log_level.upper() not in LOG_LEVELS:
        raise ConfigError(f"--log-level {settings.log_level!r} is not one of {LOG_LEVELS}")
