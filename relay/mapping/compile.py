"""Loading a directory of mapping files into compiled `Mapping`s, or every problem.

One file per route: `mappings/demo-form.yaml` serves `POST /hooks/demo-form`. Only
`*.yaml` and `*.yml` directly in the directory are routes; subdirectories (such as
`examples/`) and hidden files are not. A file is read (files.py), its shape checked
(schema.py), then its templates compiled here; all problems of all files are
collected before anything is raised, so one `check` run shows everything to fix.
"""

from __future__ import annotations

import os
from collections.abc import Mapping as EnvMapping
from pathlib import Path
from typing import Any

from relay.kartra.commands import ACTIONS
from relay.mapping.errors import MappingError, Problem
from relay.mapping.expressions import Sandbox, TemplateProblem
from relay.mapping.files import FileProblem, read_yaml
from relay.mapping.model import Action, Form, Lead, Mapping, Rule
from relay.mapping.schema import MAX_ROUTE, ROUTE_NAME, check_shape, in_file_order
from relay.mapping.verify import resolve_verify

SUFFIXES = (".yaml", ".yml")


def load_mappings(directory: Path, env: EnvMapping[str, str] | None = None) -> dict[str, Mapping]:
    """Every route's mapping in `directory`, by route name; raise MappingError if any is wrong.

    `env` (default: the process environment) supplies the `${NAME}` secrets of `verify:`.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise MappingError([Problem(str(directory), "", "mappings directory not found")])
    mappings: dict[str, Mapping] = {}
    problems: list[Problem] = []
    for path in sorted(directory.iterdir()):
        if path.suffix.lower() not in SUFFIXES or path.name.startswith(".") or not path.is_file():
            continue
        if path.suffix not in SUFFIXES:  # Shop.YAML: served by nobody, and nobody told
            hint = f"rename it {path.stem}{path.suffix.lower()}"
            problems.append(Problem(str(path), "", "the extension must be lower case", hint))
            continue
        if path.stem in mappings:
            problems.append(
                Problem(
                    str(path),
                    "",
                    f"route {path.stem!r} is already defined by {mappings[path.stem].file}",
                    "keep one of the two files",
                )
            )
            continue
        try:
            mappings[path.stem] = load_mapping(path, env)
        except MappingError as exc:
            problems.extend(exc.problems)
    if problems:
        raise MappingError(problems)
    return mappings


def load_mapping(path: Path, env: EnvMapping[str, str] | None = None) -> Mapping:
    """One mapping file; its route is the file stem. Raise MappingError with every problem."""
    file = str(path)
    route = path.stem
    if not ROUTE_NAME.fullmatch(route) or len(route) > MAX_ROUTE:
        raise MappingError(
            [
                Problem(
                    file,
                    "",
                    f"route name {route!r} must be lower-case letters, digits, - and _, "
                    f"start with a letter or digit, and be at most {MAX_ROUTE} long",
                    f"rename the file, e.g. {_route_like(route)}{path.suffix}",
                )
            ]
        )
    try:
        data = read_yaml(path)
    except FileProblem as exc:
        raise MappingError([Problem(file, "", str(exc))]) from None
    problems = check_shape(data, file)
    if not isinstance(data, dict):
        raise MappingError(problems)
    builder = _Builder(file, data.get("tables"))
    rules = builder.rules(data.get("rules"))
    event_id = builder.value("event_id", data["event_id"]) if "event_id" in data else None
    problems += builder.problems
    verify = data.get("verify")
    if not problems:
        verify, missing = resolve_verify(verify, os.environ if env is None else env, file)
        problems += missing
    if problems:
        raise MappingError(in_file_order(problems, data))
    response = data.get("response") or {}
    form = data.get("form")
    return Mapping(
        route=route,
        file=path,
        description=data.get("description", ""),
        verify=verify,
        status_code=response.get("status", 200),
        redirect=response.get("redirect"),
        account=data.get("account", "default"),
        rules=rules,
        tables=builder.tables,
        event_id_template=event_id,
        error_redirect=response.get("error_redirect"),
        form=None
        if form is None
        else Form(
            # scheme and host are case-blind, and browsers send them in lower case
            origins=tuple(origin.lower() for origin in form.get("origins", ())),
            rate_limit=form.get("rate_limit"),
            trust_forwarded_for=form.get("trust_forwarded_for", False),
        ),
    )


class _Builder:
    """Compiles the templates of one file, tolerating shapes that check_shape reported.

    Running on a file with shape errors still finds template errors and duplicate
    rule names, so one load reports every problem; the result is then discarded.
    """

    def __init__(self, file: str, tables: Any):
        self.file = file
        self.problems: list[Problem] = []
        self.tables = {
            str(name): {str(key): value for key, value in table.items()}
            for name, table in (tables.items() if isinstance(tables, dict) else ())
            if isinstance(table, dict)
        }
        self.sandbox = Sandbox(self.tables)

    def rules(self, rules: Any) -> tuple[Rule, ...]:
        compiled = []
        first_seen: dict[str, int] = {}
        for i, rule in enumerate(rules if isinstance(rules, list) else []):
            if not isinstance(rule, dict):
                continue
            name = rule.get("name")
            if isinstance(name, str) and name in first_seen:
                self._problem(
                    f"rules[{i}].name",
                    f"duplicate rule name {name!r} (also rules[{first_seen[name]}])",
                    "rule names must be unique in a file",
                )
            elif isinstance(name, str):
                first_seen[name] = i
            compiled.append(self._rule(f"rules[{i}]", rule))
        return tuple(compiled)

    def value(self, path: str, source: Any) -> Any:
        try:
            return self.sandbox.value(source)
        except TemplateProblem as exc:
            self._problem(path, exc.message, exc.hint)
            return None

    def condition(self, path: str, source: Any) -> Any:
        if isinstance(source, bool):
            source = "true" if source else "false"  # Jinja's own literals
        if not isinstance(source, str):
            return None
        try:
            return self.sandbox.condition(source)
        except TemplateProblem as exc:
            self._problem(path, exc.message, exc.hint)
            return None

    def _rule(self, path: str, rule: dict[str, Any]) -> Rule:
        lead = rule.get("lead")
        actions = rule.get("actions")
        return Rule(
            name=rule.get("name"),
            when=self.condition(f"{path}.when", rule.get("when")),
            account=rule.get("account"),
            remember=self.value(f"{path}.remember", rule["remember"])
            if "remember" in rule
            else None,
            lead=self._lead(f"{path}.lead", lead) if isinstance(lead, dict) else None,
            actions=tuple(
                self._action(f"{path}.actions[{i}]", action)
                for i, action in enumerate(actions if isinstance(actions, list) else [])
                if isinstance(action, dict)
            ),
        )

    def _lead(self, path: str, lead: dict[str, Any]) -> Lead:
        custom = lead.get("custom_fields")
        return Lead(
            mode=lead.get("mode", "upsert"),
            fields=tuple(
                (key, self.value(f"{path}.{key}", source))
                for key, source in lead.items()
                if key not in ("mode", "custom_fields")
            ),
            custom_fields=tuple(
                (key, self.value(f"{path}.custom_fields.{key}", source))
                for key, source in (custom.items() if isinstance(custom, dict) else ())
            ),
        )

    def _action(self, path: str, action: dict[str, Any]) -> Action:
        return Action(
            cmd=action.get("cmd"),
            params=tuple(
                (key, self.value(f"{path}.{key}", source))
                for key, source in action.items()
                if key not in ("cmd", "when") and action.get("cmd") in ACTIONS
            ),
            when=self.condition(f"{path}.when", action.get("when")),
        )

    def _problem(self, path: str, message: str, hint: str = "") -> None:
        self.problems.append(Problem(self.file, path, message, hint))


def _route_like(stem: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "-_" else "-" for c in stem.lower())
    return cleaned[:MAX_ROUTE].strip("-_") or "my-route"
