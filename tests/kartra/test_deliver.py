"""`KartraClient.deliver` against the fake Kartra over real HTTP on 127.0.0.1."""

import json

import pytest

from relay.kartra import (
    AccountError,
    ActionConfigError,
    Credentials,
    DataError,
    KartraClient,
    TransientError,
)
from relay.kartra.fake import FakeKartra

ACTIONS = [
    {"cmd": "assign_tag", "tag_name": "Customer"},
    {"cmd": "subscribe_lead_to_list", "list_name": "News"},
]


def signup(email: str = "jane@example.com", actions=ACTIONS, **overrides) -> dict:
    lead = {
        "email": email,
        "first_name": "Jane",
        "custom_fields": [
            {"field_identifier": "source", "field_value": "webinar & more"},
            {"field_identifier": "interests", "field_value": [620, 621]},
        ],
    }
    return {
        "rule": "signup",
        "account": "default",
        "lead": lead,
        "lead_mode": "upsert",
        "actions": actions,
        **overrides,
    }


def sent(fake: FakeKartra) -> list[dict]:
    """What Kartra received, call by call."""
    return [call["params"] for call in fake.call_log()]


def test_new_lead_costs_one_call(client, fake, credentials) -> None:
    outcome = client.deliver(credentials, signup())
    assert len(outcome.calls) == 1
    [request] = sent(fake)
    assert [a["cmd"] for a in request["actions"]] == [
        "create_lead",
        "assign_tag",
        "subscribe_lead_to_list",
    ]
    lead = fake.find_lead("jane@example.com")
    assert outcome.lead_id == lead.id
    assert outcome.done == [0, 1]
    assert lead.tags == {"Customer"} and lead.lists == {"News"}
    assert lead.fields["first_name"] == "Jane"
    assert lead.custom_fields == {"source": "webinar & more", "interests": ["620", "621"]}


def test_existing_lead_unknown_to_the_client_costs_two_calls(client, fake, credentials) -> None:
    existing = fake.add_lead("jane@example.com")
    outcome = client.deliver(credentials, signup())
    assert len(outcome.calls) == 2
    first, second = sent(fake)
    assert first["actions"][0]["cmd"] == "create_lead"
    assert outcome.calls[0].results[0].type == 244
    assert second["actions"][0] == {"cmd": "edit_lead"}
    assert second["lead"]["email"] == "jane@example.com"
    assert len(second["actions"]) == 3
    assert (outcome.lead_id, outcome.done) == (existing.id, [0, 1])
    assert existing.tags == {"Customer"}


def test_known_lead_costs_one_edit_by_id(client, fake, credentials) -> None:
    existing = fake.add_lead("jane@example.com")
    outcome = client.deliver(credentials, signup(), lead_id=existing.id)
    [request] = sent(fake)
    assert request["actions"][0] == {"cmd": "edit_lead"}
    assert request["lead"]["id"] == existing.id
    assert "email" not in request["lead"]
    assert (len(outcome.calls), outcome.done) == (1, [0, 1])
    assert existing.fields["first_name"] == "Jane"


def test_deleted_lead_is_forgotten_and_recreated(client, fake, credentials) -> None:
    gone = fake.add_lead("jane@example.com")
    gone.deleted = True
    outcome = client.deliver(credentials, signup(), lead_id=gone.id)
    assert outcome.calls[0].results[0].type == 245
    assert [a["cmd"] for a in sent(fake)[1]["actions"]][0] == "create_lead"
    assert outcome.lead_id not in (None, gone.id)
    assert outcome.done == [0, 1]


def test_test_mode_rewritten_email(serve, fake, credentials) -> None:
    fake.test_mode = True
    with KartraClient(serve(fake), test_mode=True) as client:
        first = client.deliver(credentials, signup())
        lead = fake.find_lead("jane@kartra.com")
        assert first.lead_id == lead.id
        by_id = client.deliver(credentials, signup(), lead_id=first.lead_id)
        assert len(by_id.calls) == 1
        unknown = client.deliver(credentials, signup())
    assert len(unknown.calls) == 2
    assert unknown.calls[1].request["lead"]["email"] == "jane@kartra.com"
    assert unknown.lead_id == lead.id
    assert len(fake.leads) == 1


