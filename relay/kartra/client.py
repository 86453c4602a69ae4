"""Kartra API client: one HTTP call (`KartraClient.call`) and one delivery (`deliver`).

Exceptions raised by `KartraClient.deliver`, and what the caller should do::

    KartraError                 base class; never raised itself
    ├── TransientError          retry later. HTTP 429, 5xx, timeouts, connection errors,
    │                           non-JSON bodies, unexpected HTTP statuses, codes 266/267.
    │                           `.ambiguous` is True when the request may have been
    │                           applied (read timeout, 5xx, reset after sending, non-JSON
    │                           body, 266/267): re-read Kartra before replaying
    │                           non-idempotent actions. False for connect errors, connect
    │                           timeouts and 429: nothing reached Kartra.
    ├── AccountError            pause the whole ACCOUNT until an operator acts: credentials,
    │                           App or account state (201-204, 233, 238-242, 262) and relay
    │                           defects in the request shape (223, 224, 236, 254).
    ├── ActionConfigError       this delivery needs an operator (a tag, list, sequence,
    │                           calendar or custom field is missing or misnamed in Kartra
    │                           or in the mapping); replay after the fix, don't retry.
    └── DataError               the event's data can't be applied (206, 243, 245, 247, 271,
                                ...); also any code not yet classified. Don't retry.

Every exception carries `.outcome` (the calls made so far and the indices of the plan's
actions that are done), `.code`, `.cmd` and `.kartra_message`; its text names the code,
the command, Kartra's message and a hint of the fix.

`classify(code)` is the one table (API.md §11) behind all of this. Secrets never leave
this module: requests are logged through `mask` and Kartra's replies are scrubbed of the
key and password before they are stored or put in a message.
"""

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import MaxRetryError, NewConnectionError

from relay.kartra.commands import ACTIONS, LEAD_COMMANDS, LEAD_FIELDS
from relay.kartra.form import encode
from relay.logs import secret_forms

MASK = "***"
SECRET_PARAMS = frozenset({"api_key", "api_password"})
_CREDENTIAL_PARAMS = frozenset({"app_id", *SECRET_PARAMS})
RESPONSE_TEXT_LIMIT = 2000

# API.md §11 (+ §9 success codes). One row per documented code; anything else is "data".
CODE_CLASSES: dict[int, str] = {
    **dict.fromkeys((101, 103, 104, 105, 106, 107, 112, 113, 114, 115), "ok"),
    **dict.fromkeys((251, 252, 259, 264), "success_equivalent"),
    429: "transient",
    **dict.fromkeys((266, 267), "ambiguous"),
    **dict.fromkeys(
        (201, 202, 203, 204, 233, 238, 239, 240, 242, 262, 223, 224, 236, 254), "account"
    ),
    **dict.fromkeys(
        (207, 208, 209, 211, 212, 213, 214, 219, 220, 225, 226, 229, 230, 231)
        + (255, 256, 257, 258, 263, 265, 269, 270, 272, 273),
        "action_config",
    ),
    **dict.fromkeys(
        (206, 215, 217, 227, 228, 234, 243, 244, 245, 247, 248, 249, 250, 253, 260, 261)
        + (268, 271, 274, 275, 276, 277, 278, 280, 281, 282, 283, 284, 285, 290),
        "data",
    ),
}

# Codes Kartra answers for the call as a whole (flat body, nothing executed).
CALL_LEVEL_CODES = frozenset(
    {201, 202, 203, 204, 206, 223, 224, 233, 236, 238, 239, 240, 242, 254, 262}
)
_DONE_KINDS = frozenset({"ok", "success_equivalent"})
_LEAD_GONE = frozenset({243, 245})
_RANK = {"account": 0, "transient": 1, "ambiguous": 1, "action_config": 2, "data": 3}

