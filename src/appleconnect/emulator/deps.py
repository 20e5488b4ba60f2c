"""FastAPI dependencies: the parts of one emulator, taken from ``request.app.state``.

``create_emulator_app`` puts them there; the module-level routers reach them through these, so
that every route is an ordinary function that can be read and imported alone.
"""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, Request

from .faults import FaultInjector
from .notifications import Notifier
from .pages import Pages
from .state import EmulatorState


def state_of(request: Request) -> EmulatorState:
    """The emulator's :class:`EmulatorState` (``app.state.emulator``)."""
    return cast(EmulatorState, request.app.state.emulator)


async def get_state(request: Request) -> EmulatorState:
    """:func:`state_of` as a dependency (a coroutine: no hop to the thread pool)."""
    return state_of(request)


async def get_notifier(request: Request) -> Notifier:
    """The emulator's :class:`Notifier` (``app.state.notifier``)."""
    return cast(Notifier, request.app.state.notifier)


async def get_faults(request: Request) -> FaultInjector:
    """The emulator's :class:`FaultInjector` (``app.state.faults``)."""
    return cast(FaultInjector, request.app.state.faults)


async def get_pages(request: Request) -> Pages:
    """The emulator's page renderer (``app.state.pages``)."""
    return cast(Pages, request.app.state.pages)


async def get_base_url(request: Request) -> str:
    """Where clients reach the emulator (``app.state.base_url``), as configured."""
    return cast(str, request.app.state.base_url)


StateDep = Annotated[EmulatorState, Depends(get_state)]
NotifierDep = Annotated[Notifier, Depends(get_notifier)]
FaultsDep = Annotated[FaultInjector, Depends(get_faults)]
PagesDep = Annotated[Pages, Depends(get_pages)]
BaseUrlDep = Annotated[str, Depends(get_base_url)]
