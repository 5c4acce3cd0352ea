"""difo.testing: `inline()` runs units at once in the caller, `fake()` records them for
`drain()`; both check arguments exactly as a real enqueue does and touch no store.

The unit functions are defined here (module level, as a server would need them); they report
into `calls`, emptied before each test.
"""

from __future__ import annotations

import datetime
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import difo
from difo import client as client_module
from difo import testing

calls: list[tuple[str, Any]] = []


def remember(*args: Any) -> None:
    calls.append(("remember", list(args)))


def mutate(values: list[int], options: dict[str, Any]) -> None:
    """Changes what it was given: the caller's objects must not change."""
    values.append(99)
    options["changed"] = True
    calls.append(("mutate", [values, options]))


def explode(message: str) -> None:
    calls.append(("explode", message))
    raise ValueError(message)


def fan_out(count: int) -> None:
    calls.append(("fan_out", count))
    for i in range(count):
        difo.perform(remember, "child", i)


def whoami() -> None:
    current = difo.current()
    assert current is not None
    calls.append(("whoami", [current.jid, current.queue, current.args]))


@difo.job(queue="mail", retry=3)
def send_welcome(user_id: int) -> None:
    calls.append(("send_welcome", user_id))


@pytest.fixture(autouse=True)
def no_store(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """A default client that would fail if used: neither mode may touch a store."""
    calls.clear()
    monkeypatch.setenv("DIFO_URL", f"sqlite:///{tmp_path}/never/created.db")
    monkeypatch.setattr(client_module, "_default", None)
    yield
    assert not (tmp_path / "never").exists()


BAD_ARGUMENTS = [
    ((1, (2, 3)), "argument 2 is a tuple"),
    ((datetime.datetime(2024, 1, 1),), "is a datetime"),
    (({"since": Decimal("1.5")},), "Decimal"),
    (({1: "int key"},), "key"),
    ((float("nan"),), "nan|finite"),
    (({"a": {1, 2}},), "set"),
]


# -- inline ------------------------------------------------------------------------------------


def test_inline_runs_at_once_in_the_caller() -> None:
    with testing.inline():
        jid = difo.perform(remember, 1, "two", {"three": [3.0]})
        assert calls == [("remember", [1, "two", {"three": [3.0]}])]  # before perform returns
        difo.perform_on("other", remember, "on")
        difo.perform_in(3600, remember, "later")  # scheduled ones run at once too
        difo.perform_bulk(remember, [["bulk", 1], ["bulk", 2]])
        send_welcome.perform(7)
        where_thread = threading.current_thread().name
    assert isinstance(jid, str) and len(jid) == 24
    assert calls[1:] == [("remember", ["on"]), ("remember", ["later"]),
                         ("remember", ["bulk", 1]), ("remember", ["bulk", 2]),
                         ("send_welcome", 7)]
    assert where_thread == threading.current_thread().name


def test_inline_raises_what_the_unit_raises() -> None:
    with testing.inline(), pytest.raises(ValueError, match="boom"):
        difo.perform(explode, "boom")
    assert calls == [("explode", "boom")]


def test_inline_gives_arguments_after_a_json_round_trip() -> None:
    values, options = [1, 2], {"nested": {"a": None, "b": True}}
    with testing.inline():
        difo.perform(mutate, values, options)
    [(_, (got_values, got_options))] = calls
    assert got_values == [1, 2, 99] and got_options["changed"] is True
    assert values == [1, 2] and options == {"nested": {"a": None, "b": True}}  # untouched


def test_inline_gives_the_unit_its_context() -> None:
    with testing.inline():
        jid = difo.perform_on("ctx", whoami)
    assert calls == [("whoami", [jid, "ctx", []])]
    assert difo.current() is None  # outside a unit again


def test_units_enqueued_by_an_inline_unit_run_at_once_too() -> None:
    with testing.inline():
        difo.perform(fan_out, 2)
    assert calls == [("fan_out", 2), ("remember", ["child", 0]), ("remember", ["child", 1])]


def real_refusal(args: tuple[Any, ...]) -> str:
    """What a real client says about these arguments (it refuses before opening its store)."""
    with pytest.raises(difo.ArgumentError) as refused:
        client_module.Client("sqlite:///never/opened.db").push(remember, args)
    return str(refused.value)


@pytest.mark.parametrize(("args", "message"), BAD_ARGUMENTS)
def test_inline_refuses_bad_arguments_as_a_real_enqueue_does(
    args: tuple[Any, ...], message: str
) -> None:
    with testing.inline(), pytest.raises(difo.ArgumentError, match=message) as refused:
        difo.perform(remember, *args)
    assert str(refused.value) == real_refusal(args)
    assert calls == []


def test_inline_refuses_what_a_server_could_not_find() -> None:
    def nested() -> None:
        pass

    with testing.inline(), pytest.raises(difo.FunctionError, match="not a module-level"):
        difo.perform(nested)


def test_the_previous_client_is_back_after_the_block() -> None:
    before = client_module._default
    with testing.inline():
        assert client_module._default is not before
    assert client_module._default is before
    with pytest.raises(ValueError), testing.fake():
        raise ValueError("leaves the block")
    assert client_module._default is before


# -- fake --------------------------------------------------------------------------------------


def test_fake_records_units_without_running_them() -> None:
    with testing.fake() as units:
        jid = difo.perform(remember, 1, [2])
        difo.perform_on("other", remember, "x")
        at = difo.perform_in(60, remember, "later")
        send_welcome.perform(42)
        difo.perform_bulk(remember, [["b", 1], ["b", 2]])
    assert calls == []
    assert len(units) == 6
    first = units.jobs[0]
    assert (first["jid"], first["class"], first["args"], first["queue"]) == (
        jid, "tests.test_testing:remember", [1, [2]], "default")
    assert first["retry"] is True and "enqueued_at" in first
    assert units.jobs[1]["queue"] == "other"
    scheduled = units.jobs[2]
    assert scheduled["jid"] == at and scheduled["at"] > scheduled["created_at"] + 59
    welcome = units.for_function(send_welcome)
    assert [(j["queue"], j["args"], j["retry"]) for j in welcome] == [("mail", [42], 3)]
    assert len(units.for_function("tests.test_testing:remember")) == 5


def test_drain_runs_in_order_with_units_enqueued_during_the_drain() -> None:
    with testing.fake() as units:
        difo.perform(remember, "first")
        difo.perform(fan_out, 2)
        difo.perform(remember, "last")
        assert units.drain() == 5
        assert units.jobs == []
    # Units enqueued during the drain join the end of the line, as on a real queue.
    assert calls == [("remember", ["first"]), ("fan_out", 2), ("remember", ["last"]),
                     ("remember", ["child", 0]), ("remember", ["child", 1])]


def test_drain_after_the_block_still_records_what_units_enqueue() -> None:
    with testing.fake() as units:
        difo.perform(fan_out, 1)
    assert units.drain() == 2  # the child went into the fake, not to a store
    assert calls == [("fan_out", 1), ("remember", ["child", 0])]


def test_drain_stops_at_a_failing_unit_and_keeps_the_rest() -> None:
    with testing.fake() as units:
        difo.perform(remember, 1)
        difo.perform(explode, "bad")
        difo.perform(remember, 2)
        with pytest.raises(ValueError, match="bad"):
            units.drain()
        assert [job["args"] for job in units.jobs] == [[2]]
        assert units.drain() == 1
    assert calls == [("remember", [1]), ("explode", "bad"), ("remember", [2])]


def test_drain_gives_arguments_after_a_json_round_trip_and_the_context() -> None:
    values: list[int] = [1]
    with testing.fake() as units:
        jid = difo.perform_on("ctx", whoami)
        difo.perform(mutate, values, {})
        units.drain()
    assert calls[0] == ("whoami", [jid, "ctx", []])
    assert values == [1]


def test_clear_forgets_the_recorded_units() -> None:
    with testing.fake() as units:
        difo.perform(remember, 1)
        units.clear()
        assert units.jobs == [] and len(units) == 0
        assert units.drain() == 0
    assert calls == []


@pytest.mark.parametrize(("args", "message"), BAD_ARGUMENTS)
def test_fake_refuses_bad_arguments_as_a_real_enqueue_does(
    args: tuple[Any, ...], message: str
) -> None:
    with testing.fake() as units:
        with pytest.raises(difo.ArgumentError, match=message) as refused:
            difo.perform(remember, *args)
        assert str(refused.value) == real_refusal(args)
        # In bulk, one bad item refuses the whole list: nothing is recorded.
        with pytest.raises(difo.ArgumentError, match="item 1"):
            difo.perform_bulk(remember, [["fine"], list(args)])
    assert units.jobs == []


def test_fake_records_from_other_threads_too() -> None:
    with testing.fake() as units:
        thread = threading.Thread(target=difo.perform, args=(remember, "threaded"))
        thread.start()
        thread.join()
    assert [job["args"] for job in units.jobs] == [["threaded"]]
