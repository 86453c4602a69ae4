"""The fake Kartra answers like API.md says Kartra does."""

import pytest

from relay.kartra.fake import FakeKartra, _sequences, create_app
from relay.kartra.form import encode

AUTH = {"app_id": "app", "api_key": "key", "api_password": "pw"}


@pytest.fixture
def kartra() -> FakeKartra:
    return FakeKartra(
        app_id="app",
        accounts={"key": "pw"},
        tags=["Customer"],
        lists=["News"],
        sequences={"Onboarding": ["1", "2"]},
        calendars={"Coaching": ["Intro"]},
        transactions={"5001": "9001"},
        subscriptions={"9001": "Active"},
    )


def answer(kartra: FakeKartra, params: dict) -> tuple[str, str | None]:
    """(top-level status, type) for a flat answer."""
    status, body = kartra.handle(params)
    assert status == 200
    return body["status"], body.get("type")


def action_types(kartra: FakeKartra, actions: list[dict], lead=None) -> list[str]:
    lead = lead if lead is not None else {"email": "jane@example.com"}
    _, body = kartra.handle({**AUTH, "lead": lead, "actions": actions})
    return [inner.get("type") for result in body["actions"] for inner in result.values()]


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"app_id": ""}, "238"),
        ({"app_id": "other", "api_key": ""}, "239"),
        ({"api_key": ""}, "202"),
        ({"api_key": "nope", "api_password": ""}, "203"),
        ({"api_key": ["key"]}, "203"),
        ({"api_password": "nope"}, "233"),
        ({"lead": "jane@example.com"}, "223"),
        ({"actions": "assign_tag"}, "224"),
        ({"actions": [{"tag_name": "Customer"}]}, "254"),
        ({"actions": [{"cmd": "assign_tag"}, {"cmd": "create_lead"}]}, "254"),
        ({"actions": [{"cmd": "grant_membership"}]}, "262"),
        ({"lead": {"first_name": "J"}}, "206"),
    ],
)
def test_call_level_errors_in_kartras_order(kartra: FakeKartra, overrides: dict, code: str):
    params = {**AUTH, "lead": {"email": "j@x.com"}, "actions": [{"cmd": "create_lead"}]}
    assert answer(kartra, {**params, **overrides}) == ("Error", code)


def test_action_codes(kartra: FakeKartra) -> None:
    kartra.add_lead("jane@example.com")
    assert action_types(
        kartra,
        [
            {"cmd": "assign_tag", "tag_name": ""},
            {"cmd": "assign_tag", "tag_name": "Nope"},
            {"cmd": "assign_tag", "tag_name": "Customer"},
            {"cmd": "unassign_tag"},
            {"cmd": "unassign_tag", "tag_name": "Nope"},
            {"cmd": "unassign_tag", "tag_name": "Customer"},
            {"cmd": "subscribe_lead_to_list"},
            {"cmd": "subscribe_lead_to_list", "list_name": "Nope"},
            {"cmd": "subscribe_lead_to_list", "list_name": "News"},
            {"cmd": "unsubscribe_lead_from_list"},
            {"cmd": "unsubscribe_lead_from_list", "list_name": "Nope"},
            {"cmd": "unsubscribe_lead_from_list", "list_name": "News"},
            {"cmd": "give_points_to_lead"},
            {"cmd": "give_points_to_lead", "points": "ten"},
            {"cmd": "give_points_to_lead", "points": "10"},
            {"cmd": "remove_points_from_lead"},
            {"cmd": "remove_points_from_lead", "points": "x"},
            {"cmd": "remove_points_from_lead", "points": "3"},
        ],
    ) == [
        "211", "212", "103", "213", "214", "104", "207", "231", "101",
        "208", "209", "101", "215", "227", "105", "217", "228", "106",
    ]  # fmt: skip
    assert kartra.find_lead("jane@example.com").points == 7


