"""The schema of what a frontend sends on the ``tactus`` comm.

A frontend is outside code: its open data and its messages are checked
here, field by field, before the kernel acts on them, so a string
``"false"`` is never read as a true ``replay`` and an open whose data is
not an object does not count as a connected extension. Bad input becomes a
:class:`CommInputError` naming the field; notebook_host.py turns it into a
``warning`` op and a log line, never an exception out of a comm handler.
The models are built on first use (pydantic costs start-up time).
"""

from __future__ import annotations

import functools
from typing import Any


class CommInputError(ValueError):
    """Open data or a message on the ``tactus`` comm that the kernel refuses."""


@functools.cache
def _models() -> tuple[Any, Any]:
    from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr

    class ClientOptions(BaseModel):
        """The open data: the notebook's metadata and the client's options.
        Options this kernel does not know are ignored (a newer client)."""

        model_config = ConfigDict(extra="allow")
        tactus: Any = None  # checked by checkpoints.parse_metadata, which names the bad field
        replay: StrictBool = False
        allow_divergence: StrictBool = False
        strict: StrictBool = False  # a call with no record is an error (replay --strict)
        answers: dict[StrictStr, Any] = Field(default_factory=dict)
        procedure_params: dict[StrictStr, dict[StrictStr, Any]] = Field(default_factory=dict)

    class ResetOp(BaseModel):
        """``{"op": "reset", "procedures": [KEY, ...]}``; no list: all. Other
        fields (a newer frontend's, such as ``from``) are kept for whoever reads them."""

        model_config = ConfigDict(extra="allow")
        procedures: list[StrictStr] | None = None

    return ClientOptions, ResetOp


def _first_error(exc: Any, root: str) -> str:
    first = exc.errors()[0]
    where = ".".join([root, *(str(p) for p in first["loc"])]) if first["loc"] else root
    return f"{where}: {first['msg']} (found {first.get('input')!r:.60})"


def parse_open(data: Any) -> dict[str, Any]:
    """The open data, checked: the fields it set (``tactus`` included).
    Raises CommInputError naming the first bad field."""
    from pydantic import ValidationError

    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise CommInputError(f"the comm's open data must be an object, found {type(data).__name__} {data!r:.60}")
    options_model, _ = _models()
    try:
        parsed = options_model.model_validate(data)
    except ValidationError as exc:
        raise CommInputError(f"the comm's open data: {_first_error(exc, 'data')}") from None
    return dict(parsed.model_dump(exclude_unset=True))


def parse_op(data: Any) -> dict[str, Any] | None:
    """A message from the frontend, checked; None for an op this kernel
    does not know (ignored, as the protocol says). Raises CommInputError."""
    from pydantic import ValidationError

    if not isinstance(data, dict):
        raise CommInputError(f"a comm message must be an object, found {type(data).__name__} {data!r:.60}")
    if data.get("op") != "reset":
        return None
    _, reset_model = _models()
    try:
        parsed = reset_model.model_validate(data)
    except ValidationError as exc:
        raise CommInputError(f"reset needs a list of procedure names: {_first_error(exc, 'reset')}") from None
    return dict(parsed.model_dump())
