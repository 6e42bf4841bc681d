"""Opaque pagination cursors: a position in arrival order, (file, id).

Results are paged newest-arrival first. New results always arrive above every
page already handed out (a higher id in the newest file), so a cursor that
names the last row seen is stable while ingest continues: nothing shows twice
and nothing is skipped. The text is base64url JSON so clients treat it as
opaque; a cursor that does not decode is a 400, never a 500.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass


class BadCursor(ValueError):
    """The cursor was not made by this service."""


@dataclass(frozen=True, slots=True)
class Position:
    """The last row a page showed: its file (a name, or "" for a backend without
    files) and its id within that file."""

    file: str
    id: int


def encode(position: Position) -> str:
    raw = json.dumps([position.file, position.id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(text: str) -> Position:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        value = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise BadCursor("cursor is not one this service handed out") from None
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not isinstance(value[0], str)
        or not isinstance(value[1], int)
        or isinstance(value[1], bool)
        or value[1] < 0
    ):
        raise BadCursor("cursor is not one this service handed out")
    return Position(value[0], value[1])
