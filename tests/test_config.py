"""Settings: defaults, backend URLs (password-only form included), precedence of DIFO_URL,
REDIS_URL and flags, weighted queues, and one-line errors naming the setting at fault."""

from __future__ import annotations

import pytest

from difo import config
from difo.config import QueueSpec, load, mask_url, parse_queues, parse_url
from difo.errors import ConfigError


def test_defaults_from_an_empty_environment() -> None:
    settings = load({})
    assert settings.url == "redis://localhost:6379/0"
    assert settings.workers == 10
    assert settings.queues == (QueueSpec("default", 1),)
    assert settings.queue_names == ("default",)
    assert settings.weighted is False
    assert settings.timeout == 25.0
    assert settings.prefetch is None  # adaptive
    url = settings.backend_url
    assert (url.scheme, url.host, url.port, url.db) == ("redis", "localhost", 6379, 0)
    assert url.username is None and url.password is None


def test_environment_values_are_read() -> None:
    settings = load({
        "REDIS_URL": "redis://cache.internal:6380/3", "WORKERS": " 4 ",
        "QUEUES": "critical default low", "DIFO_TIMEOUT": "8.5",
        "DIFO_UNIT_TIMEOUT": "30", "DIFO_IMPORTS": "myapp, other.jobs",
        "DIFO_LOG_FORMAT": "JSON", "DIFO_LOG_LEVEL": "debug", "DIFO_PREFETCH": "0",
    })
    assert settings.url == "redis://cache.internal:6380/3"
    assert settings.workers == 4
    assert settings.queue_names == ("critical", "default", "low")
    assert settings.weighted is False
    assert settings.timeout == 8.5
    assert settings.unit_timeout == 30.0
    assert settings.imports == ("myapp", "other.jobs")
    assert settings.log_format == "json"
    assert settings.log_level == "DEBUG"
    assert settings.prefetch == 0


# -- URLs ------------------------------------------------------------------------------------


def test_password_only_url_is_a_password_not_a_user() -> None:
    url = parse_url("redis://s3cret@redis.example.com")
    assert url.password == "s3cret"
    assert url.username is None
    assert (url.host, url.port, url.db) == ("redis.example.com", 6379, 0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("redis://localhost", ("redis", "localhost", 6379, 0, None, None)),
        ("redis://h:7000", ("redis", "h", 7000, 0, None, None)),
        ("redis://h:7000/5", ("redis", "h", 7000, 5, None, None)),
        ("redis://pw@h:7000/5", ("redis", "h", 7000, 5, None, "pw")),
        ("redis://:pw@h/2", ("redis", "h", 6379, 2, None, "pw")),
        ("redis://alice:pw@h:7000/1", ("redis", "h", 7000, 1, "alice", "pw")),
        ("redis://alice:p%40ss%2Fw@h", ("redis", "h", 6379, 0, "alice", "p@ss/w")),
        ("redis://alice:p@ss@h", ("redis", "h", 6379, 0, "alice", "p@ss")),
        ("rediss://alice:pw@tls.example.com:6380/0",
         ("rediss", "tls.example.com", 6380, 0, "alice", "pw")),
        ("REDIS://H:1/1", ("redis", "h", 1, 1, None, None)),
        ("redis://127.0.0.1:6390/15", ("redis", "127.0.0.1", 6390, 15, None, None)),
        ("redis://[::1]:6390/2", ("redis", "::1", 6390, 2, None, None)),
    ],
)
def test_redis_url_forms(text: str, expected: tuple[object, ...]) -> None:
    url = parse_url(text)
    assert (url.scheme, url.host, url.port, url.db, url.username, url.password) == expected
    assert url.is_redis


def test_unix_socket_url() -> None:
    url = parse_url("unix://:pw@/var/run/redis.sock?db=4")
    assert url.scheme == "unix"
    assert url.path == "/var/run/redis.sock"
    assert url.db == 4
    assert url.password == "pw"
    assert url.is_redis
    assert parse_url("unix:///tmp/r.sock").db == 0


