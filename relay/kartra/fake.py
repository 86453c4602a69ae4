"""A fake Kartra API (API.md) for tests and demos: `python -m relay.kartra.fake --help`.

It follows the documented behaviour, including the undocumented choices the relay must
survive: call-level checks in Kartra's order, per-action results with string `type`
codes, a top-level "Error" when any action failed, Test Mode's `@kartra.com` email
rewrite and the 20-calls-per-second limit per App. Where Kartra's behaviour is unknown
the fake picks the stricter reading: after a failed lead command the rest of the chain
is not run and not reported. All accounts share one store of leads and assets.

Control endpoints for tests and demos: `GET /_fake/calls`, `GET /_fake/answered` (how
many calls were answered 200), `GET /_fake/leads`,
`POST /_fake/reset`, `POST /_fake/down`, `POST /_fake/up`, and `POST /_fake/chaos`
(`{"rate": 0.3, "kinds": ["503", "timeout", "reset"], "timeout_ms": 2000}`) to fail a
share of calls the ways a real network does.
"""

import argparse
import bisect
import random
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from flask import Flask, Response, jsonify, request

from relay.kartra.client import mask, rewrite_test_mode_email
from relay.kartra.commands import ACTIONS, LEAD_COMMANDS, LEAD_FIELDS
from relay.kartra.form import decode

_PROFILE_FIELDS = frozenset(LEAD_FIELDS) - {"id", "email", "new_email"}
_SUCCESS = {
    "subscribe_lead_to_list": ("101", "Lead subscribed to list"),
    "unsubscribe_lead_from_list": ("101", "Lead unsubscribed from list"),
    "assign_tag": ("103", "Tag added to lead"),
    "unassign_tag": ("104", "Tag removed from lead"),
    "give_points_to_lead": ("105", "Points added to lead"),
    "remove_points_from_lead": ("106", "Points removed from lead"),
    "subscribe_lead_to_sequence_at_step": ("107", "Lead added to sequence"),
    "calendar_subscribe": ("112", "Lead subscribed to class"),
    "calendar_cancel": ("113", "Lead unsubscribed from class"),
    "modify_subscription_status": ("115", "Subscription modified"),
    "edit_subscription": ("115", "Subscription modified"),
}
# Account reads a relay makes to check its mappings: command -> key of the answer.
_READS = {
    "retrieve_account_tags": "account_tags",
    "retrieve_account_lists": "account_lists",
    "retrieve_account_sequences": "account_sequences",
    "retrieve_custom_fields": "custom_fields",
}
_LEAD_MESSAGES = {
    "create_lead": "Lead created",
    "edit_lead": "Lead edited",
    "search_lead": "Lead found",
}


