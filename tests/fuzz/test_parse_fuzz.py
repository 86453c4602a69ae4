"""The body parsers over arbitrary bodies: a plain JSON-safe dict out, or `BodyError`.

Whatever a sender posts (JSON in any charset, forms with bracketed keys, multipart with
files, or bytes that are none of these), `parse_body` answers a dict the store can keep
as JSON, or raises `BodyError` with a 400 or 415. Nothing else may escape: an escape is
a 500 and, for a sender that retries, a storm of them.
"""

from __future__ import annotations

import json
import math
from urllib.parse import quote_plus

from hypothesis import example, given, settings
from hypothesis import strategies as st

from relay.ingest.parse import MAX_DEPTH, BodyError, nest, parse_body
from tests.fuzz.conftest import budget

CHARSETS = ["utf-8", "UTF-8", "utf-16", "latin-1", "windows-1252", "ascii", "utf-7", "x-nope"]
KEY_ALPHABET = st.sampled_from(list("abz09_-.[]&=%+ #;\"'\\é€🚀\x00\n"))
keys = st.text(KEY_ALPHABET, max_size=12)
texts = st.text(max_size=40)
json_texts = st.text(st.characters() | st.sampled_from(["\ud800", "\udfff"]), max_size=40)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(10**20), 10**20)
    | st.floats(allow_nan=True, allow_infinity=True)
    | json_texts
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
    max_leaves=25,
)


def _content_type(mimetype: str, charset: str | None) -> str:
    return mimetype if charset is None else f"{mimetype}; charset={charset}"


@st.composite
def json_bodies(draw) -> tuple[str | None, bytes]:
    value = draw(json_values | st.dictionaries(keys, json_values, max_size=6))
    charset = draw(st.sampled_from([None, *CHARSETS]))
    text = json.dumps(value, ensure_ascii=draw(st.booleans()))
    raw = text.encode(charset or "utf-8", errors="replace") if charset != "x-nope" else b"{}"
    if draw(st.booleans()):
        raw = b"\xef\xbb\xbf" + raw
    mimetype = draw(st.sampled_from(["application/json", "application/ld+json", None]))
    return (None if mimetype is None else _content_type(mimetype, charset)), raw


@st.composite
def bracket_keys(draw) -> str:
    head = draw(st.text(KEY_ALPHABET, min_size=0, max_size=6))
    parts = draw(st.lists(st.text(KEY_ALPHABET, max_size=4), max_size=5))
    return head + "".join(f"[{part}]" for part in parts)


@st.composite
def form_bodies(draw) -> tuple[str, bytes]:
    pairs = draw(st.lists(st.tuples(bracket_keys() | keys, texts), max_size=12))
    charset = draw(st.sampled_from([None, *CHARSETS]))
    encoding = charset if charset not in (None, "x-nope", "utf-7") else "utf-8"
    raw = "&".join(
        f"{quote_plus(k, encoding=encoding, errors='replace')}="
        f"{quote_plus(v, encoding=encoding, errors='replace')}"
        for k, v in pairs
    ).encode("ascii")
    if draw(st.booleans()):
        raw += b"&charset=" + draw(st.sampled_from(CHARSETS)).encode()
    return _content_type("application/x-www-form-urlencoded", charset), raw


@st.composite
def multipart_bodies(draw) -> tuple[str, bytes]:
    boundary = draw(st.sampled_from(["b0undary", "----WebKitFormBoundaryx", "x"]))
    parts = []
    for name, value in draw(st.lists(st.tuples(bracket_keys() | keys, texts), max_size=8)):
        quoted = name.replace('"', "%22").replace("\n", "%0A")
        filename = draw(st.none() | st.text(KEY_ALPHABET, max_size=8))
        disposition = draw(st.sampled_from(["form-data", f'form-data; name="{quoted}"']))
        if filename is not None:
            disposition += f'; filename="{filename.replace(chr(34), "").replace(chr(10), "")}"'
        head = f"Content-Disposition: {disposition}\r\n"
        if filename is not None:
            head += "Content-Type: application/octet-stream\r\n"
        parts.append(f"--{boundary}\r\n{head}\r\n{value}\r\n")
    raw = ("".join(parts) + f"--{boundary}--\r\n").encode("utf-8", errors="surrogatepass")
    cut = draw(st.none() | st.integers(0, len(raw)))
    if cut is not None:
        raw = raw[:cut]
    return f"multipart/form-data; boundary={boundary}", raw


