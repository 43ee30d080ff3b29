"""The app's registered functions, built once per process.

``function_app.app.get_functions()`` may be called only once per process (a second call
raises a duplicate-name error), so every test that needs a registered function goes through
:func:`registered`.
"""

from __future__ import annotations

import functools
from typing import Any


@functools.cache
def registered() -> dict[str, Any]:
    """Function name → ``azure.functions`` Function object, for the whole app."""
    import function_app

    return {f.get_function_name(): f for f in function_app.app.get_functions()}


def user_function(name: str) -> Any:
    """What the worker calls for function ``name``."""
    return registered()[name].get_user_function()
