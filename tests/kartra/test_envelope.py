"""Envelope parsing (API.md §5.2) and how `KartraClient.call` reports each answer."""

import html
import json
from urllib.parse import quote_plus

import pytest
import requests
from urllib3.exceptions import ProtocolError

from relay.kartra import Credentials, parse_response
from relay.kartra.form import decode
from tests.kartra.conftest import APP_ID

PARAMS = {
    "app_id": "app",
    "api_key": "k",
    "api_password": "p",
    "lead": {"email": "jane@example.com"},
    "actions": [{"cmd": "assign_tag", "tag_name": "Customer"}],
}


def test_wrapped_chain_maps_results_by_position() -> None:
    payload = {
        "status": "Success",
        "actions": [
            {"create_lead": {"status": "Success", "lead_details": {"id": "1234"}}},
            {"assign_tag": {"status": "Error", "message": "Tag does not exist", "type": "212"}},
        ],
    }
    results, failure = parse_response(payload, ["create_lead", "assign_tag"])
    assert failure is None
    assert [(r.cmd, r.status, r.type, r.kind) for r in results] == [
        ("create_lead", "success", None, "ok"),
        ("assign_tag", "error", 212, "action_config"),
    ]
    assert results[0].data == {"lead_details": {"id": "1234"}}
    assert results[1].message == "Tag does not exist"


def test_flat_call_level_error() -> None:
    results, failure = parse_response(
        {"status": "Error", "message": "API key not valid", "type": "203"}, ["assign_tag"]
    )
    assert results == []
    assert failure is not None
    assert (failure.type, failure.kind, failure.message) == (203, "account", "API key not valid")


def test_flat_single_action_result_with_int_type_and_lowercase_status() -> None:
    results, failure = parse_response({"status": "error", "type": 212}, ["assign_tag"])
    assert failure is None
    assert [(r.cmd, r.type, r.kind) for r in results] == [("assign_tag", 212, "action_config")]
    results, _ = parse_response({"status": "SUCCESS", "type": 103}, ["assign_tag"])
    assert (results[0].status, results[0].type, results[0].kind) == ("success", 103, "ok")


def test_flat_error_for_a_chain_fails_the_call() -> None:
    results, failure = parse_response(
        {"status": "Error", "type": "212"}, ["create_lead", "assign_tag"]
    )
    assert results == []
    assert failure is not None
    assert failure.kind == "action_config"


def test_data_at_top_level_and_under_the_command_key() -> None:
    results, _ = parse_response(
        {"status": "Success", "account_tags": ["A", "B"]}, ["retrieve_account_tags"]
    )
    assert results[0].data == {"account_tags": ["A", "B"]}
    results, _ = parse_response(
        {"refund_transaction": {"status": "Success", "transaction_refunded": "5001"}},
        ["refund_transaction"],
    )
    assert (results[0].kind, results[0].data) == ("ok", {"transaction_refunded": "5001"})


def test_success_equivalent_and_ambiguous_codes() -> None:
    payload = {
        "status": "Error",
        "actions": [
            {"refund_transaction": {"status": "Error", "type": "251"}},
            {"cancel_transaction": {"status": "Error", "type": "267"}},
            {"refund_transaction": {"status": "Error", "type": "999", "message": "new"}},
            {"refund_transaction": {"status": "Error"}},
        ],
    }
    results, _ = parse_response(payload, ["refund_transaction", "cancel_transaction"] * 2)
    assert [r.kind for r in results] == ["success_equivalent", "ambiguous", "data", "data"]
    assert (results[2].type, results[2].message) == (999, "new")


def test_missing_and_unreadable_action_results_are_ambiguous() -> None:
    payload = {"status": "Error", "actions": ["garbage"]}
    results, _ = parse_response(payload, ["assign_tag", "give_points_to_lead"])
    assert [(r.cmd, r.kind) for r in results] == [
        ("assign_tag", "ambiguous"),
        ("give_points_to_lead", "ambiguous"),
    ]


@pytest.mark.parametrize("payload", [["not", "an", "object"], {"weird": 1}])
@pytest.mark.parametrize("cmds", [["assign_tag"], ["create_lead", "assign_tag"]])
def test_unknown_shapes_fail_the_call_as_ambiguous(payload: object, cmds: list[str]) -> None:
    results, failure = parse_response(payload, cmds)
    assert results == []
    assert failure is not None
    assert failure.kind == "ambiguous"


