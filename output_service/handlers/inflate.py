"""Inflating gzip and deflate request bodies ourselves, chunk by chunk as they arrive.

aiohttp could do it (auto_decompress), but its parser answers a body that does not
inflate with a plain-text 400 before any handler runs, and a truncated stream can
leave its reader waiting until the read timeout. Here each such body gets a JSON 400
naming its encoding, and the output is bounded: one zlib call yields at most PIECE
bytes and never more than one byte past the limit, so a gzip bomb costs about the
limit in memory and stops there.
"""

from __future__ import annotations

import zlib

PIECE = 256 * 1024
GZIP_MAGIC = b"\x1f\x8b"
GZIP_WBITS = 16 + zlib.MAX_WBITS  # gzip header and trailer only, no auto-detection
# Content-Encoding -> the format we inflate it as
ENCODINGS = {"gzip": "gzip", "x-gzip": "gzip", "deflate": "deflate"}


class BodyTooLargeError(Exception):
    """`reason` is "body_too_large" (as sent) or "inflated_too_large" (after inflating)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BadEncodingError(Exception):
    """The body does not inflate as its Content-Encoding says; the message is for the client."""

    def __init__(self, encoding: str, message: str) -> None:
        super().__init__(message)
        self.encoding = encoding


def _deflate_wbits(first: int) -> int:
    """`deflate` is a zlib stream by RFC 9110 (Go's compress/zlib), but Go's
    compress/flate and some browsers send raw deflate: take a first byte that is a
    zlib header (method 8, window at most 32 KiB) as zlib, anything else as raw.
    A raw stream starting like that would need a stored block with non-zero padding
    bits, which encoders do not write."""
    is_zlib = first & 0x0F == 8 and first >> 4 <= 7
    return zlib.MAX_WBITS if is_zlib else -zlib.MAX_WBITS


class Inflater:
    """Feed the compressed chunks in order, then `finish()` returns the body.

    Raises BodyTooLargeError("inflated_too_large") as soon as the output passes
    `limit`, and BadEncodingError for a corrupt stream, bytes after its end, or (in
    finish) a stream that stops before its end. Concatenated gzip members are one
    body, as for Go's gzip.Reader.
    """

    def __init__(self, encoding: str, limit: int) -> None:
        self.encoding = ENCODINGS[encoding]
        self._limit = limit
        self._size = 0
        self._parts: list[bytes] = []
        self._stream: zlib._Decompress | None = None

    def feed(self, data: bytes) -> None:
        while data:
            stream = self._stream
            if stream is None or stream.eof:
                stream = self._stream = self._next_stream(data)
            try:
                while True:
                    room = min(PIECE, self._limit + 1 - self._size)
                    out = stream.decompress(data, room)
                    self._size += len(out)
                    if self._size > self._limit:
                        raise BodyTooLargeError("inflated_too_large")
                    self._parts.append(out)
                    data = stream.unconsumed_tail
                    # a full piece may leave output inside zlib even with no input left
                    if stream.eof or (not data and len(out) < room):
                        break
            except zlib.error:
                raise BadEncodingError(
                    self.encoding, f"compressed body is not valid {self.encoding}"
                ) from None
            data = stream.unused_data if stream.eof else b""

    def finish(self) -> bytes:
        if self._stream is None or not self._stream.eof:
            raise BadEncodingError(
                self.encoding,
                f"compressed body is truncated (the {self.encoding} stream does not end)",
            )
        return b"".join(self._parts)

    def _next_stream(self, data: bytes) -> zlib._Decompress:
        if self._stream is None:
            wbits = GZIP_WBITS if self.encoding == "gzip" else _deflate_wbits(data[0])
            return zlib.decompressobj(wbits)
        # the stream ended and more bytes follow: only another gzip member may
        if self.encoding == "gzip" and GZIP_MAGIC.startswith(data[:2]):
            return zlib.decompressobj(GZIP_WBITS)
        raise BadEncodingError(
            self.encoding,
            f"compressed body has bytes after the end of the {self.encoding} stream",
        )
