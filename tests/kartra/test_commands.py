"""`relay.kartra.commands` must agree with the shared command catalogue."""

import pytest
import yaml

from relay.kartra import ACTIONS, LEAD_COMMANDS, LEAD_FIELDS
from tests.conftest import SHARED

CATALOGUE = SHARED / "kartra" / "commands.yaml"
COMMANDS = {
    entry["name"]: entry
    for entry in yaml.safe_load(CATALOGUE.read_text(encoding="utf-8"))["commands"]
}


@pytest.mark.parametrize("name", sorted(ACTIONS))
def test_action_matches_catalogue(name: str) -> None:
    command, entry = ACTIONS[name], COMMANDS[name]
    required = {key: value for key, value in entry["required_params"].items() if key != "cmd"}
    alone = {key for key in required if "|" not in key}
    one_of = {alt.strip() for key in required if "|" in key for alt in key.split("|")}
    assert set(command.required) == alone
    assert one_of <= set(command.optional)
    optional = set(entry.get("optional_params") or {})
    assert set(command.optional) <= optional | one_of
    assert command.needs_lead == entry["needs_existing_lead"]
    assert command.idempotent == entry.get("idempotent", True)
    needed = "one" if one_of else "any" if entry.get("at_least_one_optional_required") else ""
    assert command.optional_needed == needed
    described = {**required, **(entry.get("optional_params") or {})}
    for param, allowed in command.choices:  # each value the catalogue names
        assert all(choice in described[param] for choice in allowed), param


def test_lead_commands_are_catalogued_and_not_actions() -> None:
    for name in LEAD_COMMANDS:
        assert COMMANDS[name]["must_be_actions_0"] is True
        assert name not in ACTIONS


def test_lead_fields_are_the_catalogued_profile_fields() -> None:
    fields = set()
    for name in ("create_lead", "edit_lead"):
        params = {**COMMANDS[name]["required_params"], **COMMANDS[name]["optional_params"]}
        for key in params:
            for alternative in key.split("|"):
                inner = alternative.strip().removeprefix("lead[").partition("]")[0]
                if alternative.strip().startswith("lead[") and not inner.startswith("<"):
                    fields.add(inner)
    assert fields - {"custom_fields"} == set(LEAD_FIELDS)
