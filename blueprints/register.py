"""Registering functions on a blueprint without losing their types: the one place every
blueprint registers through.

The Functions SDK's decorators are untyped and replace the function with a builder object.
:func:`bind` applies them to a builder and hands back the function itself, so the module keeps
a plain, typed callable (tests call it directly) while the blueprint holds the registration.
:func:`http_function` is ``bind`` for an HTTP route, so every endpoint is declared alike
(function keys in front, one method per function, the Durable client when it needs one). The
one exception is the console's route: a browser carries no function key (App Service
Authentication is in front instead), and a page and its form share a URL (GET and POST).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import azure.durable_functions as df  # type: ignore[import-untyped, unused-ignore]
import azure.functions as func

_F = TypeVar("_F", bound=Callable[..., Any])

AUTH_LEVEL = func.AuthLevel.FUNCTION
"""Function keys in front of every HTTP function; App Service Authentication's principal says
who is calling (:mod:`blueprints.auth`)."""


def bind(*decorators: Any) -> Callable[[_F], _F]:
    """Apply ``decorators`` as if stacked in this order above the function (the last one is
    applied first, as Python applies stacked decorators)."""

    def register(fn: _F) -> _F:
        builder: Any = fn
        for decorator in reversed(decorators):
            builder = decorator(builder)
        return fn

    return register


def http_function(
    bp: Any,
    route: str,
    method: str | tuple[str, ...],
    *,
    name: str | None = None,
    durable_client: bool = False,
    auth_level: func.AuthLevel = AUTH_LEVEL,
) -> Callable[[_F], _F]:
    """Register the function on ``bp`` as ``method /api/<route>`` (or each of a tuple of
    methods), named ``name`` (default: the Python function's name); ``durable_client`` passes
    the Durable client as ``client``; ``auth_level`` only for the console's route."""
    methods = [method] if isinstance(method, str) else list(method)

    def register(fn: _F) -> _F:
        decorators = [
            bp.function_name(name or fn.__name__),
            bp.route(route=route, methods=methods, auth_level=auth_level),
        ]
        if durable_client:
            decorators.append(bp.durable_client_input(client_name="client"))
        return bind(*decorators)(fn)

    return register


def new_app() -> Any:
    """The Functions app object (Durable-aware, function keys in front): built here so that
    ``function_app.py`` only registers blueprints and imports no SDK itself."""
    return df.DFApp(http_auth_level=AUTH_LEVEL)