def test_sequence_and_calendar_codes(kartra: FakeKartra) -> None:
    kartra.add_lead("jane@example.com")
    seq = "subscribe_lead_to_sequence_at_step"
    assert action_types(
        kartra,
        [
            {"cmd": seq, "step": "1"},
            {"cmd": seq, "sequence_name": "Onboarding"},
            {"cmd": seq, "sequence_name": "Nope", "step": "1"},
            {"cmd": seq, "sequence_name": "Onboarding", "step": "1 "},
            {"cmd": seq, "sequence_name": "Onboarding", "step": "9"},
            {"cmd": seq, "sequence_name": "Onboarding", "step": "2"},
            {"cmd": "unsubscribe_lead_from_sequence"},
            {"cmd": "unsubscribe_lead_from_sequence", "sequence_name": "Nope"},
            {"cmd": "calendar_cancel", "calendar_name": "Coaching", "class_name": "Intro"},
            {"cmd": "calendar_subscribe", "class_name": "Intro"},
            {"cmd": "calendar_subscribe", "calendar_name": "Coaching"},
            {"cmd": "calendar_subscribe", "calendar_name": "Nope", "class_name": "Intro"},
            {"cmd": "calendar_subscribe", "calendar_name": "Coaching", "class_name": "Nope"},
            {"cmd": "calendar_subscribe", "calendar_name": "Coaching", "class_name": "Intro"},
        ],
    ) == [
        "226", "225", "219", "229", "230", "107", "226", "220",
        "259", "255", "256", "257", "258", "112",
    ]  # fmt: skip


def test_transaction_and_subscription_codes(kartra: FakeKartra) -> None:
    def run(action: dict) -> tuple[str, dict]:
        _, body = kartra.handle({**AUTH, "actions": [action]})
        [(_, inner)] = body["actions"][0].items()
        return inner.get("type"), inner

    assert run({"cmd": "refund_transaction", "transaction_id": "1"})[0] == "247"
    assert run({"cmd": "refund_transaction", "transaction_id": "5001"})[1] == {
        "status": "Success",
        "transaction_refunded": "5001",
    }
    assert run({"cmd": "refund_transaction", "transaction_id": "5001"})[0] == "251"
    assert run({"cmd": "edit_subscription", "subscription_id": "1"})[0] == "248"
    assert run({"cmd": "edit_subscription", "subscription_id": "9001"})[0] == "285"
    modify = {"cmd": "modify_subscription_status", "subscription_id": "9001"}
    assert run({**modify, "subscription_status_modification": "stop"})[0] == "274"
    assert run({**modify, "subscription_status_modification": "pause"})[0] == "115"
    assert run({"cmd": "cancel_transaction", "transaction_id": "5001"})[0] is None
    assert run({"cmd": "cancel_transaction", "transaction_id": "5001"})[0] == "252"
    assert run({**modify, "subscription_status_modification": "cancel"})[0] == "252"
    assert run({**modify, "subscription_status_modification": "unpause"})[0] == "275"
    assert run({"cmd": "cancel_transaction", "transaction_id": "7"})[0] == "248"


def test_lead_commands(kartra: FakeKartra) -> None:
    create = [{"cmd": "create_lead"}, {"cmd": "assign_tag", "tag_name": "Customer"}]
    _, body = kartra.handle({**AUTH, "lead": {"email": "j@x.com"}, "actions": create})
    lead_id = body["actions"][0]["create_lead"]["lead_details"]["id"]
    # After a failed lead command the rest of the chain is not run.
    assert action_types(kartra, create, {"email": "J@X.com"}) == ["244"]
    assert action_types(kartra, [{"cmd": "edit_lead"}], {"email": "nobody@x.com"}) == ["243"]
    assert action_types(kartra, [{"cmd": "search_lead"}], {"id": lead_id}) == [None]
    bad_fields = {"id": lead_id, "custom_fields": "x"}
    assert action_types(kartra, [{"cmd": "edit_lead"}], bad_fields) == ["271"]
    rename = {"id": lead_id, "email": "ignored@x.com", "new_email": "new@x.com"}
    assert action_types(kartra, [{"cmd": "edit_lead"}], rename) == [None]
    assert kartra.find_lead("new@x.com").id == lead_id
    assert action_types(kartra, [{"cmd": "assign_tag", "tag_name": "Customer"}]) == ["243"]
    kartra.leads[lead_id].deleted = True
    assert action_types(kartra, [{"cmd": "search_lead"}], {"id": lead_id}) == ["245"]


def test_account_reads(kartra: FakeKartra) -> None:
    kartra.custom_fields = ["source"]
    _, body = kartra.handle({**AUTH, "actions": [{"cmd": "retrieve_account_tags"}]})
    assert body == {"status": "Success", "account_tags": ["Customer"]}
    reads = [{"cmd": "retrieve_account_sequences"}, {"cmd": "retrieve_custom_fields"}]
    _, body = kartra.handle({**AUTH, "actions": reads})
    sequences, fields = (inner for result in body["actions"] for inner in result.values())
    assert sequences["account_sequences"] == ["Onboarding"]
    assert [field["field_identifier"] for field in fields["custom_fields"]] == ["source"]


