"""The exact nested params `build_params` produces for each kind of plan."""

import pytest

from relay.kartra import Credentials, KartraClient, build_params
from relay.kartra.form import encode

LEAD = {
    "email": "jane@example.com",
    "first_name": "Jane",
    "phone": "+15551234",
    "custom_fields": [{"field_identifier": "source", "field_value": "webinar"}],
}
ACTIONS = [
    {"cmd": "assign_tag", "tag_name": "Customer"},
    {"cmd": "subscribe_lead_to_list", "list_name": "News"},
]
CREDS = Credentials("app", "k", "p")
AUTH = {"app_id": "app", "api_key": "k", "api_password": "p"}


def plan(**overrides):
    base = {"rule": "signup", "account": "default", "lead": LEAD, "lead_mode": "upsert"}
    return {**base, "actions": ACTIONS, **overrides}


def test_unknown_lead_is_created_with_every_field() -> None:
    assert build_params(CREDS, plan()) == {
        **AUTH,
        "lead": LEAD,
        "actions": [{"cmd": "create_lead"}, *ACTIONS],
    }


def test_known_lead_is_edited_by_id_without_email() -> None:
    params = build_params(CREDS, plan(), lead_id="1234", done=[0])
    assert params == {
        **AUTH,
        "lead": {
            "id": "1234",
            "first_name": "Jane",
            "phone": "+15551234",
            "custom_fields": LEAD["custom_fields"],
        },
        "actions": [{"cmd": "edit_lead"}, ACTIONS[1]],
    }


def test_plan_lead_id_counts_as_known() -> None:
    params = build_params(CREDS, plan(lead={"id": "77", "first_name": "J"}))
    assert params["lead"] == {"id": "77", "first_name": "J"}
    assert params["actions"][0] == {"cmd": "edit_lead"}


def test_edit_by_email_after_244() -> None:
    params = build_params(CREDS, plan(), lead_command="edit_lead")
    assert params["lead"] == LEAD
    assert params["actions"][0] == {"cmd": "edit_lead"}


def test_existing_mode_sends_only_the_identifier_and_no_lead_command() -> None:
    params = build_params(CREDS, plan(lead_mode="existing"))
    assert params == {**AUTH, "lead": {"email": "jane@example.com"}, "actions": ACTIONS}
    params = build_params(CREDS, plan(lead_mode="existing"), lead_id="9")
    assert params["lead"] == {"id": "9"}


def test_search_lead_only_resolves() -> None:
    params = build_params(CREDS, plan(), lead_command="search_lead", lead_id="9")
    assert params["lead"] == {"id": "9"}
    assert params["actions"] == [{"cmd": "search_lead"}, *ACTIONS]


def test_lead_less_plan_has_no_lead_key() -> None:
    refund = [{"cmd": "refund_transaction", "transaction_id": 5001}]
    params = build_params(CREDS, plan(lead=None, actions=refund))
    assert params == {**AUTH, "actions": refund}


def test_a_bracketed_param_goes_to_kartra_nested() -> None:
    """API.md 9.29: `subscription_recurrence[recurring_period_1]` inside the action, which
    the form encoding writes `actions[0][subscription_recurrence][recurring_period_1]`."""
    edit = {
        "cmd": "edit_subscription",
        "subscription_id": 9001,
        "subscription_recurrence[recurring_period_1]": "monthly",
        "subscription_recurrence[recurring_period_2]": "yearly",
    }
    params = build_params(CREDS, plan(lead=None, actions=[edit]))
    recurrence = {"recurring_period_1": "monthly", "recurring_period_2": "yearly"}
    assert params["actions"] == [
        {"cmd": "edit_subscription", "subscription_id": 9001, "subscription_recurrence": recurrence}
    ]
    assert "&actions[0][subscription_recurrence][recurring_period_1]=monthly&" in (encode(params))


def test_done_actions_are_left_out() -> None:
    params = build_params(CREDS, plan(), lead_id="1", done=(0, 1))
    assert params["actions"] == [{"cmd": "edit_lead"}]


def test_plan_is_not_mutated() -> None:
    original = plan()
    build_params(CREDS, original, lead_id="1")
    assert original == plan()


def test_client_exposes_build_params() -> None:
    assert KartraClient.build_params(CREDS, plan()) == build_params(CREDS, plan())


@pytest.mark.parametrize(
    ("overrides", "kwargs", "message"),
    [
        ({"actions": [{"cmd": "create_lead"}]}, {}, "not a Kartra action"),
        ({"actions": [{"cmd": "grant_membership"}]}, {}, "not a Kartra action"),
        ({"lead": {"email": "a@b.c", "tags": "x"}}, {}, "fields Kartra does not know"),
        ({"lead": {"first_name": "J"}}, {}, "neither email nor id"),
        ({"lead_mode": "sometimes"}, {}, "unknown lead_mode"),
        ({}, {"lead_command": "assign_tag"}, "not a lead command"),
        ({"lead": None}, {"lead_command": "edit_lead"}, "needs a lead"),
    ],
)
def test_plans_the_mapping_must_never_produce(overrides, kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        build_params(CREDS, plan(**overrides), **kwargs)