class _Failure(Exception):
    """Raised inside the fake to answer a Kartra error; never leaves this module."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def body(self) -> dict[str, str]:
        return {"status": "Error", "message": self.message, "type": str(self.code)}


@dataclass
class FakeLead:
    id: str
    email: str
    fields: dict[str, Any] = field(default_factory=dict)
    custom_fields: dict[str, Any] = field(default_factory=dict)
    tags: set[str] = field(default_factory=set)
    lists: set[str] = field(default_factory=set)
    sequences: dict[str, str] = field(default_factory=dict)
    calendar_classes: set[tuple[str, str]] = field(default_factory=set)
    points: int = 0
    deleted: bool = False

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(
            tags=sorted(self.tags),
            lists=sorted(self.lists),
            calendar_classes=sorted(map(list, self.calendar_classes)),
        )
        return data


class FakeKartra:
    """Kartra's state and rules, thread-safe; `handle` answers one decoded request."""

    def __init__(
        self,
        *,
        app_id: str,
        accounts: Mapping[str, str],
        tags: Iterable[str] = (),
        lists: Iterable[str] = (),
        sequences: Mapping[str, Iterable[str]] | None = None,
        calendars: Mapping[str, Iterable[str]] | None = None,
        custom_fields: Iterable[str] = (),
        transactions: Mapping[str, str | None] | None = None,
        subscriptions: Mapping[str, str] | None = None,
        test_mode: bool = False,
        rate_limit: int = 20,
        latency_ms: float = 0.0,
        jitter_ms: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app_id = app_id
        self.accounts = dict(accounts)
        self.tags = set(tags)
        self.lists = set(lists)
        self.sequences = {name: set(steps) for name, steps in (sequences or {}).items()}
        self.calendars = {name: set(classes) for name, classes in (calendars or {}).items()}
        self.custom_fields = list(custom_fields)
        # transaction id -> subscription id (or None); subscription id -> status
        self.transactions = dict(transactions or {})
        self.subscriptions = dict(subscriptions or {})
        self.test_mode = test_mode
        self.rate_limit = rate_limit
        self.latency_ms = latency_ms
        self.jitter_ms = jitter_ms
        self.down = False
        self.chaos = Chaos()
        self._clock = clock
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Forget leads, refunds, the call log and rate-limit windows; keep configuration."""
        with self._lock:
            self.leads: dict[str, FakeLead] = {}
            self.refunded: set[str] = set()
            self.calls: list[dict[str, Any]] = []
            self._windows: dict[str, list[float]] = {}
            self._next_id = 1001

    def add_lead(self, email: str, **fields: Any) -> FakeLead:
        """Seed a lead as if created earlier (emails are stored as given)."""
        with self._lock:
            return self._new_lead(email, fields)

    def find_lead(self, email: str) -> FakeLead | None:
        with self._lock:
            return self._by_email(email)

    def call_log(self) -> list[dict[str, Any]]:
        """A copy of the received calls, credentials masked."""
        with self._lock:
            return list(self.calls)

    def answered(self) -> int:
        """How many calls were answered 200: cheap to poll, unlike the whole log."""
        with self._lock:
            return sum(1 for call in self.calls if call["status"] == 200)

    def lead_list(self) -> list[dict[str, Any]]:
        with self._lock:
            return [lead.as_dict() for lead in self.leads.values()]

    def delay(self) -> float:
        """Seconds to wait before answering, drawn from latency ± jitter."""
        jitter = random.uniform(-self.jitter_ms, self.jitter_ms) if self.jitter_ms else 0.0
        return max(0.0, self.latency_ms + jitter) / 1000

    def arrive(self, params: Mapping[str, Any], at: float | None = None) -> bool:
        """Count a request against its App's limit at the time it arrived (`at`, else
        now), as Kartra does, before any processing time: False means it is to be
        answered 429."""
        with self._lock:
            return self._admit(str(params.get("app_id", "")), at)

    def handle(
        self,
        params: Mapping[str, Any],
        *,
        admitted: bool | None = None,
        arrived: float | None = None,
        peer: str | None = None,
    ) -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON body) for one decoded request, logged with secrets masked,
        the time it arrived and the `peer` it came from (address:port, one per
        connection). `admitted` is `arrive()`'s verdict when the caller took it already
        (the HTTP app does, before its simulated latency)."""
        with self._lock:
            if admitted is None:
                admitted = self._admit(str(params.get("app_id", "")))
            if self.down:
                status, body = 503, {"status": "Error", "message": "Service unavailable"}
            elif not admitted:
                status, body = 429, {"status": "Error", "message": "Too many requests"}
            else:
                try:
                    status, body = 200, self._run(params)
                except _Failure as failure:
                    status, body = 200, failure.body()
            self.calls.append(
                {
                    "time": arrived or time.time(),
                    "params": mask(params),
                    "status": status,
                    "response": body,
                    "peer": peer,
                }
            )
            return status, body

    def _admit(self, app_id: str, at: float | None = None) -> bool:
        """Admitted when fewer than `rate_limit` admitted calls arrived in the second up
        to `at`. Requests served by different threads take the lock in any order, so
        arrival times are kept sorted, not appended."""
        at = self._clock() if at is None else at
        window = self._windows.setdefault(app_id, [])
        del window[: bisect.bisect_right(window, at - 2.0)]
        if (
            bisect.bisect_right(window, at) - bisect.bisect_right(window, at - 1.0)
            >= self.rate_limit
        ):
            return False
        bisect.insort(window, at)
        return True

    def _run(self, params: Mapping[str, Any]) -> dict[str, Any]:
        if not params.get("app_id"):
            raise _Failure(238, "App ID is empty")
        if str(params["app_id"]) != self.app_id:
            raise _Failure(239, "App ID is not valid or the app is inactive")
        if not params.get("api_key"):
            raise _Failure(202, "API key is empty")
        api_key = str(params["api_key"])
        if api_key not in self.accounts:
            raise _Failure(203, "API key is not valid")
        if str(params.get("api_password")) != self.accounts[api_key]:
            raise _Failure(233, "API password is not valid")
        if "get_lead" in params:
            return self._get_lead(params["get_lead"])
        lead = params.get("lead", {})
        actions = params.get("actions")
        if not isinstance(lead, dict):
            raise _Failure(223, "Lead is not an array")
        if not isinstance(actions, list):
            raise _Failure(224, "Actions is not an array")
        for index, action in enumerate(actions):
            if not isinstance(action, dict) or not action.get("cmd"):
                raise _Failure(254, "Command is missing")
            cmd = action["cmd"]
            if cmd in LEAD_COMMANDS and index > 0:
                raise _Failure(254, f"{cmd} must be the first action")
            if cmd not in LEAD_COMMANDS and cmd not in ACTIONS and cmd not in _READS:
                raise _Failure(262, f"The app is not allowed to run {cmd}")
        if len(actions) == 1 and actions[0]["cmd"] in _READS:
            # Account reads answer with their data at the top level (API.md §5.1).
            return {"status": "Success", **self._read(actions[0]["cmd"])}
        lead_scoped = any(
            action["cmd"] in LEAD_COMMANDS
            or (action["cmd"] in ACTIONS and ACTIONS[action["cmd"]].needs_lead)
            for action in actions
        )
        if lead_scoped and not (lead.get("email") or lead.get("id")):
            raise _Failure(206, "Email or lead id is required")

        results: list[dict[str, Any]] = []
        subject: FakeLead | None = None
        for index, action in enumerate(actions):
            cmd = action["cmd"]
            try:
                if index == 0 and cmd in LEAD_COMMANDS:
                    subject, body = self._lead_command(cmd, lead)
                elif cmd in _READS:
                    body = self._read(cmd)
                else:
                    if subject is None and ACTIONS[cmd].needs_lead:
                        subject = self._resolve(lead)
                    body = self._action(cmd, action, subject)
            except _Failure as failure:
                results.append({cmd: failure.body()})
                if cmd in LEAD_COMMANDS:
                    break
                continue
            results.append({cmd: {"status": "Success", **body}})
        failed = any(inner["status"] == "Error" for result in results for inner in result.values())
        return {"status": "Error" if failed else "Success", "actions": results}

    def _read(self, cmd: str) -> dict[str, Any]:
        names = {
            "retrieve_account_tags": sorted(self.tags),
            "retrieve_account_lists": sorted(self.lists),
            "retrieve_account_sequences": sorted(self.sequences),
            "retrieve_custom_fields": [
                {
                    "field_id": str(number),
                    "field_identifier": identifier,
                    "field_type": "input_field",
                    "field_value": "",
                }
                for number, identifier in enumerate(self.custom_fields, start=1)
            ],
        }
        return {_READS[cmd]: names[cmd]}

    def _get_lead(self, query: Any) -> dict[str, Any]:
        if not isinstance(query, dict):
            raise _Failure(236, "get_lead is not an array")
        lead = self._lookup(query)
        if lead is None:
            raise _Failure(234, "No lead found")
        if lead.deleted:
            raise _Failure(245, "Lead is deleted")
        return {"status": "Success", "lead_details": lead.as_dict()}

    def _lookup(self, lead: Mapping[str, Any]) -> FakeLead | None:
        if lead.get("id"):
            return self.leads.get(str(lead["id"]))
        return self._by_email(str(lead.get("email", "")))

    def _by_email(self, email: str) -> FakeLead | None:
        matches = [lead for lead in self.leads.values() if lead.email.lower() == email.lower()]
        live = [lead for lead in matches if not lead.deleted]
        return (live or matches or [None])[0]

    def _resolve(self, lead: Mapping[str, Any]) -> FakeLead:
        found = self._lookup(lead)
        if found is None:
            raise _Failure(243, "No lead found")
        if found.deleted:
            raise _Failure(245, "Lead is deleted")
        return found

    def _new_lead(self, email: str, fields: Mapping[str, Any]) -> FakeLead:
        lead = FakeLead(id=str(self._next_id), email=email)
        self._next_id += 1
        self._update(lead, fields)
        self.leads[lead.id] = lead
        return lead

    def _update(self, lead: FakeLead, fields: Mapping[str, Any]) -> None:
        for entry in fields.get("custom_fields") or []:
            if not isinstance(entry, dict) or "field_identifier" not in entry:
                raise _Failure(271, "Wrong custom field format")
            lead.custom_fields[entry["field_identifier"]] = entry.get("field_value", "")
        lead.fields.update({k: v for k, v in fields.items() if k in _PROFILE_FIELDS})
        if fields.get("new_email"):
            lead.email = fields["new_email"]

    def _lead_command(self, cmd: str, lead: Mapping[str, Any]) -> tuple[FakeLead, dict[str, Any]]:
        if cmd == "create_lead":
            if not lead.get("email"):
                raise _Failure(206, "Email or lead id is required")
            email = str(lead["email"])
            if self.test_mode:
                email = rewrite_test_mode_email(email)
            existing = self._by_email(email)
            if existing is not None and not existing.deleted:
                raise _Failure(244, "Lead already exists")
            subject = self._new_lead(email, lead)
        else:
            subject = self._resolve(lead)
            if cmd == "edit_lead":
                self._update(subject, lead)
        details = {"id": subject.id, "email": subject.email}
        return subject, {"message": _LEAD_MESSAGES[cmd], "lead_details": details}

    def _action(self, cmd: str, action: Mapping[str, Any], lead: FakeLead | None) -> dict[str, Any]:
        """Apply one non-lead command; returns the success body or raises _Failure."""
        body = getattr(self, f"_do_{cmd}")(action, lead) or {}
        if cmd in _SUCCESS:
            code, message = _SUCCESS[cmd]
            body = {"message": message, "type": code, **body}
        return body

    def _do_assign_tag(self, action: Mapping[str, Any], lead: FakeLead) -> None:
        lead.tags.add(self._asset(action, "tag_name", self.tags, 211, 212, "Tag"))

    def _do_unassign_tag(self, action: Mapping[str, Any], lead: FakeLead) -> None:
        lead.tags.discard(self._asset(action, "tag_name", self.tags, 213, 214, "Tag"))

    def _do_subscribe_lead_to_list(self, action: Mapping[str, Any], lead: FakeLead) -> None:
        lead.lists.add(self._asset(action, "list_name", self.lists, 207, 231, "List"))

    def _do_unsubscribe_lead_from_list(self, action: Mapping[str, Any], lead: FakeLead) -> None:
        lead.lists.discard(self._asset(action, "list_name", self.lists, 208, 209, "List"))

    def _do_give_points_to_lead(self, action: Mapping[str, Any], lead: FakeLead) -> None:
        lead.points += self._points(action, 215, 227)

    def _do_remove_points_from_lead(self, action: Mapping[str, Any], lead: FakeLead) -> None:
        lead.points -= self._points(action, 217, 228)

    def _do_subscribe_lead_to_sequence_at_step(
        self, action: Mapping[str, Any], lead: FakeLead
    ) -> None:
        name, step = str(action.get("sequence_name", "")), str(action.get("step", ""))
        if not name:
            raise _Failure(226, "Sequence name is empty")
        if not step:
            raise _Failure(225, "Step is empty")
        if name not in self.sequences:
            raise _Failure(219, "Sequence does not exist")
        if not step.isalnum():
            raise _Failure(229, "Step must be alphanumeric")
        if step not in self.sequences[name]:
            raise _Failure(230, "Step does not exist")
        lead.sequences[name] = step

    def _do_unsubscribe_lead_from_sequence(
        self, action: Mapping[str, Any], lead: FakeLead
    ) -> dict[str, str]:
        name = str(action.get("sequence_name", ""))
        if not name:
            raise _Failure(226, "Sequence name is empty")
        if name not in self.sequences:
            raise _Failure(220, "Sequence does not exist")
        lead.sequences.pop(name, None)
        return {"message": "Lead unsubscribed from sequence"}

    def _calendar_class(self, action: Mapping[str, Any]) -> tuple[str, str]:
        calendar, klass = str(action.get("calendar_name", "")), str(action.get("class_name", ""))
        if not calendar:
            raise _Failure(255, "Calendar name is empty")
        if not klass:
            raise _Failure(256, "Class name is empty")
        if calendar not in self.calendars:
            raise _Failure(257, "Calendar does not exist")
        if klass not in self.calendars[calendar]:
            raise _Failure(258, "Class does not exist")
        return calendar, klass

    def _do_calendar_subscribe(self, action: Mapping[str, Any], lead: FakeLead) -> None:
        lead.calendar_classes.add(self._calendar_class(action))

    def _do_calendar_cancel(self, action: Mapping[str, Any], lead: FakeLead) -> None:
        booking = self._calendar_class(action)
        if booking not in lead.calendar_classes:
            raise _Failure(259, "Lead has no active or pending subscription to this class")
        lead.calendar_classes.discard(booking)

    def _do_refund_transaction(self, action: Mapping[str, Any], lead: None) -> dict[str, str]:
        transaction = str(action.get("transaction_id", ""))
        if transaction not in self.transactions:
            raise _Failure(247, "Transaction does not exist")
        if transaction in self.refunded:
            raise _Failure(251, "Transaction already refunded")
        self.refunded.add(transaction)
        return {"transaction_refunded": transaction}

    def _do_cancel_transaction(self, action: Mapping[str, Any], lead: None) -> dict[str, str]:
        subscription = str(action.get("transaction_internal_subscription_id", ""))
        if not subscription:
            subscription = str(self.transactions.get(str(action.get("transaction_id")), ""))
        self._cancel(subscription)
        return {"transaction_internal_subscription_id": subscription}

    def _do_modify_subscription_status(self, action: Mapping[str, Any], lead: None) -> None:
        subscription = str(action.get("subscription_id", ""))
        change = action.get("subscription_status_modification")
        status = self._subscription(subscription)
        if change not in ("cancel", "pause", "unpause"):
            raise _Failure(274, "Wrong subscription status modification")
        if status == "Terminated" or (status == "Cancelled" and change != "cancel"):
            raise _Failure(275, "Cancelled or terminated subscription cannot be updated")
        if change == "cancel":
            self._cancel(subscription)
        else:
            self.subscriptions[subscription] = "Paused" if change == "pause" else "Active"

    def _do_edit_subscription(self, action: Mapping[str, Any], lead: None) -> None:
        self._subscription(str(action.get("subscription_id", "")))
        if set(action) <= {"cmd", "subscription_id"}:
            raise _Failure(285, "No editable parameters for subscription")

    def _subscription(self, subscription: str) -> str:
        if subscription not in self.subscriptions:
            raise _Failure(248, "Subscription does not exist")
        return self.subscriptions[subscription]

    def _cancel(self, subscription: str) -> None:
        if self._subscription(subscription) == "Cancelled":
            raise _Failure(252, "Subscription already cancelled")
        self.subscriptions[subscription] = "Cancelled"

    @staticmethod
    def _asset(
        action: Mapping[str, Any], key: str, known: set[str], empty: int, missing: int, kind: str
    ) -> str:
        name = str(action.get(key, ""))
        if not name:
            raise _Failure(empty, f"{kind} name is empty")
        if name not in known:
            raise _Failure(missing, f"{kind} does not exist")
        return name

    @staticmethod
    def _points(action: Mapping[str, Any], empty: int, not_numeric: int) -> int:
        points = str(action.get("points", "")).strip()
        if not points:
            raise _Failure(empty, "Points are empty")
        if not points.lstrip("-").isdecimal():
            raise _Failure(not_numeric, "Points must be numeric")
        return int(points)


