"""Answers are read whole only when they are small: a cap on the bytes that arrive and on what
they decompress to, shared by the worker's and the triggerer's clients.

A prediction envelope is a few kilobytes; a 50 MB answer or a gzip bomb is a broken or hostile
server, and reading it whole would take the worker or the whole triggerer down with it.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterable, Iterable

# Far above any envelope (a history page of 100 predictions is ~100 KB), far below harm.
MAX_ANSWER_BYTES = 4 * 2**20
# What API requests accept: we never ask for compression, so an answer that comes compressed
# anyway is decoded only up to the same cap.
ACCEPT_ENCODING = "identity"


class AnswerTooLarge(Exception):
    """The answer, or what it decompresses to, is over the cap."""


class UnsupportedEncoding(Exception):
    """The answer uses a Content-Encoding we did not ask for and do not decode."""


def _too_large(cap: int) -> AnswerTooLarge:
    return AnswerTooLarge(f"the answer is larger than {cap // 2**20} MiB; it was not read whole")


def take_capped(chunks: Iterable[bytes], cap: int = MAX_ANSWER_BYTES) -> bytes:
    """Join ``chunks`` but stop as soon as they pass ``cap`` bytes."""
    body = bytearray()
    for chunk in chunks:
        body += chunk
        if len(body) > cap:
            raise _too_large(cap)
    return bytes(body)


async def atake_capped(chunks: AsyncIterable[bytes], cap: int = MAX_ANSWER_BYTES) -> bytes:
    body = bytearray()
    async for chunk in chunks:
        body += chunk
        if len(body) > cap:
            raise _too_large(cap)
    return bytes(body)


def decode_body(raw: bytes, content_encoding: str | None, cap: int = MAX_ANSWER_BYTES) -> bytes:
    """Undo gzip/deflate without ever producing more than ``cap`` bytes."""
    encoding = (content_encoding or "").strip().lower()
    if encoding in ("", "identity"):
        return raw
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise UnsupportedEncoding(f"the answer is {encoding!r}-encoded, which was not asked for")
    # 32 + 15: zlib or gzip header, detected; a bare deflate stream needs -15.
    for wbits in (47, -15):
        decoder = zlib.decompressobj(wbits)
        try:
            decoded = decoder.decompress(raw, cap + 1)
        except zlib.error:
            continue
        if len(decoded) > cap or decoder.unconsumed_tail:
            raise _too_large(cap)
        return decoded
    raise UnsupportedEncoding(f"the answer claims {encoding!r} encoding but does not decode")
