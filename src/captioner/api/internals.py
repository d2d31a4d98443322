"""Check, at start-up, that uvicorn still has the private parts the server builds on.

:mod:`captioner.api.protocol` and :mod:`captioner.api.server` subclass uvicorn classes and
use attributes that are not uvicorn's public API (``pyproject.toml`` bounds uvicorn below
its next minor release for that reason). A release that renamed one would not fail
loudly: setting an attribute that no longer exists creates a new one that nothing reads,
so a deadline would silently stop holding. So ``captioner serve`` checks first, and falls
back to uvicorn's own classes with a warning that names what is missing and what no
longer holds.

Methods and class attributes are looked up on the class; an instance attribute is found
among the names its ``__init__`` assigns (its code's ``co_names``), which is where uvicorn
sets them all, without building an instance (that would load an app).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["Needs", "missing"]


@dataclass(frozen=True)
class Needs:
    """What one class must offer.

    Attributes:
        owner: The class.
        methods: Methods (or class attributes) it must have.
        attributes: Instance attributes its ``__init__`` must assign.
        parameters: Parameters its ``__init__`` must take.
    """

    owner: type
    methods: tuple[str, ...] = ()
    attributes: tuple[str, ...] = ()
    parameters: tuple[str, ...] = ()


def missing(needs: Iterable[Needs]) -> list[str]:
    """Every need not met, as ``Class.name`` (empty when all are there)."""
    absent: list[str] = []
    for need in needs:
        owner = need.owner
        init = inspect.getattr_static(owner, "__init__")
        code = getattr(init, "__code__", None)  # None: object's own, in C
        assigned = set(code.co_names) if code is not None else set()
        parameters = set(inspect.signature(owner).parameters) if code is not None else set()
        absent += [f"{owner.__name__}.{name}" for name in need.methods if not hasattr(owner, name)]
        absent += [
            f"{owner.__name__}.{name}"
            for name in need.attributes
            if name not in assigned and not hasattr(owner, name)
        ]
        absent += [
            f"{owner.__name__}.__init__({name})"
            for name in need.parameters
            if name not in parameters
        ]
    return absent