def create_app(fake: FakeKartra) -> Flask:
    """A Flask app serving `fake` at `POST /api`, plus the `/_fake/*` control endpoints."""
    app = Flask(__name__)

    @app.post("/api")
    def api() -> tuple[Response, int]:
        arrived = getattr(request.environ.get("gunicorn.socket"), "arrived", None) or time.time()
        params = decode(request.get_data())
        admitted = fake.arrive(params, at=arrived)
        pause = fake.delay()
        if pause:
            time.sleep(pause)
        failure = fake.chaos.draw()
        if failure == "503":
            return jsonify({"status": "Error", "message": "Service unavailable"}), 503
        peer = f"{request.remote_addr}:{request.environ.get('REMOTE_PORT')}"
        status, body = fake.handle(params, admitted=admitted, arrived=arrived, peer=peer)
        if failure == "timeout":
            time.sleep(fake.chaos.timeout_ms / 1000)
        elif failure == "reset":
            _drop_connection()
        return jsonify(body), status

    @app.post("/_fake/chaos")
    def chaos() -> Response:
        settings = request.get_json(force=True)
        fake.chaos = Chaos(
            float(settings.get("rate", 0)),
            tuple(settings.get("kinds", Chaos.KINDS)),
            float(settings.get("timeout_ms", 2000)),
        )
        return jsonify({"status": "ok"})

    @app.get("/_fake/calls")
    def calls() -> Response:
        return jsonify(fake.call_log())

    @app.get("/_fake/answered")
    def answered() -> Response:
        return jsonify(fake.answered())

    @app.get("/_fake/leads")
    def leads() -> Response:
        return jsonify(fake.lead_list())

    @app.post("/_fake/reset")
    def reset() -> Response:
        fake.reset()
        return jsonify({"status": "ok"})

    @app.post("/_fake/down")
    def down() -> Response:
        fake.down = True
        return jsonify({"status": "down"})

    @app.post("/_fake/up")
    def up() -> Response:
        fake.down = False
        return jsonify({"status": "up"})

    return app


