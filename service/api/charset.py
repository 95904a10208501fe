"""The ``charset`` of a JSON body: honoured when it names a text encoding, refused (415) otherwise.

JSON is UTF-8 (RFC 8259) and the JSON parser reads bytes as UTF-8, so a body sent as
``application/json; charset=latin-1`` would be misread. :func:`json_as_utf8` decodes it with the
declared charset and hands the parser UTF-8; a charset that is unknown, or not a text encoding
(``base64``, ``rot13``), is a 415 naming the header.
"""

from __future__ import annotations

import codecs
from email.message import Message

from .errors import ProblemError, invalid

__all__ = ["declared_charset", "json_as_utf8"]

_UTF8 = "utf-8"


def declared_charset(content_type: str) -> str | None:
    """The ``charset`` parameter of a Content-Type header, lower-cased, quotes removed (None if absent).

    >>> declared_charset('application/json; charset="Latin-1"'), declared_charset("application/json")
    ('latin-1', None)
    """
    msg = Message()
    msg["content-type"] = content_type
    value = msg.get_param("charset")
    if value is None or not isinstance(value, str):
        return None
    return value.strip().lower() or None


def _unsupported(charset: str) -> ProblemError:
    message = f"charset {charset!r} is not a text encoding this server reads; send UTF-8 JSON"
    return ProblemError(
        415,
        f"header.Content-Type: {message}",
        errors=[{"field": "header.Content-Type", "message": message, "input": charset}],
    )


def json_as_utf8(body: bytes, content_type: str) -> bytes:
    """``body`` as UTF-8 bytes for the JSON parser, decoded with the Content-Type's charset.

    UTF-8 (or no charset) returns ``body`` unchanged, without a copy. A body that is not valid in its
    declared charset is a 400 naming it.
    """
    if "charset" not in content_type.lower():  # the common case: no header parsing per request
        return body
    charset = declared_charset(content_type)
    if charset is None:
        return body
    try:
        info = codecs.lookup(charset)
    except LookupError:
        raise _unsupported(charset) from None
    if not getattr(info, "_is_text_encoding", True):
        raise _unsupported(charset)
    if info.name == _UTF8:
        return body
    try:
        text = body.decode(info.name)
    except UnicodeDecodeError as e:
        raise invalid("body", f"not valid {charset} text at byte {e.start}", status=400) from None
    return text.encode(_UTF8)
