"""PHP-style form encoding, the body format Kartra's API speaks (API.md §1.1).

Kartra parses requests with PHP, so nested data travels as bracketed keys
(`lead[custom_fields][0][field_value]=...`), exactly as `http_build_query()` writes them
and `parse_str()` reads them back. `encode` is what the client sends; `decode` is what
the fake Kartra (and any test) uses to read a body the way Kartra would.

Safety: every key and value is percent-encoded, so a value such as `x&api_key=1` or
`a]` stays one value and can never add or re-nest a parameter. Keys that PHP would read
back as other keys (brackets, NUL, empty, spaces or dots at the top level) are refused;
tests/fuzz/test_form_fuzz.py checks the round trip against a model of PHP's parse_str.
"""

import re
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import parse_qsl, quote_plus

_SEGMENT = re.compile(r"\[([^\]]*)\]")


def encode(params: Mapping[str, Any]) -> str:
    """Encode nested params like PHP's `http_build_query`.

    Dicts nest as `a[b]`, lists and tuples as `a[0]`; None and empty containers are
    left out (PHP sends nothing for them); booleans become "1"/"0"; anything else is
    `str()`-ed.
    """
    return "&".join(
        f"{quote_plus(key, safe='[]')}={quote_plus(value)}" for key, value in _flatten(params, "")
    )


def _flatten(value: Any, prefix: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, Mapping):
        items: Any = value.items()
    elif isinstance(value, list | tuple):
        items = enumerate(value)
    elif value is None:
        return
    elif isinstance(value, bool):
        yield prefix, "1" if value else "0"
        return
    else:
        yield prefix, str(value)
        return
    for key, item in items:
        name = str(key)
        _check_name(name, top=not prefix)
        yield from _flatten(item, f"{prefix}[{name}]" if prefix else name)


def _check_name(name: str, *, top: bool) -> None:
    """Refuse a key PHP would read back as another: brackets re-nest, NUL ends the name,
    `[]` and `[ ]` append, and a top-level name loses its leading spaces and has its
    spaces and dots turned into `_`."""
    if "[" in name or "]" in name:
        raise ValueError(f"form key {name!r} contains a bracket; PHP would re-nest it")
    if "\0" in name or name in ("", " ", "\t", "\n", "\v", "\f", "\r"):
        raise ValueError(f"form key {name!r} would be read by PHP as another key")
    if top and (" " in name or "." in name):
        raise ValueError(f"form key {name!r} has a space or dot; PHP would rewrite it to _")


def decode(body: str | bytes) -> dict[str, Any]:
    """Decode a form body like PHP's `parse_str`.

    `a[b]=1` nests, `a[]=x` appends, a later value for the same key wins, and any map
    whose keys are exactly 0..n-1 comes back as a list. Leaves are always strings.
    Unlike PHP, dots and spaces in top-level names are kept as they are.
    """
    if isinstance(body, bytes):
        body = body.decode("utf-8", errors="replace")
    root: dict[str, Any] = {}
    for raw_key, value in parse_qsl(body, keep_blank_values=True):
        path = _key_path(raw_key)
        if path is None:
            continue
        node = root
        for segment in path[:-1]:
            key = _next_index(node) if segment == "" else segment
            child = node.get(key)
            if not isinstance(child, dict):
                child = node[key] = {}
            node = child
        last = path[-1]
        node[_next_index(node) if last == "" else last] = value
    return _listify(root)


def _key_path(raw_key: str) -> list[str] | None:
    """Split `a[b][]` into ["a", "b", ""]; None for keys PHP would drop (no base name)."""
    base, bracket, rest = raw_key.partition("[")
    if not base:
        return None
    if not bracket:
        return [base]
    path = [base]
    position = 0
    rest = "[" + rest
    while match := _SEGMENT.match(rest, position):
        path.append(match.group(1))
        position = match.end()
    if len(path) == 1:
        # PHP turns an unmatched "[" into "_" and keeps the rest of the name literal.
        return [f"{base}_{rest[1:]}"]
    return path


def _next_index(node: dict[str, Any]) -> str:
    """PHP's next free integer key: one past the largest integer key so far."""
    indices = [int(key) for key in node if _is_index(key)]
    return str(max(indices, default=-1) + 1)


def _is_index(key: str) -> bool:
    return key == "0" or (key[:1] in "123456789" and key.isdecimal())


def _listify(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    converted = {key: _listify(value) for key, value in node.items()}
    if converted and all(_is_index(key) for key in converted):
        indices = sorted(int(key) for key in converted)
        if indices == list(range(len(indices))):
            return [converted[str(index)] for index in indices]
    return converted
