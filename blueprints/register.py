"""Registering functions on a blueprint without losing their types.

The Functions SDK's decorators are untyped and replace the function with a builder object. This
helper applies them to a builder and hands back the function itself, so the module keeps a
plain, typed callable (tests call it directly) while the blueprint holds the registration.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

_F = TypeVar("_F", bound=Callable[..., Any])


def bind(*decorators: Any) -> Callable[[_F], _F]:
    """Apply ``decorators`` as if stacked in this order above the function (the last one is
    applied first, as Python applies stacked decorators)."""

    def register(fn: _F) -> _F:
        builder: Any = fn
        for decorator in reversed(decorators):
            builder = decorator(builder)
        return fn

    return register


def new_app() -> Any:
    """The Functions app object (Durable-aware, function keys in front): built here so that
    ``function_app.py`` only registers blueprints and imports no SDK itself."""
    import azure.durable_functions as df  # type: ignore[import-untyped, unused-ignore]
    import azure.functions as func

    return df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)