def test_call_level_error_wins_over_an_actions_list() -> None:
    payload = {"status": "Error", "type": "233", "actions": []}
    results, failure = parse_response(payload, ["assign_tag"])
    assert (results, failure.kind if failure else None) == ([], "account")


def test_flat_success_for_a_chain_counts_for_every_action() -> None:
    results, failure = parse_response({"status": "Success"}, ["create_lead", "assign_tag"])
    assert failure is None
    assert [(r.cmd, r.kind) for r in results] == [("create_lead", "ok"), ("assign_tag", "ok")]


def test_call_posts_a_form_with_timeouts(mock_client, credentials: Credentials) -> None:
    client, adapter = mock_client(
        lambda request: (200, json.dumps({"status": "Success", "type": "103"})), timeout=(2, 7)
    )
    call = client.call(credentials, PARAMS)
    [(request, timeout)] = adapter.sent
    assert timeout == (2, 7)
    assert request.method == "POST"
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert decode(request.body) == {
        **PARAMS,
        "app_id": credentials.app_id,
        "api_key": credentials.api_key,
        "api_password": credentials.api_password,
    }
    assert call.http_status == 200
    assert call.error is None
    assert [r.kind for r in call.results] == ["ok"]


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (429, '{"status":"Error","message":"Too many requests"}', "transient"),
        (502, "<html>Bad gateway</html>", "ambiguous"),
        (503, "", "ambiguous"),
        (404, "not found", "transient"),
        (200, "<html>maintenance</html>", "ambiguous"),
    ],
)
def test_http_failures(mock_client, credentials: Credentials, status, body, kind) -> None:
    client, _ = mock_client(lambda request: (status, body))
    call = client.call(credentials, PARAMS)
    assert (call.http_status, call.kind, call.results) == (status, kind, [])
    assert call.error


def test_non_json_text_is_truncated(mock_client, credentials: Credentials) -> None:
    client, _ = mock_client(lambda request: (200, "x" * 5000))
    call = client.call(credentials, PARAMS)
    assert call.response == "x" * 2000


def test_reset_after_sending_is_ambiguous(mock_client, credentials: Credentials) -> None:
    def reset(request: requests.PreparedRequest) -> tuple[int, str]:
        raise requests.ConnectionError(
            ProtocolError("Connection aborted.", ConnectionResetError(104, "reset"))
        )

    client, _ = mock_client(reset)
    call = client.call(credentials, PARAMS)
    assert (call.http_status, call.kind) == (None, "ambiguous")
    assert "connection lost after sending" in call.error


def test_secrets_echoed_by_kartra_are_scrubbed(mock_client, credentials: Credentials) -> None:
    echo = {
        "status": "Error",
        "type": "203",
        "message": f"key {credentials.api_key} / {credentials.api_password} not valid",
    }
    client, _ = mock_client(lambda request: (200, json.dumps(echo)))
    call = client.call(credentials, PARAMS)
    text = repr(call)
    assert credentials.api_key not in text
    assert credentials.api_password not in text
    assert call.request["api_key"] == "***"
    assert call.response["message"] == "key *** / *** not valid"


def test_secrets_echoed_in_another_form_or_cut_short_are_scrubbed(mock_client) -> None:
    """An error page (a proxy's, say) that quotes the form-encoded request body, escaped
    as HTML; or a secret cut by the 2,000-character limit on stored text."""
    credentials = Credentials(APP_ID, "Key+/abc=XYZ123", "Pass word&<UVW>")
    body = {}

    def echo(request: requests.PreparedRequest) -> tuple[int, str]:
        body["sent"] = request.body
        return 502, f"<pre>{html.escape(request.body)}</pre>"

    client, _ = mock_client(echo)
    call = client.call(credentials, PARAMS)
    assert quote_plus(credentials.api_key) in body["sent"]
    assert "api_key=***&amp;api_password=***" in call.response
    for secret in (credentials.api_key, credentials.api_password):
        for form in (secret, quote_plus(secret), html.escape(secret)):
            assert form not in repr(call)

    client, _ = mock_client(lambda request: (502, "x" * 1995 + credentials.api_key))
    call = client.call(credentials, PARAMS)
    assert call.response == "x" * 1995 + "***"
