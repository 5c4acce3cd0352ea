"""Names <-> callables: `"module:qualname"` for the client, the allow rule for the server.

A payload never makes a server import anything outside what it was told to import: a unit
may call a function registered with `@difo.job`, or a module-level function defined in a
module under one of the server's `--import` packages. Anything else is refused, which is
what keeps a writable Redis from becoming remote code execution.
"""

from __future__ import annotations

import importlib
import inspect
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

from difo.errors import DifoError, FunctionError, UnitRefused

_registered: dict[str, Callable[..., Any]] = {}
_lock = threading.Lock()


class FunctionMissing(DifoError):
    """An allowed module has no such function (yet): during a rolling deploy, retry later."""


def name_of(fn: Callable[..., Any]) -> str:
    """The `module:qualname` a server will look `fn` up by; refuse what it could not find."""
    name = getattr(fn, "difo_name", None)
    if isinstance(name, str):
        return name
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str):
        raise FunctionError(f"{fn!r} has no module and name; enqueue a module-level function")
    if "." in qualname or "<" in qualname:
        raise FunctionError(
            f"{module}.{qualname} is not a module-level function (a method, lambda or nested "
            "function); a server can only find functions defined at the top of a module"
        )
    if not inspect.isfunction(fn):
        # A builtin, class or callable object: the server's allow rule would refuse it.
        raise FunctionError(
            f"{module}:{qualname} is not a Python function (a builtin, class or callable "
            "object); a server only runs functions defined at the top of a module"
        )
    if module == "__main__":
        raise FunctionError(
            f"{qualname} is defined in __main__, which a server cannot import; "
            "move it into a module and start the server with --import that module"
        )
    return f"{module}:{qualname}"


def register(fn: Callable[..., Any], name: str | None = None) -> str:
    """Allow `fn` to run by name in this process (what `@difo.job` does)."""
    key = name or name_of(fn)
    with _lock:
        _registered[key] = fn
    return key


def registered() -> dict[str, Callable[..., Any]]:
    """A copy of the functions registered in this process, by name."""
    with _lock:
        return dict(_registered)


def parameter_names(fn: Callable[..., Any]) -> tuple[str, ...]:
    """Positional parameter names, for error messages; () when they cannot be read."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return ()
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return tuple(p.name for p in signature.parameters.values() if p.kind in kinds)


class Resolver:
    """The server side: class name -> callable, under the allow rule. Thread-safe."""

    def __init__(self, imports: Iterable[str] = ()) -> None:
        self.imports = tuple(imports)
        self._cache: dict[str, Callable[..., Any]] = {}

    def import_all(self) -> None:
        """Import the server's modules so their `@difo.job` functions register."""
        for module in self.imports:
            importlib.import_module(module)

    def resolve(self, class_name: str) -> Callable[..., Any]:
        """The callable for `class_name`; UnitRefused (never retried) or FunctionMissing."""
        fn = self._cache.get(class_name)
        if fn is None:
            fn = self._find(class_name)
            self._cache[class_name] = fn
        return fn

    def cached(self, class_name: str) -> Callable[..., Any] | None:
        """The callable already resolved for `class_name`, if any (no import, no check)."""
        return self._cache.get(class_name)

    def _find(self, class_name: str) -> Callable[..., Any]:
        with _lock:
            known = _registered.get(class_name)
        if known is not None:
            return known
        module_name, sep, qualname = class_name.partition(":")
        if not sep or not module_name or not qualname:
            raise UnitRefused(
                f"{class_name!r} is not a difo function name (module:function); "
                "was it enqueued by a Ruby worker class meant for a Ruby server?"
            )
        if not all(part.isidentifier() for part in module_name.split(".")):
            raise UnitRefused(f"{class_name} is not allowed: {module_name!r} is not a module name")
        if not self._allowed(module_name):
            allowed = ", ".join(self.imports) or "none"
            raise UnitRefused(
                f"{class_name} is not allowed: module {module_name!r} is not under the "
                f"server's imports ({allowed}) and the function is not registered with "
                f"@difo.job; start the server with --import {module_name} (or its package) "
                "to allow it"
            )
        if not qualname.isidentifier() or qualname.startswith("__"):
            raise UnitRefused(f"{class_name} is not allowed: {qualname!r} is not a function name")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            plain = _plain_module_above(module_name)
            if plain is not None:
                raise UnitRefused(
                    f"{class_name} is not allowed: {plain} is a module, not a package, so "
                    f"{module_name} cannot exist"
                ) from None
            raise FunctionMissing(f"{class_name}: cannot import {module_name}: {exc}") from None
        fn = vars(module).get(qualname)
        if fn is None:
            raise FunctionMissing(f"{class_name}: module {module_name} has no {qualname!r}")
        with _lock:
            registered_here = _registered.get(class_name) is fn
        if registered_here:
            return fn  # type: ignore[no-any-return]
        if not inspect.isfunction(fn) or fn.__module__ != module_name:
            raise UnitRefused(
                f"{class_name} is not allowed: {qualname!r} in {module_name} is not a function "
                "defined in that module"
            )
        return fn

    def _allowed(self, module_name: str) -> bool:
        return any(module_name == m or module_name.startswith(m + ".") for m in self.imports)


def _plain_module_above(module_name: str) -> str | None:
    """The imported module (not a package) that `module_name` claims to live in, if any."""
    parts = module_name.split(".")
    for end in range(len(parts) - 1, 0, -1):
        parent = sys.modules.get(".".join(parts[:end]))
        if parent is not None:
            return None if hasattr(parent, "__path__") else parent.__name__
    return None
