"""Reading one mapping file: size limit, safe YAML, bounded aliases, no duplicate keys.

YAML anchors and aliases are handy for sharing an action list between rules, but a
few nested aliases expand into billions of nodes ("billion laughs") as soon as
anything walks the data. The composed node graph is measured with aliases expanded
(memoised, so measuring is cheap) before any Python object is built.
"""

from __future__ import annotations

from collections.abc import Hashable
from pathlib import Path
from typing import Any

import yaml

MAX_FILE_BYTES = 1024 * 1024
MAX_NODES = 100_000
MAX_DEPTH = 50


class FileProblem(Exception):
    """The file cannot be read as a mapping document; the message says where."""


class _Loader(yaml.SafeLoader):
    """`yaml.safe_load` semantics, refusing duplicate keys and deep nesting.

    PyYAML composes nodes recursively; bounding the depth turns a "[[[[..." file into
    a clear error instead of a slow RecursionError.
    """

    depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise FileProblem(
                    f"YAML is nested more than {MAX_DEPTH} levels deep (line {mark.line + 1})"
                )
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *defaults` may be overridden by the keys written beside it
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, Hashable):
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r}", key_node.start_mark
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _python_tag(_loader: _Loader, suffix: str, node: yaml.Node) -> None:
    raise yaml.constructor.ConstructorError(
        None,
        None,
        f"!!python/{suffix} is not allowed: a mapping file holds plain data, no Python objects",
        node.start_mark,
    )


_Loader.add_multi_constructor("tag:yaml.org,2002:python/", _python_tag)


def read_yaml(path: Path) -> Any:
    """The document in `path` as plain Python data; raise FileProblem if it cannot be."""
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise FileProblem(f"cannot read the file: {exc.strerror}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise FileProblem(f"file is larger than {MAX_FILE_BYTES // 1024} KiB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FileProblem(f"file is not UTF-8 (byte {exc.start})") from None
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, {}, set())
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        raise FileProblem(_yaml_message(exc)) from None
    except yaml.YAMLError as exc:
        raise FileProblem(f"YAML error: {exc}") from None
    finally:
        loader.dispose()


def _expanded_size(node: yaml.Node, sizes: dict[int, int], open_nodes: set[int]) -> int:
    """Node count with every alias expanded; raise FileProblem past MAX_NODES or on a cycle."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_nodes:
        raise FileProblem(f"YAML alias refers to itself (line {node.start_mark.line + 1})")
    open_nodes.add(key)
    if isinstance(node, yaml.SequenceNode):
        children = list(node.value)
    elif isinstance(node, yaml.MappingNode):
        children = [n for pair in node.value for n in pair]
    else:
        children = []
    size = 1 + sum(_expanded_size(child, sizes, open_nodes) for child in children)
    open_nodes.discard(key)
    if size > MAX_NODES:
        raise FileProblem(
            f"YAML aliases expand to more than {MAX_NODES} values "
            f"(line {node.start_mark.line + 1}): refusing a 'billion laughs' document"
        )
    sizes[key] = size
    return size


def _yaml_message(exc: yaml.MarkedYAMLError) -> str:
    mark = exc.problem_mark or exc.context_mark
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    what = " ".join(part for part in (exc.context, exc.problem) if part)
    return f"YAML error{where}: {what}"