def test_sqlite_url_relative_and_absolute() -> None:
    assert parse_url("sqlite:///rel/difo.db").path == "rel/difo.db"
    assert parse_url("sqlite:////abs/difo.db").path == "/abs/difo.db"
    assert not parse_url("sqlite:///x.db").is_redis


def test_difo_url_wins_over_redis_url_and_the_flag_wins_over_both() -> None:
    env = {"REDIS_URL": "redis://from-redis-url/1", "DIFO_URL": "redis://from-difo-url/2"}
    assert load(env).url == "redis://from-difo-url/2"
    assert load({"REDIS_URL": "redis://from-redis-url/1"}).url == "redis://from-redis-url/1"
    assert load(env, url="redis://from-flag/3").url == "redis://from-flag/3"
    # An empty DIFO_URL is "not set", as an unset variable.
    assert load({"DIFO_URL": "", "REDIS_URL": "redis://r/1"}).url == "redis://r/1"


def test_flags_override_the_environment_and_none_means_not_given() -> None:
    env = {"WORKERS": "4", "QUEUES": "a b", "DIFO_TIMEOUT": "3"}
    settings = load(env, workers=7, queues="x:2 y", timeout=None, url=None)
    assert settings.workers == 7
    assert settings.queues == (QueueSpec("x", 2), QueueSpec("y", 1))
    assert settings.weighted is True
    assert settings.timeout == 3.0
    assert settings.url == config.DEFAULT_URL


@pytest.mark.parametrize(
    ("text", "setting_words"),
    [
        ("http://host:6379/0", "scheme"),
        ("localhost:6379", "scheme"),
        ("redis://", "host"),
        ("redis://h/abc", "database"),
        ("redis://h/-1", "database"),
        ("redis://h/0/1", "database"),
        ("redis://h/\u00b2", "database"),
        ("redis://h:port/0", "parse"),
        ("redis://h:99999/0", "parse"),
        ("redis://[::1/0", "parse"),
        ("unix://", "socket"),
        ("sqlite://", "file"),
    ],
)
def test_bad_urls_raise_config_error_naming_the_setting(text: str, setting_words: str) -> None:
    for variable in ("REDIS_URL", "DIFO_URL"):
        with pytest.raises(ConfigError) as caught:
            load({variable: text})
        message = str(caught.value)
        assert message.startswith(variable), message
        assert setting_words in message
        assert "\n" not in message


def test_a_bad_url_flag_is_refused() -> None:
    with pytest.raises(ConfigError, match="scheme"):
        load({}, url="memcached://h")


# -- masking -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "secret", "kept"),
    [
        ("redis://s3cretpw@h:6379/0", "s3cretpw", "h:6379/0"),
        ("redis://:s3cretpw@h/0", "s3cretpw", "h/0"),
        ("redis://alice:s3cretpw@h:1/2", "s3cretpw", "alice"),
        ("rediss://alice:s3cretpw@h:6380", "s3cretpw", "h:6380"),
        ("unix://:s3cretpw@/tmp/r.sock?db=1", "s3cretpw", "/tmp/r.sock"),
        ("redis://alice:s3c@retpw@h/0", "retpw", "h/0"),
        ("redis://alice:s3c/retpw@h/0", "s3c", "h/0"),
        ("redis://:s3c/retpw@h:6379/0", "s3c", "h:6379/0"),
        ("redis://alice:s3c?retpw@h/0", "s3c", "h/0"),
        ("redis://s3c#retpw@h", "s3c", "h"),
    ],
)
def test_mask_url_never_shows_the_password(text: str, secret: str, kept: str) -> None:
    masked = mask_url(text)
    assert secret not in masked
    assert "***" in masked
    assert kept in masked
    # Nor does any error about the URL, whatever part of it is wrong.
    try:
        parsed = parse_url(text)
    except ConfigError as exc:
        assert secret not in str(exc)
    else:
        assert secret not in parsed.masked
        assert secret not in repr(parsed)