def test_test_mode_needs_the_client_to_know(client, fake, credentials) -> None:
    fake.test_mode = True
    client.deliver(credentials, signup())
    with pytest.raises(DataError) as caught:
        client.deliver(credentials, signup())
    assert caught.value.code == 243
    assert caught.value.cmd == "edit_lead"


def test_missing_tag_reports_what_was_done(client, fake, credentials) -> None:
    actions = [ACTIONS[0], {"cmd": "assign_tag", "tag_name": "VIP"}, ACTIONS[1]]
    with pytest.raises(ActionConfigError) as caught:
        client.deliver(credentials, signup(actions=actions))
    error = caught.value
    assert (error.code, error.cmd) == (212, "assign_tag")
    assert "tag 'VIP' does not exist in the Kartra account: create it or fix the mapping" in str(
        error
    )
    assert error.outcome.done == [0, 2]
    assert error.outcome.lead_id is not None

    fake.tags.add("VIP")
    outcome = client.deliver(
        credentials,
        signup(actions=actions),
        lead_id=error.outcome.lead_id,
        done=error.outcome.done,
    )
    assert sent(fake)[-1]["actions"] == [{"cmd": "edit_lead"}, actions[1]]
    assert outcome.done == [0, 1, 2]


def test_bad_custom_field_format_is_a_data_error(client, fake, credentials) -> None:
    plan = signup()
    plan["lead"] = {**plan["lead"], "custom_fields": {"source": "x"}}
    with pytest.raises(DataError) as caught:
        client.deliver(credentials, plan)
    assert (caught.value.code, caught.value.cmd) == (271, "create_lead")
    assert "wrong format for its field type" in str(caught.value)
    assert caught.value.outcome.done == []


def test_worst_failure_wins(client, fake, credentials) -> None:
    actions = [
        {"cmd": "give_points_to_lead", "points": "ten"},
        {"cmd": "subscribe_lead_to_list", "list_name": "Nope"},
    ]
    with pytest.raises(ActionConfigError) as caught:
        client.deliver(credentials, signup(actions=actions))
    assert caught.value.code == 231
    assert "also failed: 227 on give_points_to_lead" in str(caught.value)


def test_existing_mode_never_creates(client, fake, credentials) -> None:
    plan = signup(lead_mode="existing")
    with pytest.raises(DataError) as caught:
        client.deliver(credentials, plan)
    assert caught.value.code == 243
    assert fake.leads == {}
    existing = fake.add_lead("jane@example.com")
    outcome = client.deliver(credentials, plan)
    request = sent(fake)[-1]
    assert request["lead"] == {"email": "jane@example.com"}
    assert [a["cmd"] for a in request["actions"]] == ["assign_tag", "subscribe_lead_to_list"]
    assert outcome.done == [0, 1]
    assert "first_name" not in existing.fields


def test_lead_less_plan_and_success_equivalents(client, fake, credentials) -> None:
    plan = {
        "rule": "refund",
        "account": "default",
        "lead": None,
        "lead_mode": "upsert",
        "actions": [{"cmd": "refund_transaction", "transaction_id": 5001}],
    }
    assert client.deliver(credentials, plan).done == [0]
    again = client.deliver(credentials, plan)
    assert again.done == [0]
    assert again.calls[0].results[0].type == 251
    assert all("lead" not in request for request in sent(fake))


def status_change(change: str) -> dict:
    return {
        "rule": "cancellation",
        "account": "default",
        "lead": None,
        "actions": [
            {
                "cmd": "modify_subscription_status",
                "subscription_id": 9001,
                "subscription_status_modification": change,
            }
        ],
    }


@pytest.mark.parametrize("before", ["Cancelled", "Terminated"])
def test_a_cancel_that_finds_the_subscription_ended_is_done(
    client, fake, credentials, before
) -> None:
    fake.subscriptions["9001"] = before
    outcome = client.deliver(credentials, status_change("cancel"))
    assert outcome.done == [0]
    [result] = outcome.calls[0].results
    assert (result.type, result.kind) == (
        {"Cancelled": 252, "Terminated": 275}[before],
        "success_equivalent",
    )


