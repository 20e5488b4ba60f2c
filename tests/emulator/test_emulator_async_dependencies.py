"""Every dependency of the emulator's routes is a coroutine function: FastAPI runs a plain
``def`` dependency in its thread pool, a thread hop per dependency per request, which cost more
than the rest of a control-API call together (benchmarks/plugin.py)."""

from __future__ import annotations

import inspect
import typing

from fastapi.params import Depends

from appleconnect.emulator import deps


def test_the_emulators_dependencies_are_coroutine_functions() -> None:
    calls = {
        name: meta.dependency
        for name, alias in vars(deps).items()
        if typing.get_origin(alias) is typing.Annotated
        for meta in alias.__metadata__
        if isinstance(meta, Depends)
    }
    assert set(calls) >= {"StateDep", "NotifierDep", "FaultsDep", "PagesDep", "BaseUrlDep"}
    synchronous = sorted(n for n, call in calls.items() if not inspect.iscoroutinefunction(call))
    assert synchronous == []
