"""Values and conditions, compiled once at load by a sandboxed Jinja2 environment.

The payload only ever reaches a template as *data* in the render context, never as
template source, so a form field holding `{{ 7*7 }}` stays that text. The
environment is `ImmutableSandboxedEnvironment` (no attribute games like `__class__`,
no mutating the payload) with `StrictUndefined` (a missing field is an error, not a
silent empty string), no loader (no files) and no globals: a template sees `body`,
`headers`, `query` and `route`, and nothing else. `*` and `**` refuse to build values
beyond MAX_PRODUCT items or MAX_POWER_BITS bits.

Every exception raised while evaluating user code becomes a `RenderError`; that is
the one place where catching `Exception` is right, because a template can raise
almost anything (UndefinedError, SecurityError, TypeError, ZeroDivisionError...).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError, Undefined, nodes
from jinja2.exceptions import SecurityError
from jinja2.parser import Parser
from jinja2.sandbox import ImmutableSandboxedEnvironment

from relay.mapping.direct import evaluator
from relay.mapping.errors import RenderError
from relay.mapping.filters import FILTERS, make_lookup

JINJA_MARKERS = ("{{", "{%", "{#")
VARIABLES = frozenset({"body", "headers", "query", "route"})
"""What a template sees (mapping/model.py's render context)."""
MAX_PRODUCT = 100_000
MAX_POWER_BITS = 4096
_FILE_NODES = (nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)


class TemplateProblem(Exception):
    """A template or expression in a mapping file is wrong (found at load time)."""

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.message = message
        self.hint = hint


@dataclass(frozen=True)
class Value:
    """A value from a mapping file: a literal, one native expression, or a text template.

    Equal when the file says the same thing, so loading twice gives equal mappings.
    """

    source: Any
    literal: bool
    evaluate: Callable[[dict[str, Any]], Any] = field(compare=False, repr=False)

    def __call__(self, context: dict[str, Any]) -> Any:
        return _guarded(self.evaluate, context)


@dataclass(frozen=True)
class Condition:
    """A `when` expression; truthiness decides. An undefined name is an error, not false."""

    source: str
    evaluate: Callable[[dict[str, Any]], Any] = field(compare=False, repr=False)

    def __call__(self, context: dict[str, Any]) -> bool:
        return _guarded(lambda ctx: bool(self.evaluate(ctx)), context)


class _Environment(ImmutableSandboxedEnvironment):
    """Arithmetic that cannot build a giant value: `'x' * body.n` or `body.a ** body.b`
    with numbers from a payload would otherwise take the process's memory or CPU."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*" and _repeats(left, right) > MAX_PRODUCT:
            raise SecurityError(f"repetition longer than {MAX_PRODUCT} refused")
        if operator == "**" and _power_bits(left, right) > MAX_POWER_BITS:
            raise SecurityError(f"power larger than {MAX_POWER_BITS} bits refused")
        return super().call_binop(context, operator, left, right)


def _repeats(left: Any, right: Any) -> int:
    """The length `left * right` would have when it repeats a text or a list, else 0."""
    for sequence, times in ((left, right), (right, left)):
        if isinstance(sequence, str | list | tuple) and isinstance(times, int):
            return len(sequence) * times
    return 0


def _power_bits(base: Any, exponent: Any) -> int:
    """About how many bits an integer `base ** exponent` would take, else 0."""
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0:
        return exponent * abs(base).bit_length()
    return 0


class Sandbox:
    """The compiler for one mapping file; its `lookup` filter sees that file's tables only."""

    def __init__(self, tables: Mapping[str, Mapping[str, Any]]):
        self.tables = frozenset(tables)
        self.env = _Environment(
            undefined=StrictUndefined,
            autoescape=False,
            finalize=_finalize,
            keep_trailing_newline=True,
        )
        self.env.globals.clear()
        self.env.filters.update(FILTERS)
        self.env.filters["lookup"] = make_lookup(tables)

    def value(self, source: Any) -> Value:
        """Compile a YAML value; raise TemplateProblem for a template that cannot work.

        Non-strings and strings without Jinja markers are literals. A string that is
        exactly one `{{ expr }}` keeps the expression's type (a list of option ids, an
        int); any other template renders to text.
        """
        if not isinstance(source, str) or not any(m in source for m in JINJA_MARKERS):
            return Value(source, True, lambda _ctx: source)
        inner = _single_expression(source)
        if inner is not None:
            expression = self._expression(inner)
            return Value(source, False, lambda ctx: _defined(expression(ctx)))
        try:
            self._check(self.env.parse(source))
            template = self.env.from_string(source)
        except TemplateSyntaxError as exc:
            raise TemplateProblem(_syntax_message("template", exc)) from None
        return Value(source, False, template.render)

    def condition(self, source: str) -> Condition:
        """Compile a `when` expression; raise TemplateProblem if it cannot work."""
        if any(m in source for m in JINJA_MARKERS):
            raise TemplateProblem(
                "a condition is a bare expression, without {{ }}",
                hint="write `when: body.vip`, not `when: '{{ body.vip }}'`",
            )
        return Condition(source, self._expression(source))

    def _expression(self, source: str) -> Callable[[dict[str, Any]], Any]:
        """The expression as a function of the render variables: evaluated directly when
        its shape allows (relay/mapping/direct.py: the same result, without a render
        context per call), else by Jinja."""
        try:
            parser = Parser(self.env, source, state="variable")
            node = parser.parse_expression()
            if not parser.stream.eos:
                token = parser.stream.current
                raise TemplateSyntaxError(f"unexpected {token.value!r}", token.lineno)
            self._check(nodes.Output([node]))  # find_all looks below the root only
            compiled = self.env.compile_expression(source, undefined_to_none=False)
        except TemplateSyntaxError as exc:
            raise TemplateProblem(_syntax_message("expression", exc)) from None
        return evaluator(node, self.env, VARIABLES) or (lambda ctx: compiled(**ctx))

    def _check(self, tree: nodes.Node) -> None:
        """Load-time checks that Jinja would only make at render time, or never."""
        if any(True for _ in tree.find_all(_FILE_NODES)):
            raise TemplateProblem(
                "templates cannot extend, include or import other templates",
                hint="a value only sees body, headers, query and route",
            )
        for node in tree.find_all(nodes.Filter):
            if node.name not in self.env.filters:
                raise TemplateProblem(
                    f"unknown filter {node.name!r}", did_you_mean(node.name, self.env.filters)
                )
            if node.name == "lookup" and not node.args and not node.kwargs:
                raise TemplateProblem(
                    "lookup needs the table to read", hint="e.g. `lookup('products')`"
                )
            if node.name == "lookup" and node.args and isinstance(node.args[0], nodes.Const):
                table = node.args[0].value
                if table not in self.tables:
                    raise TemplateProblem(
                        f"lookup names unknown table {table!r}",
                        did_you_mean(str(table), self.tables) or "declare it under `tables:`",
                    )
        for node in tree.find_all(nodes.Test):
            if node.name not in self.env.tests:
                raise TemplateProblem(
                    f"unknown test {node.name!r}", did_you_mean(node.name, self.env.tests)
                )


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """A hint naming the closest known word, or "" when nothing is close."""
    close = difflib.get_close_matches(word, sorted(choices), n=1)
    return f"did you mean {close[0]!r}?" if close else ""


def _finalize(value: Any) -> Any:
    """JSON nulls print as "" inside text, not as "None"."""
    return "" if value is None else value


def spelled_texts(source: str, tables: Mapping[str, Mapping[str, Any]]) -> set[str]:
    """The texts a value template can give that the file itself spells: its text
    around each `{{ expression }}`, and for the expression a quoted text, both branches
    of `a if c else b`, either side of `a or b`, every value of the table a `lookup`
    reads (and its default). Nothing when an expression takes anything from the
    payload or a block (`{% %}`) is used: those are known only when an event arrives."""
    try:
        template = _PARSING.parse(source)
    except TemplateSyntaxError:
        return set()
    if len(template.body) != 1 or not isinstance(template.body[0], nodes.Output):
        return set()
    texts = {""}
    for part in template.body[0].nodes:
        spelled = {part.data} if isinstance(part, nodes.TemplateData) else _spelled(part, tables)
        texts = {text + more for text in texts for more in spelled}
    return texts


def _spelled(node: nodes.Node, tables: Mapping[str, Mapping[str, Any]]) -> set[str]:
    if isinstance(node, nodes.Const):
        return {node.value} if isinstance(node.value, str) else set()
    if isinstance(node, nodes.CondExpr):
        return _spelled(node.expr1, tables) | (
            _spelled(node.expr2, tables) if node.expr2 else set()
        )
    if isinstance(node, nodes.Or):
        return _spelled(node.left, tables) | _spelled(node.right, tables)
    if isinstance(node, nodes.Filter) and node.name == "lookup" and node.args:
        table = node.args[0].value if isinstance(node.args[0], nodes.Const) else None
        found = {str(value) for value in tables.get(table, {}).values()}
        defaults = node.args[1:] + [kw.value for kw in node.kwargs if kw.key == "default"]
        return found.union(*(_spelled(default, tables) for default in defaults))
    return set()


_PARSING = ImmutableSandboxedEnvironment()  # parses only: filters are looked up at compile


def _single_expression(source: str) -> str | None:
    """The expression inside `{{ ... }}` when that is the whole value, else None."""
    text = source.strip()
    if not (text.startswith("{{") and text.endswith("}}")):
        return None
    inner = text[2:-2]
    if any(m in inner for m in (*JINJA_MARKERS, "}}")):
        return None
    inner = inner[1:] if inner[:1] in ("-", "+") else inner
    return inner[:-1] if inner[-1:] in ("-", "+") else inner


def _defined(value: Any) -> Any:
    """`compile_expression` hands back an Undefined instead of raising; make it raise."""
    if isinstance(value, Undefined):
        str(value)  # StrictUndefined raises UndefinedError naming the missing field
    return value


def _syntax_message(kind: str, exc: TemplateSyntaxError) -> str:
    return f"{kind} syntax error: {exc.message} (line {exc.lineno})"


_NO_KEY = re.compile(r"^'dict object' has no attribute (.+)$")


def _plain_words(message: str) -> str:
    """Jinja's words for a missing field, in the event's: "'dict object' has no attribute
    'email'" -> "no field 'email' in the event"."""
    missing = _NO_KEY.match(message)
    return f"no field {missing.group(1)} in the event" if missing else message


def _guarded(evaluate: Callable[[dict[str, Any]], Any], context: dict[str, Any]) -> Any:
    try:
        return evaluate(context)
    except RenderError:
        raise
    except TemplateError as exc:
        raise RenderError(_plain_words(exc.message or type(exc).__name__)) from exc
    except Exception as exc:
        raise RenderError(f"{type(exc).__name__}: {exc}") from exc