def test_get_lead(kartra: FakeKartra) -> None:
    kartra.add_lead("jane@example.com", first_name="Jane")
    _, body = kartra.handle({**AUTH, "get_lead": {"email": "jane@example.com"}})
    assert body["lead_details"]["fields"] == {"first_name": "Jane"}
    assert answer(kartra, {**AUTH, "get_lead": {"email": "x@y.z"}}) == ("Error", "234")
    assert answer(kartra, {**AUTH, "get_lead": "x"}) == ("Error", "236")


def test_test_mode_rewrites_created_emails(kartra: FakeKartra) -> None:
    kartra.test_mode = True
    create = [{"cmd": "create_lead"}]
    assert action_types(kartra, create, {"email": "john@gmail.com"}) == [None]
    assert kartra.find_lead("john@kartra.com") is not None
    assert action_types(kartra, create, {"email": "john@yahoo.com"}) == ["244"]


def test_rate_limit_is_a_sliding_second_per_app() -> None:
    now = [0.0]
    kartra = FakeKartra(app_id="app", accounts={"key": "pw"}, rate_limit=2, clock=lambda: now[0])
    params = {**AUTH, "actions": []}
    assert [kartra.handle(params)[0] for _ in range(3)] == [200, 200, 429]
    assert kartra.handle({**params, "app_id": "other"})[0] == 200
    now[0] = 0.9
    assert kartra.handle(params)[0] == 429
    now[0] = 1.01
    assert kartra.handle(params)[0] == 200


def test_calls_count_when_they_arrived_not_when_a_thread_got_to_them() -> None:
    kartra = FakeKartra(app_id="app", accounts={"key": "pw"}, rate_limit=2, clock=lambda: 9.0)
    params = {**AUTH, "actions": []}
    # arrived at 5.0 and 6.5; one that arrived at 5.2 is decoded last: 2 in (4.2, 5.2]
    assert kartra.arrive(params, at=5.0) and kartra.arrive(params, at=6.5)
    assert kartra.arrive(params, at=5.2)
    assert not kartra.arrive(params, at=5.9)
    assert kartra.arrive(params, at=6.21)


def test_control_endpoints() -> None:
    kartra = FakeKartra(app_id="app", accounts={"key": "pw"}, tags=["T"])
    http = create_app(kartra).test_client()
    body = encode({**AUTH, "lead": {"email": "j@x.com"}, "actions": [{"cmd": "create_lead"}]})
    content_type = "application/x-www-form-urlencoded"
    assert http.post("/api", data=body, content_type=content_type).status_code == 200
    [call] = http.get("/_fake/calls").get_json()
    assert call["params"]["api_key"] == call["params"]["api_password"] == "***"
    assert [lead["email"] for lead in http.get("/_fake/leads").get_json()] == ["j@x.com"]
    http.post("/_fake/down")
    assert http.post("/api", data=body, content_type=content_type).status_code == 503
    assert len(http.get("/_fake/calls").get_json()) == 2
    assert http.get("/_fake/answered").get_json() == 1
    http.post("/_fake/up")
    http.post("/_fake/reset")
    assert http.get("/_fake/calls").get_json() == []
    assert http.get("/_fake/leads").get_json() == []


def test_sequences_option() -> None:
    assert _sequences("Onboarding:1,2,3;Upsell: 1 ;") == {
        "Onboarding": ["1", "2", "3"],
        "Upsell": ["1"],
    }


@pytest.mark.parametrize(("kind", "applied"), [("503", False), ("reset", True), ("timeout", True)])
def test_chaos_fails_calls_the_ways_a_network_does(serve, kind, applied) -> None:
    from relay.kartra import Credentials, KartraClient

    fake = FakeKartra(app_id="a", accounts={"k": "p"}, tags=["T"])
    url = serve(fake)
    client = create_app(fake).test_client()
    client.post("/_fake/chaos", json={"rate": 1, "kinds": [kind], "timeout_ms": 600})
    plan = {
        "rule": "r",
        "account": "default",
        "lead": {"email": "x@example.com"},
        "lead_mode": "upsert",
        "actions": [{"cmd": "assign_tag", "tag_name": "T"}],
    }
    with KartraClient(url, timeout=(1, 0.3)) as kartra:
        call = kartra.call(
            Credentials("a", "k", "p"), kartra.build_params(Credentials("a", "k", "p"), plan)
        )
    assert call.error and call.kind == "ambiguous"
    assert (fake.find_lead("x@example.com") is not None) is applied