@pytest.mark.parametrize("change", ["pause", "unpause"])
def test_a_pause_or_unpause_of_an_ended_subscription_fails(
    client, fake, credentials, change
) -> None:
    fake.subscriptions["9001"] = "Terminated"
    with pytest.raises(DataError) as caught:
        client.deliver(credentials, status_change(change))
    assert caught.value.code == 275
    assert caught.value.outcome.done == []


def test_nothing_left_to_do_makes_no_call(client, fake, credentials) -> None:
    outcome = client.deliver(credentials, signup(), lead_id="1001", done=[0, 1])
    assert outcome.calls == []
    assert fake.call_log() == []


def test_lead_without_identifier_is_a_data_error(client, fake, credentials) -> None:
    plan = signup()
    plan["lead"] = {"first_name": "Jane"}
    with pytest.raises(DataError, match="206"):
        client.deliver(credentials, plan)
    assert fake.call_log() == []


def test_acquire_runs_before_every_request(client, fake, credentials) -> None:
    fake.add_lead("jane@example.com")
    seen_before = []
    client.deliver(credentials, signup(), acquire=lambda: seen_before.append(len(fake.calls)))
    assert seen_before == [0, 1]


def test_bad_api_key_pauses_the_account(client, fake, credentials) -> None:
    wrong = Credentials(credentials.app_id, "key-wrong-0000", credentials.api_password)
    with pytest.raises(AccountError) as caught:
        client.deliver(wrong, signup())
    assert caught.value.code == 203
    assert "API key" in str(caught.value)
    assert len(caught.value.outcome.calls) == 1


def test_fake_down_is_ambiguous(client, fake, credentials) -> None:
    fake.down = True
    with pytest.raises(TransientError) as caught:
        client.deliver(credentials, signup())
    assert caught.value.ambiguous is True
    assert caught.value.outcome.calls[0].http_status == 503


def test_connection_refused_is_not_ambiguous(closed_port_url, credentials) -> None:
    calls = []
    client = KartraClient(closed_port_url, timeout=(0.5, 0.5))
    with client, pytest.raises(TransientError) as caught:
        client.deliver(credentials, signup(), acquire=lambda: calls.append(1))
    assert caught.value.ambiguous is False
    assert caught.value.outcome.calls[0].http_status is None
    assert calls == [1]


def test_read_timeout_is_ambiguous(serve, fake, credentials) -> None:
    fake.latency_ms = 400
    client = KartraClient(serve(fake), timeout=(1.0, 0.1))
    with client, pytest.raises(TransientError) as caught:
        client.deliver(credentials, signup())
    assert caught.value.ambiguous is True
    assert "read timeout" in str(caught.value)


def test_rate_limit_answers_429(serve, credentials) -> None:
    frozen = FakeKartra(
        app_id=credentials.app_id,
        accounts={credentials.api_key: credentials.api_password},
        tags=["Customer"],
        lists=["News"],
        rate_limit=2,
        clock=lambda: 100.0,
    )
    with KartraClient(serve(frozen)) as client:
        client.deliver(credentials, signup("a@example.com"))
        client.deliver(credentials, signup("b@example.com"))
        with pytest.raises(TransientError) as caught:
            client.deliver(credentials, signup("c@example.com"))
    assert caught.value.ambiguous is False
    assert caught.value.outcome.calls[0].http_status == 429
    assert caught.value.outcome.calls[0].response["message"] == "Too many requests"


def test_secrets_never_leak(client, fake, credentials) -> None:
    wrong_password = Credentials(credentials.app_id, credentials.api_key, "pw-wr0ng-5ecr3t")
    texts = [repr(credentials), repr(wrong_password)]
    with pytest.raises(ActionConfigError) as config_error:
        client.deliver(credentials, signup(actions=[{"cmd": "assign_tag", "tag_name": "VIP"}]))
    with pytest.raises(AccountError) as account_error:
        client.deliver(wrong_password, signup())
    for caught in (config_error, account_error):
        texts += [str(caught.value), repr(caught.value.outcome)]
        texts += [json.dumps(call.request) for call in caught.value.outcome.calls]
        texts += [json.dumps(call.response) for call in caught.value.outcome.calls]
    texts.append(json.dumps(fake.call_log()))
    for secret in (credentials.api_key, credentials.api_password, wrong_password.api_password):
        assert not [text for text in texts if secret in text]
    assert fake.call_log()[0]["params"]["api_key"] == "***"