_HINTS: dict[int, str] = {
    201: "the Kartra URL must use https",
    202: "the account has no API key configured in the relay",
    203: "the API key is not valid: copy it again from Kartra (Integrations > API)",
    204: "the Kartra account is inactive: its owner must reactivate it",
    206: "the lead has neither email nor id: the mapping must supply one",
    207: "the list name is empty: fix the mapping",
    208: "the list name is empty: fix the mapping",
    209: "list {list_name!r} does not exist in the Kartra account: create it or fix the mapping",
    211: "the tag name is empty: fix the mapping",
    212: "tag {tag_name!r} does not exist in the Kartra account: create it or fix the mapping",
    213: "the tag name is empty: fix the mapping",
    214: "tag {tag_name!r} does not exist in the Kartra account: create it or fix the mapping",
    215: "the points value is empty: fix the mapping or the event",
    217: "the points value is empty: fix the mapping or the event",
    219: "sequence {sequence_name!r} does not exist in the Kartra account: create it or fix "
    "the mapping",
    220: "sequence {sequence_name!r} does not exist in the Kartra account: create it or fix "
    "the mapping",
    225: "the sequence step is empty: fix the mapping",
    226: "the sequence name is empty: fix the mapping",
    227: "points {points!r} is not a number: fix the mapping or the event",
    228: "points {points!r} is not a number: fix the mapping or the event",
    229: "step {step!r} must be alphanumeric: fix the mapping",
    230: "step {step!r} does not exist in sequence {sequence_name!r}: add it in Kartra or fix "
    "the mapping",
    231: "list {list_name!r} does not exist in the Kartra account: create it or fix the mapping",
    233: "the API password is not valid: copy it again from Kartra (Integrations > API)",
    238: "the relay has no Kartra app_id configured",
    239: "the app_id is unknown or the App is inactive: check the App in Kartra",
    240: "the App developer's Kartra account is inactive",
    242: "Kartra refuses calls from this IP: allow the relay's IP for the App",
    243: "no such lead in Kartra: check the event's email or lead id (rules that act on "
    "existing leads never create one)",
    245: "the lead was deleted in Kartra: restore it there or drop the event",
    247: "transaction {transaction_id!r} does not exist in Kartra",
    248: "subscription {subscription_id!r} does not exist in Kartra",
    255: "the calendar name is empty: fix the mapping",
    256: "the class name is empty: fix the mapping",
    257: "calendar {calendar_name!r} does not exist or is not completed in Kartra",
    258: "class {class_name!r} does not exist in calendar {calendar_name!r}",
    262: "the App may not run {cmd}: allow the command for the App in Kartra",
    266: "the refund may have happened: re-read the lead's transactions before retrying",
    267: "the cancellation may have happened: re-read the subscription before retrying",
    271: "a custom field value has the wrong format for its field type: fix the mapping "
    "(option ids for drop-downs, a list of ids for checkboxes)",
}
_KIND_HINTS = {
    "account": "fix the account's Kartra credentials or App settings, then resume the account",
    "transient": "nothing was applied; retry later",
    "ambiguous": "the request may have been applied: re-read Kartra before retrying",
    "action_config": "fix the Kartra account or the mapping, then replay the delivery",
    "data": "the event's data cannot be applied: fix the mapping or the event, or drop it",
}
_RELAY_DEFECT_HINT = "relay defect: the request was malformed; report a bug"


def classify(code: int) -> str:
    """Class of a Kartra `type` code: "ok", "success_equivalent", "transient", "ambiguous",
    "account", "action_config" or "data" (also for codes not documented yet)."""
    return CODE_CLASSES.get(code, "data")


def mask(params: Any) -> Any:
    """A deep copy of `params` with every api_key/api_password value replaced by "***"."""
    if isinstance(params, Mapping):
        return {
            key: MASK if key in SECRET_PARAMS and value is not None else mask(value)
            for key, value in params.items()
        }
    if isinstance(params, list | tuple):
        return [mask(item) for item in params]
    return params


@dataclass(frozen=True, repr=False)
class Credentials:
    app_id: str
    api_key: str
    api_password: str

    def __repr__(self) -> str:
        return f"Credentials(app_id={self.app_id!r}, api_key={MASK!r}, api_password={MASK!r})"


@dataclass
class ActionResult:
    """Kartra's answer for one action. `kind` is `classify(type)` for errors, "ok" for
    successes; `data` holds whatever else Kartra returned (e.g. `lead_details`)."""

    cmd: str
    status: str
    type: int | None
    message: str
    kind: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class KartraCall:
    """One HTTP request and what came back, safe to store: secrets are masked.

    `error` is set when the call failed as a whole (transport, HTTP status, body or a
    call-level Kartra code); then `kind` is its class and `code` the Kartra `type` or HTTP
    status, and `results` is empty.
    """

    request: dict[str, Any]
    http_status: int | None
    response: Any
    duration_ms: float
    started_at: datetime
    results: list[ActionResult] = field(default_factory=list)
    error: str | None = None
    kind: str | None = None
    code: int | None = None