@dataclass(frozen=True)
class Chaos:
    """Failures for crash tests, drawn per request. "503" answers before doing anything;
    "timeout" and "reset" apply the call first and then answer too late or not at all,
    the ambiguous failures a real network produces."""

    rate: float = 0.0
    kinds: tuple[str, ...] = ("503", "timeout", "reset")
    timeout_ms: float = 2000.0
    KINDS = ("503", "timeout", "reset")

    def draw(self) -> str | None:
        if self.rate and random.random() < self.rate:
            return random.choice(self.kinds)
        return None


def _drop_connection() -> None:
    """End the client's connection without an answer (werkzeug's and gunicorn's servers
    both expose the socket); the server's own attempt to answer then fails quietly."""
    sock = request.environ.get("werkzeug.socket") or request.environ.get("gunicorn.socket")
    if sock is not None:
        sock.shutdown(socket.SHUT_RDWR)


def _names(value: str) -> list[str]:
    return [name.strip() for name in value.split(",") if name.strip()]


def _sequences(value: str) -> dict[str, list[str]]:
    """`"Onboarding:1,2,3;Upsell:1"` → {"Onboarding": ["1", "2", "3"], "Upsell": ["1"]}."""
    sequences = {}
    for entry in value.split(";"):
        name, _, steps = entry.partition(":")
        if name.strip():
            sequences[name.strip()] = _names(steps)
    return sequences


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m relay.kartra.fake", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--app-id", required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--api-password", required=True)
    parser.add_argument("--tags", default="", help="comma-separated tag names")
    parser.add_argument("--lists", default="", help="comma-separated list names")
    parser.add_argument(
        "--sequences", default="", help='"Name:1,2,3;Other:1" sequence names and their steps'
    )
    parser.add_argument("--custom-fields", default="", help="comma-separated identifiers")
    parser.add_argument("--test-mode", action="store_true")
    parser.add_argument("--rate-limit", type=int, default=20, help="calls per second per App")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--jitter-ms", type=float, default=0.0)
    args = parser.parse_args(argv)
    fake = FakeKartra(
        app_id=args.app_id,
        accounts={args.api_key: args.api_password},
        tags=_names(args.tags),
        lists=_names(args.lists),
        sequences=_sequences(args.sequences),
        custom_fields=_names(args.custom_fields),
        test_mode=args.test_mode,
        rate_limit=args.rate_limit,
        latency_ms=args.latency_ms,
        jitter_ms=args.jitter_ms,
    )
    serve_keep_alive(create_app(fake), args.host, args.port)