any_content_type = st.sampled_from(
    [
        None,
        "",
        "application/json",
        "application/json; charset=x-nope",
        "application/x-www-form-urlencoded",
        "application/x-www-form-urlencoded; charset=utf-16",
        "multipart/form-data",
        "multipart/form-data; boundary=",
        "multipart/form-data; boundary=x",
        "text/plain",
        "application/vnd.api+json; charset=latin-1",
    ]
) | st.text(max_size=30)
raw_bodies = st.tuples(any_content_type, st.binary(max_size=200))


def _check_plain(value, depth: int = 1, *, stored: bool = True) -> None:
    """Dicts with text keys, lists and JSON scalars, not too deep; `stored`: only text that
    PostgreSQL can hold and UTF-8 can carry (no NUL, no lone surrogate)."""
    assert depth <= MAX_DEPTH + 1
    if isinstance(value, dict):
        for key, item in value.items():
            assert isinstance(key, str)
            _check_text(key, stored)
            _check_plain(item, depth + 1, stored=stored)
    elif isinstance(value, list):
        for item in value:
            _check_plain(item, depth + 1, stored=stored)
    else:
        assert value is None or isinstance(value, str | int | float | bool)
        assert not isinstance(value, float) or math.isfinite(value), value
        if isinstance(value, str):
            _check_text(value, stored)


def _check_text(text: str, stored: bool) -> None:
    if stored:
        text.encode("utf-8")
        assert "\x00" not in text


def _parses_or_refuses(content_type: str | None, raw: bytes) -> None:
    try:
        body = parse_body(content_type, raw)
    except BodyError as exc:
        assert exc.status in (400, 415)
        assert str(exc)
        return
    assert isinstance(body, dict)
    _check_plain(body)
    json.dumps(body, allow_nan=False)


@settings(max_examples=budget(1.0))
@given(json_bodies())
@example(("application/json", b'{"amount": NaN}'))
@example(("application/json", b'{"a": [Infinity, -Infinity, 1e400]}'))
@example(("application/json", b'{"name": "\\ud800", "\\udfff": 1}'))
@example(("application/json", b'{"email": "a\\u0000@b.co"}'))
def test_json_bodies(case):
    _parses_or_refuses(*case)


@settings(max_examples=budget(1.0))
@given(form_bodies())
@example(("application/x-www-form-urlencoded", b"0=a&1=b"))
@example(("application/x-www-form-urlencoded; charset=utf-7", b"name=%2B2AA-"))
def test_form_bodies(case):
    _parses_or_refuses(*case)


@settings(max_examples=budget(0.5))
@given(multipart_bodies())
@example(("multipart/form-data; boundary=x", b"--x\r\nContent-Disposition: form-data\r\n\r\nv"))
def test_multipart_bodies(case):
    _parses_or_refuses(*case)


@settings(max_examples=budget(1.0))
@given(raw_bodies)
def test_arbitrary_bytes(case):
    _parses_or_refuses(*case)


@settings(max_examples=budget(1.0))
@given(st.lists(st.tuples(bracket_keys() | keys, texts), max_size=20))
def test_nest_keeps_every_key_a_string_and_never_crashes(pairs):
    try:
        body = nest(pairs)
    except BodyError as exc:
        assert exc.status == 400
        return
    _check_plain(body, stored=False)