@dataclass
class Outcome:
    """Progress of one delivery: every call made, the lead id learnt, and the indices of
    `plan["actions"]` that have succeeded so far (pass them back as `done` on retry)."""

    calls: list[KartraCall] = field(default_factory=list)
    lead_id: str | None = None
    done: list[int] = field(default_factory=list)


class KartraError(Exception):
    """Base class: a delivery did not fully apply. See the tree at the top of the module."""

    def __init__(
        self,
        message: str,
        *,
        outcome: Outcome,
        code: int | None = None,
        cmd: str | None = None,
        kartra_message: str | None = None,
    ) -> None:
        super().__init__(message)
        self.outcome = outcome
        self.code = code
        self.cmd = cmd
        self.kartra_message = kartra_message


class TransientError(KartraError):
    """Retry later; if `ambiguous`, re-read Kartra first: the request may have applied."""

    def __init__(self, message: str, *, ambiguous: bool, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.ambiguous = ambiguous


class AccountError(KartraError):
    """Pause every delivery of the account until an operator fixes its configuration."""


class ActionConfigError(KartraError):
    """This delivery needs an operator to fix Kartra or the mapping; replay afterwards."""


class DataError(KartraError):
    """The event's data cannot be applied; retrying will not help."""


def _nested(action: Mapping[str, Any]) -> dict[str, Any]:
    """A plan action as Kartra reads it: `base[key]` params (edit_subscription's
    `subscription_recurrence[recurring_period_1]`) become `{base: {key: value}}`."""
    nested: dict[str, Any] = {}
    for param, value in action.items():
        base, bracket, key = param.partition("[")
        if bracket and key.endswith("]"):
            nested.setdefault(base, {})[key[:-1]] = value
        else:
            nested[param] = value
    return nested


def build_params(
    credentials: Credentials,
    plan: Mapping[str, Any],
    *,
    lead_id: str | None = None,
    done: Iterable[int] = (),
    lead_command: str | None = None,
) -> dict[str, Any]:
    """The nested params of the next call for `plan`, leaving out the actions in `done`.

    Upsert plans get a lead command at actions[0]: `create_lead` with every lead field
    while no id is known, `edit_lead` by `lead[id]` with the profile fields once one is
    (from `lead_id` or the plan's own `lead.id`). Pass `lead_command="edit_lead"` without
    an id to address the lead by email (the 244 path), or "search_lead" to only resolve
    it. "existing" plans send just `lead[id]` or `lead[email]` and let Kartra look the
    lead up. Raises ValueError for plans the mapping engine should never produce.
    """
    skip = set(done)
    actions = [
        _nested(action) for i, action in enumerate(plan.get("actions") or []) if i not in skip
    ]
    for action in actions:
        cmd = action.get("cmd")
        if cmd not in ACTIONS:
            raise ValueError(f"plan action {cmd!r} is not a Kartra action command")
    params: dict[str, Any] = {
        "app_id": credentials.app_id,
        "api_key": credentials.api_key,
        "api_password": credentials.api_password,
    }
    lead = plan.get("lead")
    if lead is None:
        if lead_command is not None:
            raise ValueError(f"{lead_command} needs a lead, but the plan has none")
        params["actions"] = actions
        return params

    unknown = set(lead) - set(LEAD_FIELDS) - {"custom_fields"}
    if unknown:
        raise ValueError(f"plan lead has fields Kartra does not know: {sorted(unknown)}")
    known_id = lead_id or lead.get("id")
    if not (known_id or lead.get("email")):
        raise ValueError("plan lead has neither email nor id")
    profile = {key: value for key, value in lead.items() if key not in ("id", "email")}
    mode = plan.get("lead_mode", "upsert")
    if lead_command is None and mode == "upsert":
        lead_command = "edit_lead" if known_id else "create_lead"
    elif lead_command is None and mode != "existing":
        raise ValueError(f"unknown lead_mode {mode!r}")
    if lead_command is not None and lead_command not in LEAD_COMMANDS:
        raise ValueError(f"{lead_command!r} is not a lead command")

    address = {"id": known_id} if known_id else {"email": lead["email"]}
    if lead_command == "create_lead":
        params["lead"] = {"email": lead.get("email"), **profile}
    elif lead_command == "edit_lead":
        params["lead"] = {**address, **profile}
    else:
        params["lead"] = address
    head = [{"cmd": lead_command}] if lead_command else []
    params["actions"] = head + actions
    return params


def parse_response(payload: Any, cmds: list[str]) -> tuple[list[ActionResult], ActionResult | None]:
    """Read Kartra's envelope (API.md §5.2) for a request whose actions were `cmds`.

    Returns one result per requested action, in request order, or a call-level failure.
    Accepted shapes: a flat call-level error; `{"actions": [{"<cmd>": {...}}, ...]}`; a
    flat or command-keyed result for a single action; data at top level. Results are
    matched by position; an action Kartra did not answer for is "ambiguous", since a
    chain's partial execution is undocumented.
    """
    if not isinstance(payload, dict):
        return [], _result("", {"message": "response is not a JSON object"}, "ambiguous")
    code = _code(payload.get("type"))
    failed = _status(payload) != "success"
    if failed and code in CALL_LEVEL_CODES:
        return [], _result("", payload)
    if isinstance(payload.get("actions"), list):
        results = []
        for i, cmd in enumerate(cmds):
            if i >= len(payload["actions"]):
                gap = {"status": "missing", "message": "Kartra returned no result for this action"}
                results.append(_result(cmd, gap, "ambiguous"))
                continue
            entry = payload["actions"][i]
            if isinstance(entry, dict) and len(entry) == 1:
                [(name, body)] = entry.items()
                if isinstance(body, dict):
                    results.append(_result(str(name), body))
                    continue
            results.append(
                _result(cmd, {"message": f"unreadable action result {entry!r}"}, "ambiguous")
            )
        return results, None
    if len(cmds) == 1 and isinstance(payload.get(cmds[0]), dict) and "status" not in payload:
        return [_result(cmds[0], payload[cmds[0]])], None
    if "status" not in payload:
        return [], _result("", {"message": "response has neither status nor actions"}, "ambiguous")
    if failed and len(cmds) != 1:
        return [], _result("", payload)
    return [_result(cmd, payload) for cmd in cmds], None


def _settled(result: ActionResult, action: Mapping[str, Any]) -> ActionResult:
    """A cancel answered 275 (the subscription was cancelled or terminated before) found
    what it asks for, as one answered 252 (cancelled before) did: after an ambiguous 267
    or a lost answer, the retry of a cancel that went through meets either. A pause or
    an unpause answered 275 has failed."""
    if (
        result.cmd == "modify_subscription_status"
        and result.type == 275
        and action.get("subscription_status_modification") == "cancel"
    ):
        return replace(result, kind="success_equivalent")
    return result


def _status(body: Mapping[str, Any]) -> str:
    return str(body.get("status", "")).strip().lower()


def _code(value: Any) -> int | None:
    try:
        return int(str(value).strip())
    except ValueError:
        return None


def _result(cmd: str, body: Mapping[str, Any], kind: str | None = None) -> ActionResult:
    code = _code(body.get("type"))
    status = _status(body)
    if kind is None:
        kind = "ok" if status == "success" else "data" if code is None else classify(code)
    data = {key: value for key, value in body.items() if key not in ("status", "message", "type")}
    return ActionResult(cmd, status, code, str(body.get("message", "")), kind, data)


def _scrub(value: Any, secrets: tuple[str, ...]) -> Any:
    """Remove secret strings (each form of `secret_forms`) from anything Kartra echoed back."""
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, MASK)
        return value
    if isinstance(value, dict):
        return {_scrub(key, secrets): _scrub(item, secrets) for key, item in value.items()}
    if isinstance(value, list):
        return [_scrub(item, secrets) for item in value]
    return value