# Linux's SO_TIMESTAMP, which Python's socket module does not name: the kernel stamps each
# segment with the time it reached the machine, and recvmsg() hands the stamp over.
SO_TIMESTAMP = 29
_TIMEVAL = struct.Struct("qq")


class _StampedSocket(socket.socket):
    """A client connection that knows when the current request's first bytes reached the
    machine (`arrived`, on time.time()'s clock), whenever its thread gets to read them."""

    arrived: float | None = None

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        data, ancillary, _, _ = self.recvmsg(bufsize, socket.CMSG_SPACE(_TIMEVAL.size), flags)
        for level, kind, stamp in ancillary:
            if self.arrived is None and (level, kind) == (socket.SOL_SOCKET, SO_TIMESTAMP):
                seconds, micros = _TIMEVAL.unpack(stamp[: _TIMEVAL.size])
                self.arrived = seconds + micros / 1e6
        return data


def serve_keep_alive(app: Flask, host: str, port: int) -> None:
    """Serve `app` as Kartra's own web server does: HTTP/1.1 connections kept alive between
    requests. werkzeug's development server closes every connection, which would have the
    relay pay for a new TCP connection per call and leave its connection pool untested.

    gunicorn, one process (the fake's state lives in its memory) with a thread per request
    in flight, enough for several dispatchers; idle connections are kept 75 s, nginx's
    default. A call counts against the limit from when its first bytes reached the
    machine, by the kernel's stamp (SO_TIMESTAMP), as it would on Kartra's own servers:
    on a machine shared with the relay, the thread that handles a call can run tens of
    milliseconds later (up to 55 ms at load 3), and stamping then moved calls closer
    together than they were sent."""
    from gunicorn.app.base import BaseApplication
    from gunicorn.workers.gthread import ThreadWorker

    from relay.gunicorn_worker import Listener

    class StampingWorker(ThreadWorker):
        def init_process(self) -> None:
            for listener in self.sockets:  # accepted connections inherit the option
                listener.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMP, 1)
            super().init_process()

        def accept(self, listener: socket.socket) -> None:
            super().accept(Listener(listener, _StampedSocket))

        def handle(self, conn):
            conn.sock.arrived = None  # the next request's clock starts at its first read
            return super().handle(conn)

    settings = {
        "bind": f"{host}:{port}",
        "workers": 1,
        "worker_class": StampingWorker,
        "threads": 64,
        "keepalive": 75,
        "graceful_timeout": 5,
        "accesslog": None,
        "loglevel": "warning",
        "when_ready": lambda arbiter: print(
            f"fake Kartra listening on {arbiter.LISTENERS[0]}/api", flush=True
        ),
    }

    class Server(BaseApplication):
        def load_config(self) -> None:
            for key, value in settings.items():
                self.cfg.set(key, value)

        def load(self) -> Flask:
            return app

    Server().run()


if __name__ == "__main__":
    main()