def test_mask_url_leaves_urls_without_a_password_alone() -> None:
    for text in ("redis://h:6379/0", "sqlite:///a@b.db", "unix:///tmp/r.sock", "rediss://h"):
        assert mask_url(text) == text


def test_a_password_with_an_unencoded_slash_or_hash_is_not_read_as_the_host() -> None:
    for text in ("redis://s3c#retpw@realhost/0", "redis://alice:s3c/retpw@realhost"):
        with pytest.raises(ConfigError, match="percent-encode"):
            parse_url(text)


# -- workers and queues ------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["abc", "1.5", "", " ", "ten"])
def test_workers_must_be_a_whole_number(value: str) -> None:
    with pytest.raises(ConfigError, match=r"^WORKERS=") as caught:
        load({"WORKERS": value})
    assert "whole number" in str(caught.value)


@pytest.mark.parametrize("value", ["0", "-3"])
def test_workers_must_be_at_least_one(value: str) -> None:
    with pytest.raises(ConfigError, match=r"^WORKERS=") as caught:
        load({"WORKERS": value})
    assert "at least 1" in str(caught.value)


def test_workers_flag_zero_is_refused_too() -> None:
    with pytest.raises(ConfigError, match="WORKERS"):
        load({}, workers=0)


def test_weighted_queues() -> None:
    specs, weighted = parse_queues("critical:3 default:1")
    assert specs == (QueueSpec("critical", 3), QueueSpec("default", 1))
    assert weighted is True
    settings = load({"QUEUES": "critical:3 default:1"})
    assert settings.weighted is True
    assert settings.queue_names == ("critical", "default")


def test_any_weight_makes_the_whole_list_weighted() -> None:
    specs, weighted = parse_queues("critical:5 default")
    assert specs == (QueueSpec("critical", 5), QueueSpec("default", 1))
    assert weighted is True


def test_queue_names_may_contain_colons() -> None:
    specs, weighted = parse_queues("a:b")
    assert specs == (QueueSpec("a:b", 1),)
    assert weighted is False
    specs, weighted = parse_queues("a:b:2 c")
    assert specs == (QueueSpec("a:b", 2), QueueSpec("c", 1))
    assert weighted is True
    specs, weighted = parse_queues("mail:v2:bulk low")
    assert [spec.name for spec in specs] == ["mail:v2:bulk", "low"]
    assert weighted is False


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("bad/name", "not a queue name"),
        ("sp*ce", "not a queue name"),
        ("ünï", "not a queue name"),
        ("a a", "twice"),
        ("a:1 a:2", "twice"),
        ("a:0", "weight"),
    ],
)
def test_bad_queues_raise_config_error_naming_queues(value: str, words: str) -> None:
    with pytest.raises(ConfigError, match=r"^QUEUES") as caught:
        load({"QUEUES": value})
    assert words in str(caught.value)


def test_bad_queues_flag_names_the_flag() -> None:
    with pytest.raises(ConfigError, match=r"^--queues"):
        load({}, queues="bad/name")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DIFO_TIMEOUT", "soon"),
        ("DIFO_TIMEOUT", "-1"),
        ("DIFO_TIMEOUT", "nan"),
        ("DIFO_UNIT_TIMEOUT", "0"),
        ("DIFO_LOG_FORMAT", "xml"),
        ("DIFO_LOG_LEVEL", "chatty"),
        ("DIFO_PREFETCH", "-1"),
        ("DIFO_HEARTBEAT", "inf"),
    ],
)
def test_bad_difo_settings_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load({name: value})
    assert str(caught.value).startswith(f"{name}=")


def test_dead_after_must_leave_room_for_two_beats() -> None:
    with pytest.raises(ConfigError, match="DIFO_DEAD_AFTER"):
        load({"DIFO_HEARTBEAT": "10", "DIFO_DEAD_AFTER": "15"})
    assert load({"DIFO_HEARTBEAT": "5", "DIFO_DEAD_AFTER": "10"}).dead_after == 10.0


def test_settings_are_frozen() -> None:
    settings = load({})
    with pytest.raises(AttributeError):
        settings.workers = 3  # type: ignore[misc]