def _transport_failure(exc: requests.RequestException) -> tuple[str, str]:
    """(kind, description) of a requests failure: may the request have reached Kartra?"""
    if isinstance(exc, requests.ConnectTimeout):
        return "transient", "connect timeout"
    if isinstance(exc, requests.ReadTimeout):
        return "ambiguous", "read timeout"
    if isinstance(exc, requests.exceptions.SSLError):
        return "transient", "TLS handshake failed"
    if isinstance(exc, requests.ConnectionError):
        reason = exc.args[0] if exc.args else None
        if isinstance(reason, MaxRetryError) and isinstance(reason.reason, NewConnectionError):
            return "transient", "connection failed"
        return "ambiguous", "connection lost after sending"
    if isinstance(exc, requests.exceptions.InvalidURL | requests.exceptions.MissingSchema):
        return "account", "invalid Kartra URL"
    return "ambiguous", "request failed"


def rewrite_test_mode_email(email: str) -> str:
    """The address Kartra stores for a lead created by a Test-Mode App (API.md §3)."""
    local, _, _ = email.rpartition("@")
    return f"{local or email}@kartra.com"


def _no_wait() -> None:
    return None


_writing = threading.local()  # `written` of the call this thread is sending


class _Written:
    """A connection that runs the sending thread's `written` once a request's last byte
    is handed to the kernel, before the answer is awaited: the moment the rate limiter
    counts the call from (relay/dispatch/limiter.py)."""

    def request(self, *args: Any, **kwargs: Any) -> None:
        super().request(*args, **kwargs)
        written = getattr(_writing, "callback", None)
        if written is not None:
            written()


