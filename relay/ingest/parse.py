"""Request bodies in, one plain structure out.

JSON, `application/x-www-form-urlencoded` and `multipart/form-data` all become a dict
of strings, lists and dicts, so a mapping never cares how the sender encoded it. Form
keys in PHP bracket style (`customer[email]`, `items[0][sku]`, `tags[]`) become nested
dicts and lists, the way the senders that use them (ThriveCart, Gumroad, Kartra itself)
mean them. Uploaded files are never kept: a file field records its name, type and size.
Jotform posts its answers as a JSON string in the form field `rawRequest`; that string
is decoded in place, so a mapping reads `body.rawRequest.q4_email` like any field.
"""

from __future__ import annotations

import codecs
import functools
import json
import math
import re
from io import BytesIO
from typing import Any
from urllib.parse import parse_qsl

from werkzeug.formparser import parse_form_data
from werkzeug.http import parse_options_header

MAX_FIELDS = 10_000
MAX_DEPTH = 64
_BRACKETS = re.compile(r"\[([^\[\]]*)\]")
_CHARSET_FIELD = re.compile(rb"(?:^|&)charset=([A-Za-z0-9_.:-]{1,40})(?:&|$)")
_MULTIPART = re.compile(r"^\s*multipart/form-data", re.IGNORECASE)
_REPLACEMENT = "\ufffd"


class BodyError(Exception):
    """The body cannot be read; `status` is the HTTP answer (400 or 415)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def parse_body(content_type: str | None, raw: bytes) -> dict[str, Any]:
    mimetype, options = _content_type(content_type or "")
    charset = options.get("charset") or "utf-8"
    if mimetype == "application/json" or mimetype.endswith("+json"):
        return _json(raw, charset)
    if mimetype == "application/x-www-form-urlencoded":
        return _raw_request(
            _urlencoded(raw, options.get("charset") or _charset_field(raw) or "utf-8")
        )
    if mimetype == "multipart/form-data":
        # werkzeug compares the type as written; the boundary keeps its case
        header = _MULTIPART.sub("multipart/form-data", content_type or "", count=1)
        return _raw_request(_multipart(header, raw))
    if not mimetype and raw.lstrip()[:1] in (b"{", b"\xef"):
        return _json(raw, charset)
    raise BodyError(
        f"unsupported content type {mimetype or '(none)'!r}: send application/json, "
        "application/x-www-form-urlencoded or multipart/form-data",
        status=415,
    )


@functools.lru_cache(maxsize=64)
def _content_type(header: str) -> tuple[str, dict[str, str]]:
    """The header parsed (5 us), once per distinct header: a sender sends the same one
    with every event. The type in lower case (MIME types are case-insensitive); the
    options are only read."""
    mimetype, options = parse_options_header(header)
    return mimetype.lower(), options


def _decode(raw: bytes, charset: str) -> str:
    try:
        codecs.lookup(charset)
    except LookupError:
        raise BodyError(f"unknown charset {charset!r}", status=415) from None
    try:
        return raw.decode(charset)
    except LookupError:  # a codec that does not make text of bytes: base64, rot13, zlib...
        raise BodyError(f"unknown charset {charset!r}: not a text encoding", status=415) from None
    except UnicodeDecodeError as exc:
        raise BodyError(f"body is not valid {charset}: byte {exc.start}") from None
    except UnicodeError as exc:  # codecs that say no without a position: punycode, undefined
        raise BodyError(f"body is not valid {charset}: {exc}") from None


def _json(raw: bytes, charset: str) -> dict[str, Any]:
    text = _decode(raw, charset).removeprefix("\ufeff")
    try:
        value = json.loads(text, parse_constant=_no_constant, parse_float=_finite)
    except json.JSONDecodeError as exc:
        raise BodyError(
            f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise BodyError("invalid JSON: nested too deeply") from None
    except ValueError as exc:
        raise BodyError(f"invalid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise BodyError(f"JSON body must be an object, got {type(value).__name__}")
    if not _plain_json(text):
        _check_tree(value)
    return value


def _plain_json(text: str) -> bool:
    """Whether `_check_tree` cannot fail on what `text` parses to, known from the text
    alone (most bodies): fewer brackets than MAX_DEPTH levels, no NUL, no lone surrogate,
    and no `\\u` escape that could spell either."""
    if text.count("{") + text.count("[") >= MAX_DEPTH or "\\u" in text or "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _no_constant(name: str) -> float:
    """`NaN` and `Infinity` are not JSON; Python reads them, PostgreSQL refuses to store them."""
    raise BodyError(f"invalid JSON: {name} is not a JSON number")


def _finite(text: str) -> float:
    """A float too large for a double (`1e400`) would become infinity: refused like `Infinity`."""
    value = float(text)
    if not math.isfinite(value):
        raise BodyError(f"invalid JSON: number {text[:40]} is out of range")
    return value


def _check_tree(value: Any) -> None:
    """At most MAX_DEPTH levels, and only text every store and Kartra can take: no NUL
    (PostgreSQL text cannot hold one), no lone surrogate (JSON's `"\\ud800"` is valid
    syntax but no character, and UTF-8 cannot carry it on to Kartra)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise BodyError(f"body nested deeper than {MAX_DEPTH} levels")
        if isinstance(item, dict):
            for key in item:
                _check_text(key)
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
        elif isinstance(item, str):
            _check_text(item)


def _check_text(text: str) -> None:
    if "\x00" in text:
        raise BodyError("body holds a NUL character, which no text field can store")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BodyError(
            f"body holds a lone surrogate (\\u{ord(text[exc.start]):04x}), not a character"
        ) from None


