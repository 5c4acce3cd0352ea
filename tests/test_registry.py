"""The allow rule: what a payload's `class` may make a server call, and the names a client
may write. A payload never makes a server import a module it was not told to import."""

from __future__ import annotations

import functools
import importlib
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import difo
from difo import registry
from difo.errors import FunctionError, UnitRefused
from difo.registry import FunctionMissing, Resolver
from tests import functions


@difo.job(queue="mail")
def registered_here(user_id: int) -> int:
    return user_id * 2


@difo.job(name="billing.v2:charge")
def renamed(amount: int) -> int:
    return amount


def plain_function(a: int, b: int = 2, *rest: int, key: int = 0) -> int:
    return a + b


class Service:
    def method(self) -> None:
        pass

    @staticmethod
    def static() -> None:
        pass

    @classmethod
    def klass(cls) -> None:
        pass

    def __call__(self) -> None:
        pass


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh importable package (and a hostile module beside it) on sys.path."""
    name = f"difo_regtest_{uuid.uuid4().hex[:10]}"
    root = tmp_path / name
    (root / "deep").mkdir(parents=True)
    (root / "__init__.py").write_text(
        "import json\n"
        "from os.path import join\n"
        "from .sub import work as borrowed\n"
        "def local(x):\n    return ('local', x)\n"
        "async def coroutine_function():\n    return 1\n"
        "class Klass:\n    def method(self):\n        pass\n"
        "value = 3\n"
        "shout = print\n"
    )
    (root / "sub.py").write_text("def work():\n    return 'work'\n")
    (root / "deep" / "__init__.py").write_text("")
    (root / "deep" / "er.py").write_text("def leaf():\n    return 'leaf'\n")
    # Importing this module would leave a marker file: the proof that it was never imported.
    (tmp_path / f"{name}_hostile.py").write_text(
        "import pathlib\n"
        "pathlib.Path(__file__).with_suffix('.imported').write_text('imported')\n"
        "def run():\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    for module in [m for m in sys.modules if m.startswith(name)]:
        del sys.modules[module]


# -- the client side: names ------------------------------------------------------------------


def test_name_of_a_module_level_function() -> None:
    assert registry.name_of(plain_function) == "tests.test_registry:plain_function"
    assert registry.name_of(functions.record) == "tests.functions:record"


def test_name_of_a_job_is_its_registered_name() -> None:
    assert registry.name_of(registered_here) == "tests.test_registry:registered_here"
    assert registry.name_of(renamed) == "billing.v2:charge"


def _nested_function() -> Callable[[], None]:
    def inner() -> None:
        pass

    return inner


def _main_function() -> Callable[..., Any]:
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec("def script_function(x):\n    return x\n", namespace)
    function: Callable[..., Any] = namespace["script_function"]
    assert function.__module__ == "__main__"
    return function


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda: lambda x: x, "lambda"),
        (_nested_function, "nested"),
        (lambda: Service().method, "method"),
        (lambda: Service.method, "method"),
        (lambda: Service.static, "method"),
        (lambda: Service.klass, "method"),
        (_main_function, "__main__"),
        (lambda: print, "not a Python function"),
        (lambda: len, "not a Python function"),
        (lambda: Service, "not a Python function"),
        (lambda: Service(), "module-level"),
        (lambda: functools.partial(plain_function, 1), "module-level"),
    ],
)
def test_name_of_refuses_what_a_server_could_never_find(
    make: Callable[[], Callable[..., Any]], words: str
) -> None:
    with pytest.raises(FunctionError) as caught:
        registry.name_of(make())
    assert words in str(caught.value)


def test_parameter_names_are_the_positional_ones() -> None:
    assert registry.parameter_names(plain_function) == ("a", "b")
    assert registry.parameter_names(registered_here) == ("user_id",)
    assert registry.parameter_names(print) == ()


def test_job_registers_under_its_name() -> None:
    known = registry.registered()
    assert known["tests.test_registry:registered_here"] is registered_here
    assert known["billing.v2:charge"] is renamed
    assert known["tests.functions:send_welcome"] is functions.send_welcome
    assert "tests.test_registry:plain_function" not in known
    assert registered_here(21) == 42  # still callable directly


# -- the server side: the allow rule ---------------------------------------------------------


def test_registered_jobs_resolve_with_no_imports() -> None:
    resolver = Resolver(())
    assert resolver.resolve("tests.test_registry:registered_here") is registered_here
    assert resolver.resolve("billing.v2:charge") is renamed
    assert resolver.resolve("tests.functions:send_welcome") is functions.send_welcome


def test_an_unregistered_function_needs_its_module_imported() -> None:
    with pytest.raises(UnitRefused) as caught:
        Resolver(()).resolve("tests.test_registry:plain_function")
    message = str(caught.value)
    assert "--import tests" in message
    assert "not allowed" in message
    allowed = Resolver(["tests.test_registry"])
    assert allowed.resolve("tests.test_registry:plain_function") is plain_function


def test_module_level_functions_under_an_import_and_its_submodules(package: str) -> None:
    resolver = Resolver([package])
    assert resolver.resolve(f"{package}:local")(1) == ("local", 1)
    assert resolver.resolve(f"{package}.sub:work")() == "work"
    assert resolver.resolve(f"{package}.deep.er:leaf")() == "leaf"
    assert resolver.resolve(f"{package}:coroutine_function").__name__ == "coroutine_function"
    assert Resolver(["tests"]).resolve("tests.functions:record") is functions.record
    assert Resolver([f"{package}.deep"]).resolve(f"{package}.deep.er:leaf")() == "leaf"


def test_resolve_caches_what_it_found(package: str) -> None:
    resolver = Resolver([package])
    assert resolver.cached(f"{package}:local") is None
    found = resolver.resolve(f"{package}:local")
    assert resolver.cached(f"{package}:local") is found
    assert resolver.resolve(f"{package}:local") is found


@pytest.mark.parametrize(
    "name",
    [
        "os:system",
        "builtins:eval",
        "builtins:exec",
        "subprocess:run",
        "importlib:import_module",
        "pickle:loads",
        "tests:functions",
        "tests.functionsx:record",
        "tests.func:record",
        "nocolon",
        "tests.functions.record",
        "tests.functions:record.__globals__",
        "tests.functions:record:x",
        "tests.functions:",
        ":record",
        "",
        "tests.functions:__import__",
        "tests.functions:__builtins__",
        "tests.functions:__loader__",
        "tests.functions:__spec__",
        "tests.functions:__name__",
        "tests.functions:__dict__",
        "tests.functions:__getattr__",
        "tests.functions:not_a_function",
        "tests.functions:redis",
        "tests.functions:os",
        "tests.functions:json",
        "tests.functions:Any",
        "tests.functions.:record",
        "tests.functions..os:system",
        " tests.functions:record",
        "tests.functions/../os:system",
        "MyApp::Workers::SendEmail",
        "SendEmailJob",
    ],
)
def test_hostile_names_are_refused_without_importing_anything(name: str) -> None:
    resolver = Resolver(["tests.functions"])
    modules_before = set(sys.modules)
    with pytest.raises(UnitRefused):
        resolver.resolve(name)
    assert set(sys.modules) == modules_before
    assert resolver.cached(name) is None


def test_a_module_outside_the_imports_is_never_imported(package: str, tmp_path: Path) -> None:
    hostile = f"{package}_hostile"
    resolver = Resolver([package])
    for name in (f"{hostile}:run", f"{hostile}.x:run", f"{hostile}:__init__"):
        with pytest.raises(UnitRefused) as caught:
            resolver.resolve(name)
        assert hostile in str(caught.value)
    assert hostile not in sys.modules
    assert not (tmp_path / f"{hostile}.imported").exists()
    # The same module, once allowed, is imported: the marker proves the probe works.
    Resolver([hostile]).resolve(f"{hostile}:run")
    assert (tmp_path / f"{hostile}.imported").exists()


@pytest.mark.parametrize(
    ("attribute", "why"),
    [
        ("join", "imported from os.path"),
        ("borrowed", "imported from its own submodule"),
        ("json", "a module"),
        ("Klass", "a class"),
        ("value", "an int"),
        ("shout", "a builtin"),
    ],
)
def test_names_in_an_allowed_module_that_are_not_its_own_functions_are_refused(
    package: str, attribute: str, why: str
) -> None:
    resolver = Resolver([package])
    with pytest.raises(UnitRefused) as caught:
        resolver.resolve(f"{package}:{attribute}")
    assert attribute in str(caught.value), why


def test_functions_imported_into_an_allowed_difo_module_are_refused() -> None:
    # difo imports configure from difo.client; difo.config imports replace from dataclasses.
    with pytest.raises(UnitRefused):
        Resolver(["difo"]).resolve("difo:configure")
    with pytest.raises(UnitRefused):
        Resolver(["difo.config"]).resolve("difo.config:replace")
    assert Resolver(["difo"]).resolve("difo.client:configure") is difo.client.configure


def test_a_missing_function_in_an_allowed_module_is_retried_not_refused(package: str) -> None:
    resolver = Resolver([package, "tests.functions"])
    for name in (f"{package}:not_there_yet", f"{package}.new_module:handler",
                 "tests.functions:does_not_exist"):
        with pytest.raises(FunctionMissing) as caught:
            resolver.resolve(name)
        assert not isinstance(caught.value, UnitRefused)
        assert str(caught.value).startswith(name)
        assert resolver.cached(name) is None


def test_a_name_under_a_plain_module_is_refused_not_retried() -> None:
    # tests.functions is a module, not a package: tests.functions.os can never appear.
    resolver = Resolver(["tests.functions"])
    for name in ("tests.functions.os:system", "tests.functions.record.deeper:x"):
        with pytest.raises(UnitRefused, match="is a module, not a package"):
            resolver.resolve(name)


def test_a_function_that_appears_later_resolves(package: str, tmp_path: Path) -> None:
    # A rolling deploy: the server meets the unit before the module holding it exists.
    resolver = Resolver([package])
    with pytest.raises(FunctionMissing):
        resolver.resolve(f"{package}.later:handler")
    (tmp_path / package / "later.py").write_text("def handler():\n    return 'later'\n")
    importlib.invalidate_caches()
    assert resolver.resolve(f"{package}.later:handler")() == "later"


def test_import_all_imports_the_servers_modules(package: str) -> None:
    resolver = Resolver([package, f"{package}.deep.er"])
    assert f"{package}.deep.er" not in sys.modules
    resolver.import_all()
    assert package in sys.modules
    assert f"{package}.deep.er" in sys.modules
