"""The Kartra form encoder against a model of PHP's own `parse_str`.

Kartra reads our body with PHP, so the proof that no value can add or re-nest a
parameter is a round trip through PHP's decoding. `php_parse_str` below follows
php-src (`php_default_treat_data` and `php_register_variable_ex` in
main/php_variables.c) step by step, independently of `relay.kartra.form.decode`:

- the body is split on `&` (empty pieces skipped), each piece on its first `=`;
- names and values are url-decoded (`+` is a space, `%XX` a byte, a bad `%` stays);
- a name is a C string: it ends at the first NUL; leading spaces are dropped;
- in the base name (before the first `[`), spaces and dots become `_`;
- `[` opens an index up to the next `]`; `[]`, or `[` with one whitespace before `]`,
  appends; an unterminated `[` becomes `_` and the name is taken as it stands;
- `[]` appends at one past the largest integer key; text that is a canonical decimal
  integer is an integer key; a later value for a key wins; a scalar in the way of
  nesting is replaced by an array; more than 64 levels drops the variable.

PHP arrays are modelled as dicts with int or str keys; the encoder's input is turned
into the same model (`as_php`), and the two must be equal.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from relay.kartra.form import decode, encode
from tests.fuzz.conftest import budget

MAX_INPUT_NESTING_LEVEL = 64
_INTEGER_KEY = re.compile(r"-?(0|[1-9][0-9]*)")
_HEX = "0123456789abcdefABCDEF"
_C_SPACE = " \t\n\v\f\r"


def php_urldecode(text: str) -> bytes:
    """php_url_decode: bytes, `+` to space, `%XX` decoded, any other `%` kept."""
    data = text.encode("latin-1")
    out = bytearray()
    i = 0
    while i < len(data):
        byte = data[i]
        if byte == ord("+"):
            out.append(ord(" "))
        elif (
            byte == ord("%")
            and i + 2 < len(data)
            and {chr(data[i + 1]), chr(data[i + 2])} <= set(_HEX)
        ):
            out.append(int(data[i + 1 : i + 3], 16))
            i += 2
        else:
            out.append(byte)
        i += 1
    return bytes(out)


def _key(text: str) -> int | str:
    """zend_symtable: a canonical decimal integer in range is an integer key."""
    if _INTEGER_KEY.fullmatch(text) and -(2**63) <= int(text) < 2**63:
        return int(text)
    return text


def _next_index(array: dict) -> int:
    return max((k + 1 for k in array if isinstance(k, int)), default=0)


def _store(array: dict, index: str | None, value: Any) -> None:
    if index is None:
        array[_next_index(array)] = value
    else:
        array[_key(index)] = value


def _register(name: str, value: str, root: dict) -> None:
    """php_register_variable_ex, on text (each byte of the C string one character)."""
    name = name.split("\0", 1)[0].lstrip(" ")
    base, bracket, rest = name.partition("[")
    base = base.replace(" ", "_").replace(".", "_")
    if not base:
        return
    if not bracket:
        _store(root, base, value)
        return
    symtable, index, text, level = root, base, "[" + rest, 0
    while True:
        level += 1
        if level > MAX_INPUT_NESTING_LEVEL:
            root.pop(_key(base), None)
            return
        position = 1
        if position < len(text) and text[position] in _C_SPACE:
            position += 1
        if position < len(text) and text[position] == "]":
            new_index, end = None, position
        else:
            end = text.find("]", position)
            if end < 0:
                if level == 1:
                    index = base + "_" + text[1:]
                _store(symtable, index, value)
                return
            new_index = text[1:end]
        if index is None:
            child: dict = {}
            _store(symtable, None, child)
        else:
            child = symtable.get(_key(index))
            if not isinstance(child, dict):
                child = {}
                _store(symtable, index, child)
        symtable, index, text = child, new_index, text[end + 1 :]
        if not text.startswith("["):
            _store(symtable, index, value)
            return


def php_parse_str(body: str) -> dict:
    """What PHP's `parse_str($body, $result)` puts in `$result`, strings as UTF-8 text."""
    root: dict = {}
    for piece in body.split("&"):
        if not piece:
            continue
        name, _, value = piece.partition("=")
        _register(
            php_urldecode(name).decode("utf-8", "surrogateescape"),
            php_urldecode(value).decode("utf-8", "surrogateescape"),
            root,
        )
    return root


def as_php(value: Any) -> Any:
    """The encoder's input as PHP sees it after the trip; None when nothing is sent."""
    if isinstance(value, dict | list | tuple):
        items = value.items() if isinstance(value, dict) else enumerate(value)
        array = {}
        for key, item in items:
            seen = as_php(item)
            if seen is not None:
                array[_key(str(key))] = seen
        return array or None
    if value is None:
        return None
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