def _urlencoded(raw: bytes, charset: str) -> dict[str, Any]:
    text = _decode(raw, charset)
    try:
        pairs = parse_qsl(
            text,
            keep_blank_values=True,
            max_num_fields=MAX_FIELDS,
            encoding=charset,
            errors="strict",
        )
    except UnicodeDecodeError as exc:
        raise BodyError(f"form value is not valid {charset}: {exc.reason}") from None
    except ValueError:
        raise BodyError(f"form has more than {MAX_FIELDS} fields") from None
    form = nest(pairs)
    _check_tree(form)  # a charset such as UTF-7 can spell a lone surrogate
    return form


def _raw_request(form: dict[str, Any]) -> dict[str, Any]:
    """Jotform's `rawRequest` JSON string as the object it holds; left as text if it is not one."""
    text = form.get("rawRequest")
    if isinstance(text, str) and text.lstrip().startswith("{"):
        try:
            value = json.loads(text)
        except (ValueError, RecursionError):
            return form
        if isinstance(value, dict):
            _check_tree(value)
            form["rawRequest"] = value
    return form


def _charset_field(raw: bytes) -> str | None:
    """PayPal IPN names its charset in a body field (`charset=windows-1252`), not the header."""
    match = _CHARSET_FIELD.search(raw)
    return match.group(1).decode("ascii") if match else None


def _multipart(content_type: str, raw: bytes) -> dict[str, Any]:
    environ = {
        "REQUEST_METHOD": "POST",
        "CONTENT_TYPE": content_type,
        "CONTENT_LENGTH": str(len(raw)),
        "wsgi.input": BytesIO(raw),
    }
    uploads: list[BytesIO] = []

    def in_memory(*_args: Any, **_kwargs: Any) -> BytesIO:
        # The body is already in memory (at most MAX_BODY_BYTES); no temporary files, and
        # every upload is closed even when the parser gives up half-way.
        uploads.append(BytesIO())
        return uploads[-1]

    try:
        _, form, files = parse_form_data(
            environ, stream_factory=in_memory, max_form_parts=MAX_FIELDS, silent=False
        )
        pairs = list(form.items(multi=True))
        for name, upload in files.items(multi=True):
            size = len(upload.stream.getvalue())
            pairs.append(
                (name, {"filename": upload.filename, "content_type": upload.mimetype, "size": size})
            )
    except Exception as exc:  # werkzeug raises several kinds for malformed multipart
        raise BodyError(f"invalid multipart body: {exc}") from None
    finally:
        for upload in uploads:
            upload.close()
    if any(name is None for name, _ in pairs):
        raise BodyError("invalid multipart body: a part's Content-Disposition has no name")
    _check_decoded(pairs, raw)
    form = nest(pairs)
    _check_tree(form)
    return form


def _check_decoded(pairs: list[tuple[str, Any]], raw: bytes) -> None:
    """werkzeug decodes every part as UTF-8 and replaces what is not with U+FFFD: more
    of those in the fields than the body spells out itself means a part was not UTF-8,
    and its text would be stored changed. Refused, as a urlencoded body would be."""
    replaced = sum(
        name.count(_REPLACEMENT) + (value.count(_REPLACEMENT) if isinstance(value, str) else 0)
        for name, value in pairs
    )
    if replaced > raw.count(_REPLACEMENT.encode()):
        raise BodyError("multipart part is not valid utf-8: send the form in UTF-8")


def nest(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """`[("a[b][0]", "x"), ("t[]", "1"), ("t[]", "2")]` -> `{"a": {"b": ["x"]}, "t": ["1", "2"]}`.

    `[]` appends, and so does a key given twice (`interest=a&interest=b`, an HTML
    checkbox group): no value is lost. A field given both as a value and as a group
    (`email=a&email[x]=b`) is refused: one would overwrite the other. Dicts whose keys
    are exactly 0..n-1 become lists.
    """
    root: dict[str, Any] = {}
    groups: set[int] = set()  # the dicts made here; a file's summary is a value
    for key, value in pairs:
        parts = _key_parts(key)
        if len(parts) > MAX_DEPTH:
            raise BodyError(f"form key nested deeper than {MAX_DEPTH} levels: {key[:80]!r}")
        node = root
        for part in parts[:-1]:
            part = part or str(len(node))
            if part not in node:
                node[part] = {}
                groups.add(id(node[part]))
            node = node[part]
            if id(node) not in groups:
                raise _both(key)
        last = parts[-1] or str(len(node))
        if last not in node:
            node[last] = value
        elif id(node[last]) in groups:
            raise _both(key)
        else:
            previous = node[last]
            node[last] = [*previous, value] if isinstance(previous, list) else [previous, value]
    return {key: _lists(value) for key, value in root.items()}  # the body stays a dict


def _both(key: str) -> BodyError:
    return BodyError(
        f"form field {key[:80]!r} is given both as a value and as a group of fields "
        "(name and name[...]); send one or the other"
    )


def _key_parts(key: str) -> list[str]:
    """`a[b][]` -> `["a", "b", ""]`; a key that is not well-formed bracket syntax stays whole."""
    head, bracket, rest = key.partition("[")
    if not bracket or not head:
        return [key]
    parts = _BRACKETS.findall(bracket + rest)
    if "".join(f"[{p}]" for p in parts) != bracket + rest:
        return [key]
    return [head, *parts]


def _lists(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    converted = {k: _lists(v) for k, v in node.items()}
    if converted and all(k == str(i) for i, k in enumerate(converted)):
        return list(converted.values())
    return converted