class _WrittenHTTPConnection(_Written, HTTPConnection):
    pass


class _WrittenHTTPSConnection(_Written, HTTPSConnection):
    pass


class _WrittenHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = _WrittenHTTPConnection


class _WrittenHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = _WrittenHTTPSConnection


class _Adapter(HTTPAdapter):
    """Connections that say when a request was written. Through a proxy they are
    urllib3's own, and a call counts from when the limiter let it go."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _WrittenHTTPConnectionPool,
            "https": _WrittenHTTPSConnectionPool,
        }


def _pooled_session(url: str) -> requests.Session:
    """A session for `url` whose connections are kept alive and shared by the threads
    that call (urllib3's pool is thread-safe); none is retried behind our back.

    requests reads the proxy and CA bundle variables and ~/.netrc again on every
    request, walking the whole environment twice: about a third of a call's CPU. The
    relay's environment does not change while it runs, so they are read once, here,
    by requests' own rules. ~/.netrc is not read at all: Kartra takes its credentials
    in the body, never from an Authorization header."""
    session = requests.Session()
    adapter = _Adapter(pool_connections=10, pool_maxsize=10, max_retries=0)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    settings = session.merge_environment_settings(url, {}, None, None, None)
    session.proxies, session.verify = settings["proxies"], settings["verify"]
    session.trust_env = False
    return session


class KartraClient:
    """Talks to one Kartra endpoint over a pooled session with explicit timeouts.

    `test_mode` must match the App's mode in Kartra: a Test-Mode App stores created leads
    under `@kartra.com`, so the client addresses that email when it has to find them.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: tuple[float, float] = (3.05, 20.0),
        session: requests.Session | None = None,
        test_mode: bool = False,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.test_mode = test_mode
        self._owns_session = session is None
        self.session = session or _pooled_session(url)

    build_params = staticmethod(build_params)

    def close(self) -> None:
        """Close the pooled connections, if the session is ours."""
        if self._owns_session:
            self.session.close()

    def __enter__(self) -> "KartraClient":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def call(
        self,
        credentials: Credentials,
        params: Mapping[str, Any],
        written: Callable[[], None] | None = None,
    ) -> KartraCall:
        """POST `params` once and parse the envelope. Never raises for Kartra outcomes or
        transport failures: those land in the returned call's `error`/`results`.

        The credentials always come from `credentials`, whatever `params` holds.
        `written()` runs once the request is written whole (on the session this client
        made), before its answer comes.
        """
        forms = {
            f for s in (credentials.api_key, credentials.api_password) if s for f in secret_forms(s)
        }
        secrets = tuple(sorted(forms, key=len, reverse=True))  # a longer form may hold another
        params = {
            "app_id": credentials.app_id,
            "api_key": credentials.api_key,
            "api_password": credentials.api_password,
            **{key: value for key, value in params.items() if key not in _CREDENTIAL_PARAMS},
        }
        actions = params.get("actions") or []
        cmds = [str(action.get("cmd", "")) for action in actions]
        call = KartraCall(
            request=mask(params),
            http_status=None,
            response=None,
            duration_ms=0.0,
            started_at=datetime.now(UTC),
        )
        started = time.perf_counter()
        _writing.callback = written
        try:
            response = self.session.post(
                self.url,
                data=encode(params),
                headers={
                    "Content-Type": "application/x-www-form-urlencoded",
                    "Accept": "application/json",
                },
                timeout=self.timeout,
                # The body carries the key and password: a redirect must never take
                # them to another address, so none is followed (it is a failed call).
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            call.duration_ms = (time.perf_counter() - started) * 1000
            kind, what = _transport_failure(exc)
            call.kind = kind
            call.error = _scrub(f"{what}: {type(exc).__name__}: {exc}", secrets)
            return call
        finally:
            _writing.callback = None
        call.duration_ms = (time.perf_counter() - started) * 1000
        call.http_status = response.status_code
        try:
            payload = response.json()
        except ValueError:
            payload = None
            # scrubbed before it is cut: a cut through a secret would keep its start
            call.response = _scrub(response.text, secrets)[:RESPONSE_TEXT_LIMIT]
        else:
            call.response = _scrub(payload, secrets)
        if response.status_code != 200:
            call.code = response.status_code
            if response.status_code == 429:
                call.kind = "transient"
            elif response.status_code >= 500:
                call.kind = "ambiguous"
            else:
                call.kind = "transient"
            call.error = f"HTTP {response.status_code}"
            if response.is_redirect:
                call.error += ": redirect not followed"
            return call
        if payload is None:
            call.kind, call.error = "ambiguous", "response body is not JSON"
            return call
        results, failure = parse_response(call.response, cmds)
        call.results = [_settled(r, a) for r, a in zip(results, actions, strict=False)]
        if failure is not None:
            call.kind, call.code = failure.kind, failure.type
            label = f"Kartra {failure.type}" if failure.type is not None else "Kartra"
            call.error = f"{label}: {failure.message}"
        return call

    def deliver(
        self,
        credentials: Credentials,
        plan: Mapping[str, Any],
        *,
        lead_id: str | None = None,
        done: Iterable[int] = (),
        acquire: Callable[[], None] = _no_wait,
        written: Callable[[], None] | None = None,
    ) -> Outcome:
        """Apply `plan` in as few calls as possible and return the Outcome, or raise.

        A new lead costs one call (create_lead + actions), a known lead id one call
        (edit_lead by id + actions), an existing lead the client does not know two
        (create_lead answers 244, then edit_lead by email). A known id that Kartra no
        longer has (243/245) is forgotten and the lead treated as unknown. `acquire()` runs
        before every HTTP request so a rate limiter can hold it back, and `written()` once
        the request is written (`call`).
        """
        actions = list(plan.get("actions") or [])
        lead = plan.get("lead")
        upsert = lead is not None and plan.get("lead_mode", "upsert") == "upsert"
        outcome = Outcome(lead_id=str(lead_id) if lead_id else None, done=sorted(set(done)))
        if lead is not None and not (lead_id or lead.get("id") or lead.get("email")):
            raise DataError(
                "the plan's lead has neither email nor id (Kartra would answer 206) — "
                + _HINTS[206],
                outcome=outcome,
                code=206,
            )
        pending = [i for i in range(len(actions)) if i not in outcome.done]
        if not pending and (actions or not upsert):
            return outcome

        # The lead as the next request addresses it: a stale id is dropped, and after 244
        # the email becomes the one Kartra stored.
        request_lead = dict(lead) if lead is not None else None
        lead_command: str | None = None
        exists = False  # create_lead answered 244: address the lead by email from now on
        for _ in range(3):
            known_id = outcome.lead_id or (request_lead or {}).get("id")
            if upsert:
                lead_command = "edit_lead" if known_id or exists else "create_lead"
            request_plan = {**plan, "lead": request_lead} if lead is not None else plan
            params = build_params(
                credentials,
                request_plan,
                lead_id=known_id,
                done=outcome.done,
                lead_command=lead_command,
            )
            pending = [i for i in range(len(actions)) if i not in outcome.done]
            acquire()
            call = self.call(credentials, params, written)
            outcome.calls.append(call)
            if call.error is not None:
                raise _call_error(call, outcome)
            _record_lead_id(call, outcome)
            lead_result = call.results[0] if lead_command else None
            action_results = call.results[1:] if lead_command else call.results
            for index, result in zip(pending, action_results, strict=False):
                if result.kind in _DONE_KINDS:
                    outcome.done = sorted({*outcome.done, index})
            if lead_result is not None and lead_result.kind not in _DONE_KINDS:
                if lead_command == "create_lead" and lead_result.type == 244:
                    exists = True
                    if self.test_mode:
                        request_lead["email"] = rewrite_test_mode_email(request_lead["email"])
                    continue
                if known_id and lead_result.type in _LEAD_GONE and request_lead.get("email"):
                    outcome.lead_id = None
                    request_lead.pop("id", None)
                    continue
                if known_id and lead_result.type in _LEAD_GONE:
                    outcome.lead_id = None
                raise _action_error(lead_result, {}, outcome)
            lost = any(r.type in _LEAD_GONE for r in action_results if r.kind not in _DONE_KINDS)
            if request_lead and not upsert and known_id and lost and request_lead.get("email"):
                outcome.lead_id = None
                request_lead.pop("id", None)
                continue
            failures = [
                (result, actions[index])
                for index, result in zip(pending, action_results, strict=False)
                if result.kind not in _DONE_KINDS
            ]
            if failures:
                raise _worst_error(failures, outcome)
            return outcome
        raise DataError(
            "the lead could not be resolved in three calls (Kartra keeps answering 243/244): "
            "check the lead in Kartra",
            outcome=outcome,
        )


def _record_lead_id(call: KartraCall, outcome: Outcome) -> None:
    details = [result.data.get("lead_details") for result in call.results]
    for detail in details:
        if isinstance(detail, dict) and detail.get("id") not in (None, ""):
            outcome.lead_id = str(detail["id"])


def _error_class(kind: str) -> type[KartraError]:
    return {
        "account": AccountError,
        "transient": TransientError,
        "ambiguous": TransientError,
        "action_config": ActionConfigError,
    }.get(kind, DataError)


def _make_error(kind: str, message: str, **kwargs: Any) -> KartraError:
    cls = _error_class(kind)
    if cls is TransientError:
        return TransientError(message, ambiguous=kind == "ambiguous", **kwargs)
    return cls(message, **kwargs)


class _Params(dict):
    def __missing__(self, key: str) -> str:
        return "?"


def _hint(code: int | None, kind: str, action: Mapping[str, Any]) -> str:
    if code in (223, 224, 236, 254):
        return _RELAY_DEFECT_HINT
    template = _HINTS.get(code) if code is not None else None
    if template is None:
        return _KIND_HINTS.get(kind, _KIND_HINTS["data"])
    return template.format_map(_Params(action))


def _call_error(call: KartraCall, outcome: Outcome) -> KartraError:
    kind = call.kind or "data"
    cmds = [str(a.get("cmd")) for a in call.request.get("actions") or []]
    where = ", ".join(cmds) or "the call"
    hint = _hint(call.code if call.http_status == 200 else None, kind, {"cmd": where})
    message = f"Kartra call ({where}) failed: {call.error} — {hint}"
    kartra_message = None
    if isinstance(call.response, dict) and "message" in call.response:
        kartra_message = str(call.response["message"])
    return _make_error(
        kind, message, outcome=outcome, code=call.code, cmd=None, kartra_message=kartra_message
    )


def _action_error(
    result: ActionResult, action: Mapping[str, Any], outcome: Outcome, more: str = ""
) -> KartraError:
    hint = _hint(result.type, result.kind, {**action, "cmd": result.cmd})
    code = result.type if result.type is not None else "(no code)"
    message = f"Kartra {code} on {result.cmd}: {result.message!r} — {hint}{more}"
    return _make_error(
        result.kind,
        message,
        outcome=outcome,
        code=result.type,
        cmd=result.cmd,
        kartra_message=result.message,
    )


def _worst_error(
    failures: list[tuple[ActionResult, Mapping[str, Any]]], outcome: Outcome
) -> KartraError:
    """The exception for the most severe failure; the others are listed in its message."""
    ordered = sorted(failures, key=lambda failure: _RANK.get(failure[0].kind, 3))
    result, action = ordered[0]
    others = [f"{r.type} on {r.cmd}" for r, _ in ordered[1:]]
    more = f" (also failed: {', '.join(others)})" if others else ""
    return _action_error(result, action, outcome, more)