# Nested names: anything a Python dict key may hold that PHP keeps as it is.
nested_keys = st.text(min_size=1, max_size=10).filter(
    lambda k: not (set(k) & set("[]\0")) and not (len(k) == 1 and k in _C_SPACE)
)
# Top-level names: PHP also rewrites spaces and dots there.
top_keys = nested_keys.filter(lambda k: not (set(k) & set(" .")))
texts = st.text(max_size=20) | st.sampled_from(
    ["x&api_key=1", "a=b", "]", "[", "lead[id]=7", "%26", "%zz", "+", "a[]=", "\0", "é🚀"]
)
leaves = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | texts
params = st.dictionaries(
    top_keys,
    st.recursive(
        leaves,
        lambda children: (
            st.lists(children, max_size=4) | st.dictionaries(nested_keys, children, max_size=4)
        ),
        max_leaves=20,
    ),
    max_size=6,
)


@settings(max_examples=budget(1.0))
@given(params)
@example({"api_key": "real", "lead": {"email": "x&api_key=stolen", "first_name": "a]"}})
@example({"lead": {"custom_fields": [{"field_identifier": "a[b]", "field_value": "=&"}]}})
@example({"a": {"5": "x", "0": "y"}, "b": [None, "z"]})
def test_php_reads_back_exactly_what_was_encoded(value):
    assert php_parse_str(encode(value)) == (as_php(value) or {})


@settings(max_examples=budget(1.0))
@given(params)
def test_relay_decode_agrees_with_php(value):
    """The fake Kartra reads bodies with `decode`: it must see what PHP sees."""
    assert _as_model(decode(encode(value))) == (as_php(value) or {})


any_keys = st.text(max_size=6) | st.sampled_from(["", " ", "\t", "a.b", " a", "x\0", "[", "a]"])
any_params = st.dictionaries(
    any_keys,
    st.recursive(
        leaves,
        lambda children: (
            st.lists(children, max_size=3) | st.dictionaries(any_keys, children, max_size=3)
        ),
        max_leaves=10,
    ),
    max_size=4,
)


@settings(max_examples=budget(1.0))
@given(any_params)
def test_any_key_is_refused_or_read_back_exactly(value):
    """No key, however odd, is silently rewritten on the way to Kartra."""
    try:
        body = encode(value)
    except ValueError as exc:
        assert "form key" in str(exc)
        return
    assert php_parse_str(body) == (as_php(value) or {})


def _as_model(value: Any) -> Any:
    if isinstance(value, list):
        return {i: _as_model(item) for i, item in enumerate(value)}
    if isinstance(value, dict):
        return {_key(key): _as_model(item) for key, item in value.items()}
    return value


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("a[]=x&a[]=y", {"a": {0: "x", 1: "y"}}),
        ("a[5]=x&a[]=y", {"a": {5: "x", 6: "y"}}),
        ("a=1&a[b]=2", {"a": {"b": "2"}}),
        ("a[b=1", {"a_b": "1"}),
        ("a[b][c=1", {"a": {"b": "1"}}),
        ("a[b]junk=1", {"a": {"b": "1"}}),
        ("[x]=1&y=2", {"y": "2"}),
        ("a.b c=1&%20d=2", {"a_b_c": "1", "d": "2"}),
        ("a[ b]=1&a[.c]=2&a[ ]=3&a[\t]=4", {"a": {" b": "1", ".c": "2", 0: "3", 1: "4"}}),
        ("a%00b=1&c[d%00e]=2", {"a": "1", "c_d": "2"}),
        ("q=a+b&r=%5B%5D&s=%zz&e=&f", {"q": "a b", "r": "[]", "s": "%zz", "e": "", "f": ""}),
        ("a[01]=x&a[-1]=y&a[1]=z", {"a": {"01": "x", -1: "y", 1: "z"}}),
        ("&&a=1&", {"a": "1"}),
        ("a" + "[b]" * 65 + "=1", {}),
    ],
)
def test_the_php_model_matches_php(body, expected):
    """Cases whose answers PHP documents or its source makes plain."""
    assert php_parse_str(body) == expected


@pytest.mark.parametrize("key", ["a[b", "a]", "x[0]", "", " ", "\t", "a\0b"])
def test_keys_php_would_rewrite_are_refused(key):
    with pytest.raises(ValueError, match="form key"):
        encode({"lead": {key: "1"}})


@pytest.mark.parametrize("key", ["a.b", "a b", " a"])
def test_top_level_names_php_would_rewrite_are_refused(key):
    with pytest.raises(ValueError, match="form key"):
        encode({key: "1"})
    assert encode({"lead": {key.strip(): "1"}})
