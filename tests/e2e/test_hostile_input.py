"""The bad-input corpus: each case posted over HTTP to the running relay (the real
gunicorn server, as `python -m relay serve` runs it) with the fake Kartra behind it,
on SQLite and on PostgreSQL. Every case checks the answer AND what the relay did
with it: a refused post leaves no event, no delivery and no Kartra call; an accepted
one is stored once and reaches Kartra with exactly the keys it should.

One relay per database for the whole module keeps the corpus fast; each case counts
rows and Kartra calls before and after itself.
"""

from __future__ import annotations

import json
import re
import select
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from sqlalchemy import create_engine, func
from sqlalchemy import select as sql_select

from relay.store.tables import attempts, deliveries, events
from tests.conftest import ROOT
from tests.e2e.conftest import FakeKartra, Relay, live_env

TOKEN = "hostile-admin-token-0123456789"
TIMEOUT = 10
LIMIT = 1024 * 1024  # MAX_BODY_BYTES's default, which the relay here runs with

PROBE = """
verify: none
rules:
  - name: probe
    lead:
      email: "{{ body.email | email }}"
      first_name: "{{ body.first_name | default('') }}"
      last_name: "{{ body.last_name | default('') }}"
      custom_fields:
        notes: "{{ body.notes | default('') }}"
    actions:
      - {cmd: assign_tag, tag_name: Relay Demo}
"""


class Stack:
    """The relay, the fake Kartra and a connection to the relay's database."""

    def __init__(self, relay: Relay, fake: FakeKartra):
        self.relay = relay
        self.fake = fake
        self.engine = create_engine(relay.env["DATABASE_URL"])

    def counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            found = {
                table.name: conn.execute(sql_select(func.count()).select_from(table)).scalar()
                for table in (events, deliveries, attempts)
            }
        return {**found, "kartra_calls": len(self.fake.calls())}

    def post(self, path: str, **kwargs) -> requests.Response:
        return requests.post(self.relay.url + path, timeout=TIMEOUT, **kwargs)

    def rss_kib(self) -> int:
        """Resident memory of every process of the relay (gunicorn's master and worker)."""
        group = self.relay.process.proc.pid
        total = 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) == group:
                    status = (stat.parent / "status").read_text()
                    total += int(re.search(r"VmRSS:\s+(\d+)", status).group(1))
            except (OSError, AttributeError):
                continue  # a process that ended meanwhile
        return total


@pytest.fixture(scope="module")
def stack(database_kind, tmp_path_factory, request) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp(f"hostile-{database_kind}")
    if database_kind == "sqlite":
        url = f"sqlite:///{tmp / 'relay.db'}"
    else:
        url = request.getfixturevalue("postgres").new_database()
    mappings = tmp / "mappings"
    mappings.mkdir()
    (mappings / "demo-form.yaml").write_text((ROOT / "mappings" / "demo-form.yaml").read_text())
    (mappings / "probe.yaml").write_text(PROBE)
    fake = FakeKartra(tmp, "--custom-fields", "notes")
    relay = Relay(tmp, url, live_env(fake, ADMIN_TOKEN=TOKEN, MAPPINGS_DIR=str(mappings)))
    relay.start()
    built = Stack(relay, fake)
    yield built
    built.engine.dispose()
    relay.stop_all()
    fake.process.stop()


@contextmanager
def nothing_kept(stack: Stack):
    """The case must leave no event, delivery, attempt or Kartra call behind."""
    before = stack.counts()
    yield
    assert stack.counts() == before


def delivered(stack: Stack, answer: requests.Response) -> dict:
    """The one Kartra call an accepted event made, once it is delivered."""
    assert answer.status_code == 200, answer.text
    event_id = answer.json()["event_id"]
    event = stack.relay.wait_for_status(event_id, "delivered", "failed", "dead")
    [delivery] = event["deliveries"]
    [attempt] = delivery["calls"]
    calls = stack.fake.calls()
    assert calls[-1]["params"]["lead"]["email"] == attempt["request"]["lead"]["email"]
    return calls[-1]["params"]


def error_of(answer: requests.Response) -> str:
    return answer.json()["error"]


# -- bodies the parser refuses -----------------------------------------------------------

JSON = {"Content-Type": "application/json"}
REFUSED_BODIES = [
    pytest.param(b'{"email": "a@example.com",', JSON, 400, "invalid JSON", id="truncated-json"),
    pytest.param(b"{'email': 'a@example.com'}", JSON, 400, "invalid JSON", id="single-quotes"),
    pytest.param(b"", JSON, 400, "invalid JSON", id="empty-json"),
    pytest.param(b'{"a": NaN}', JSON, 400, "NaN is not a JSON number", id="nan"),
    pytest.param(b'{"a": 1e400}', JSON, 400, "out of range", id="float-overflow"),
    pytest.param(b'["a@example.com"]', JSON, 400, "must be an object, got list", id="array"),
    pytest.param(b'"a@example.com"', JSON, 400, "must be an object, got str", id="string"),
    pytest.param(b"null", JSON, 400, "must be an object, got NoneType", id="null"),
    pytest.param(b"42", JSON, 400, "must be an object, got int", id="number"),
    pytest.param(b"email=a@example.com", {}, 415, "unsupported content type '(none)'", id="none"),
    pytest.param(
        b"email=a@example.com",
        {"Content-Type": "text/plain"},
        415,
        "unsupported content type 'text/plain'",
        id="text-plain",
    ),
    pytest.param(
        b"<email>a@example.com</email>",
        {"Content-Type": "application/xml"},
        415,
        "unsupported content type 'application/xml'",
        id="xml",
    ),
    pytest.param(
        b'{"email": "a@example.com"}',
        {"Content-Type": "application/x-www-form-urlencoded; charset=x-klingon"},
        415,
        "unknown charset 'x-klingon'",
        id="unknown-charset",
    ),
    pytest.param(
        b'{"email": "a@example.com"}',
        {"Content-Type": "application/json; charset=../../etc/passwd"},
        415,
        "unknown charset",
        id="charset-path",
    ),
    pytest.param(
        b'{"email": "a\xff\xfe@example.com"}',
        JSON,
        400,
        "body is not valid utf-8: byte 12",
        id="json-invalid-utf8",
    ),
    pytest.param(
        b"email=a\xc3\x28@example.com",
        {"Content-Type": "application/x-www-form-urlencoded"},
        400,
        "body is not valid utf-8",
        id="form-invalid-utf8",
    ),
    pytest.param(
        b"email=a%C3%28@example.com",
        {"Content-Type": "application/x-www-form-urlencoded"},
        400,
        "form value is not valid utf-8",
        id="form-percent-invalid-utf8",
    ),
    pytest.param(
        b'{"email": "\\ud800@example.com"}', JSON, 400, "lone surrogate", id="lone-surrogate"
    ),
    pytest.param(
        b"[" * 100_000 + b"]" * 100_000, JSON, 400, "nested too deeply", id="nested-100000-arrays"
    ),
    pytest.param(
        b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
        JSON,
        400,
        "nested too deeply",
        id="nested-100000-objects",
    ),
    pytest.param(
        b'{"a":' * 65 + b"1" + b"}" * 65, JSON, 400, "nested deeper than 64", id="nested-65"
    ),
    pytest.param(
        b"a" + b"[x]" * 65 + b"=1",
        {"Content-Type": "application/x-www-form-urlencoded"},
        400,
        "form key nested deeper than 64 levels",
        id="form-key-nested-65",
    ),
    pytest.param(
        b'{"email": "a@example.com", "n": ' + b"7" * 100_000 + b"}",
        JSON,
        400,
        "invalid JSON: Exceeds the limit (4300 digits)",
        id="integer-100000-digits",
    ),
    pytest.param(
        b'{"n": -' + b"9" * 5_000 + b"}",
        JSON,
        400,
        "Exceeds the limit",
        id="integer-5000-digits",
    ),
    pytest.param(
        "&".join(f"f{i}=1" for i in range(100_000)).encode(),
        {"Content-Type": "application/x-www-form-urlencoded"},
        400,
        "form has more than 10000 fields",
        id="form-100000-fields",
    ),
    pytest.param(
        b"".join(
            b'--b\r\nContent-Disposition: form-data; name="f%d"\r\n\r\n1\r\n' % i
            for i in range(10_001)
        )
        + b"--b--\r\n",
        {"Content-Type": "multipart/form-data; boundary=b"},
        400,
        "invalid multipart body",
        id="multipart-10001-parts",
    ),
    pytest.param(
        b'--b\r\nContent-Disposition: form-data; name="email"\r\n\r\na@example.com',
        {"Content-Type": "multipart/form-data; boundary=b"},
        400,
        "invalid multipart body",
        id="multipart-unterminated",
    ),
]


@pytest.mark.parametrize(("body", "headers", "status", "error"), REFUSED_BODIES)
def test_unreadable_bodies_are_refused_and_leave_nothing(stack, body, headers, status, error):
    with nothing_kept(stack):
        answer = stack.post("/hooks/demo-form", data=body, headers=headers)
        assert answer.status_code == status, answer.text
        assert error in error_of(answer)
        assert len(answer.content) < 1000  # the refusal never echoes the body back


def test_a_float_with_100000_digits_is_an_ordinary_number(stack):
    body = b'{"email": "digits@example.com", "score": 0.' + b"3" * 100_000 + b"}"
    before = stack.counts()
    params = delivered(stack, stack.post("/hooks/demo-form", data=body, headers=JSON))
    assert params["lead"]["email"] == "digits@example.com"
    assert stack.counts()["events"] == before["events"] + 1


# -- size: refused before the body is read ----------------------------------------------


def exchange(stack: Stack, head: bytes, chunks: Iterator[bytes], *, chunked: bool = False):
    """Send `head`, then `chunks` only while the relay has not answered yet.

    Returns (status, bytes of body sent). Sending stops at the relay's first word, or
    when it stops reading (a full socket buffer times out).
    """
    sent = 0
    with socket.create_connection(("127.0.0.1", stack.relay.port), timeout=TIMEOUT) as sock:
        sock.sendall(head)
        for chunk in chunks:
            if select.select([sock], [], [], 0)[0]:
                break
            framed = b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk
            try:
                sock.settimeout(2)
                sock.sendall(framed)
            except OSError:
                break  # the relay answered and closed, or stopped reading
            sent += len(chunk)
        sock.settimeout(TIMEOUT)
        answer = b""
        while b"\r\n\r\n" not in answer:
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    return int(answer.split(b" ", 2)[1]), sent


def zeros(total: int, size: int = 64 * 1024) -> Iterator[bytes]:
    """`total` bytes of a JSON string, never more than one chunk in memory."""
    yield b'{"email": "big@example.com", "pad": "'
    chunk = b"0" * size
    for _ in range(total // size):
        yield chunk


def test_a_100_mb_body_is_refused_from_its_length_before_it_is_read(stack):
    total = 100 * 1000 * 1000
    head = (
        b"POST /hooks/demo-form HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % total
    )
    rss = stack.rss_kib()
    with nothing_kept(stack):
        started = time.monotonic()
        status, sent = exchange(stack, head, zeros(total))
        assert status == 413
        assert time.monotonic() - started < 5
        assert sent < 10 * LIMIT  # answered long before the 100 MB were on their way
    assert stack.rss_kib() - rss < 20 * 1024  # memory flat: under 20 MiB more


def test_a_streamed_body_without_length_stops_at_the_limit(stack):
    head = (
        b"POST /hooks/demo-form HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    rss = stack.rss_kib()
    with nothing_kept(stack):
        status, sent = exchange(stack, head, zeros(100 * 1000 * 1000), chunked=True)
        assert status == 413
        assert LIMIT <= sent < 10 * LIMIT
    assert stack.rss_kib() - rss < 20 * 1024


def test_a_streamed_body_under_the_limit_is_stored_whole(stack):
    body = json.dumps({"email": "chunked@example.com", "pad": "x" * 100_000}).encode()
    pieces = (body[i : i + 4096] for i in range(0, len(body), 4096))
    answer = stack.post("/hooks/demo-form", data=pieces, headers=JSON)
    delivered(stack, answer)
    assert stack.relay.event(answer.json()["event_id"])["body"] == body


def test_a_body_one_byte_over_the_limit_is_413_and_at_the_limit_is_read(stack):
    prefix = b'{"email": "edge@example.com", "pad": "'
    at_limit = prefix + b"y" * (LIMIT - len(prefix) - 2) + b'"}'
    assert len(at_limit) == LIMIT
    with nothing_kept(stack):
        over = stack.post("/hooks/demo-form", data=at_limit + b" ", headers=JSON)
        assert over.status_code == 413
        assert error_of(over) == f"body larger than {LIMIT} bytes (MAX_BODY_BYTES)"
    delivered(stack, stack.post("/hooks/demo-form", data=at_limit, headers=JSON))


# -- request lines and headers -----------------------------------------------------------


def raw(stack: Stack, request: bytes) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", stack.relay.port), timeout=TIMEOUT) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
            if b"\r\n\r\n" in answer and b"Connection: close" not in request:
                head, _, rest = answer.partition(b"\r\n\r\n")
                length = re.search(rb"(?i)content-length: (\d+)", head)
                if length and len(rest) >= int(length.group(1)):
                    break
    return int(answer.split(b" ", 2)[1]), answer


def form_request(header: bytes, path: bytes = b"/hooks/demo-form") -> bytes:
    body = b"email=header%40example.com"
    return (
        b"POST %s HTTP/1.1\r\nHost: relay\r\n%s\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n"
        b"Connection: close\r\n\r\n%s" % (path, header, len(body), body)
    )


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(b"X-Note: a\rSet-Cookie: injected=1", id="bare-cr"),
        pytest.param(b"X-Note: a\r\n Set-Cookie: injected=1", id="obs-fold"),
        pytest.param(b"X-Note: a\x00Set-Cookie: injected=1", id="nul"),
        pytest.param(b"X-No\rte: a", id="cr-in-name"),
        pytest.param(b"X Note: a", id="space-in-name"),
    ],
)
def test_headers_with_control_characters_are_refused(stack, header):
    with nothing_kept(stack):
        status, answer = raw(stack, form_request(header))
        assert status == 400
        assert b"injected" not in answer.lower()


def test_percent_encoded_crlf_stays_data(stack):
    with nothing_kept(stack):
        answer = stack.post(
            "/hooks/nowhere%0d%0aSet-Cookie:%20injected=1", data={"email": "a@example.com"}
        )
        assert answer.status_code == 404
        assert "Set-Cookie" not in answer.headers and "injected" not in str(answer.headers)


def test_a_request_line_of_100000_query_parameters_is_refused(stack):
    query = "&".join(f"q{i}=1" for i in range(100_000)).encode()
    with nothing_kept(stack):
        status, _ = raw(stack, form_request(b"X-Note: a", b"/hooks/demo-form?" + query))
        assert status in (400, 414)


ROUTES = [
    pytest.param(b"/hooks/..", id="dot-dot"),
    pytest.param(b"/hooks/%2e%2e", id="encoded-dot-dot"),
    pytest.param(b"/hooks/%2E%2E%2Fdemo-form", id="encoded-traversal"),
    pytest.param(b"/hooks/..%2f..%2fetc%2fpasswd", id="traversal-etc"),
    pytest.param(b"/hooks/../hooks/demo-form", id="raw-traversal"),
    pytest.param(b"/hooks/demo-form/..", id="trailing-dot-dot"),
    pytest.param(b"/hooks/demo-form/", id="trailing-slash"),
    pytest.param(b"/hooks/demo-form%00", id="nul"),
    pytest.param(b"/hooks/demo-form.yaml", id="file-name"),
    pytest.param(b"/hooks/DEMO-FORM", id="upper-case"),
    pytest.param("/hooks/demо-form".encode(), id="cyrillic-o-raw"),
    pytest.param(b"/hooks/dem%D0%BE-form", id="cyrillic-o-encoded"),
    pytest.param(b"/hooks/%EF%BD%84%EF%BD%85%EF%BD%8D%EF%BD%8F-form", id="fullwidth"),
    pytest.param(b"/hooks/demo%E2%80%90form", id="unicode-hyphen"),
    pytest.param(b"/hooks/demo-form%E2%80%8B", id="zero-width-space"),
]


@pytest.mark.parametrize("path", ROUTES)
def test_route_names_that_only_look_like_a_route_are_unknown(stack, path):
    with nothing_kept(stack):
        status, answer = raw(stack, form_request(b"X-Note: a", path))
        assert status in (400, 404), answer[:300]


# -- accepted values that must arrive at Kartra as they were sent -------------------------


def test_values_that_look_like_templates_reach_kartra_literally(stack):
    answer = stack.post(
        "/hooks/probe",
        data={
            "email": "jinja@example.com",
            "first_name": "{{ 7*7 }}",
            "last_name": "{% for x in range(3) %}x{% endfor %}{# note #}",
            "notes": "{{ self.__init__.__globals__ }}{{ cycler.__init__.__globals__.os.environ }}",
        },
    )
    params = delivered(stack, answer)
    assert params["lead"]["first_name"] == "{{ 7*7 }}"
    assert params["lead"]["last_name"] == "{% for x in range(3) %}x{% endfor %}{# note #}"
    assert params["lead"]["custom_fields"] == [
        {
            "field_identifier": "notes",
            "field_value": "{{ self.__init__.__globals__ }}"
            "{{ cycler.__init__.__globals__.os.environ }}",
        }
    ]


INJECTIONS = {
    "first_name": "a&api_key=stolen&lead[email]=evil@example.com&app_id=other",
    "last_name": "x]=1&actions[0][cmd]=delete_lead&actions[][cmd]=give_points_to_lead&[",
    "notes": "%26%3D[]]][[&=&lead[custom_fields][1][field_identifier]=x&lead[id]=1",
}


@pytest.mark.parametrize("encoding", ["form", "json"])
def test_values_with_form_syntax_cannot_add_or_renest_kartra_parameters(stack, encoding):
    body = {"email": f"inject-{encoding}@example.com", **INJECTIONS}
    sent = {"data": body} if encoding == "form" else {"json": body}
    params = delivered(stack, stack.post("/hooks/probe", **sent))
    assert set(params) == {"app_id", "api_key", "api_password", "lead", "actions"}
    assert params["app_id"] == "app-e2e-1" and params["api_key"] != "stolen"
    assert set(params["lead"]) == {"email", "first_name", "last_name", "custom_fields"}
    assert params["lead"]["email"] == f"inject-{encoding}@example.com"
    assert params["lead"]["first_name"] == INJECTIONS["first_name"]
    assert params["lead"]["last_name"] == INJECTIONS["last_name"]
    assert params["lead"]["custom_fields"] == [
        {"field_identifier": "notes", "field_value": INJECTIONS["notes"]}
    ]
    assert [set(a) for a in params["actions"]] == [{"cmd"}, {"cmd", "tag_name"}]
    assert [a["cmd"] for a in params["actions"]] == ["create_lead", "assign_tag"]


def test_duplicate_json_keys_keep_the_last_value(stack):
    body = b'{"email": "first@example.com", "email": "last@example.com"}'
    params = delivered(stack, stack.post("/hooks/demo-form", data=body, headers=JSON))
    assert params["lead"]["email"] == "last@example.com"


def test_a_form_field_sent_twice_is_a_list_and_the_event_is_rejected_not_guessed(stack):
    before = stack.counts()
    answer = stack.post(
        "/hooks/demo-form", data=[("email", "one@example.com"), ("email", "two@example.com")]
    )
    assert answer.status_code == 200 and answer.json()["status"] == "rejected"
    event = stack.relay.event(answer.json()["event_id"])
    assert event["reason"] == "rule 'signup': lead.email: email expects text, got list"
    assert event["payload"] == {"email": ["one@example.com", "two@example.com"]}
    assert stack.counts() == {**before, "events": before["events"] + 1}


def test_an_email_of_10000_characters_is_rejected_with_a_reason(stack):
    email = "a" * (10_000 - len("@example.com")) + "@example.com"
    before = stack.counts()
    answer = stack.post("/hooks/demo-form", json={"email": email, "first_name": "Long"})
    assert answer.status_code == 200 and answer.json()["status"] == "rejected"
    event = stack.relay.event(answer.json()["event_id"])
    assert event["reason"] == (
        "rule 'signup': lead.email is 10000 characters long; an email address has at most 254"
    )
    assert stack.counts() == {**before, "events": before["events"] + 1}


# -- the dashboard shows hostile text as text ----------------------------------------------

SCRIPT = "<script>alert(document.cookie)</script>"


def admin_session(stack: Stack) -> requests.Session:
    session = requests.Session()
    page = session.get(stack.relay.url + "/admin/login", timeout=TIMEOUT)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    signed_in = session.post(
        stack.relay.url + "/admin/login",
        data={"token": TOKEN, "csrf_token": csrf},
        timeout=TIMEOUT,
    )
    assert signed_in.status_code == 200 and "Sign out" in signed_in.text
    return session


def test_html_in_every_field_is_escaped_on_the_dashboard(stack):
    body = {
        "email": f"xss{SCRIPT}@example.com",
        "first_name": SCRIPT,
        "last_name": f'"><img src=x onerror=alert(1)>{SCRIPT}',
        "notes": f"</pre>{SCRIPT}<pre>",
        SCRIPT: SCRIPT,
        "nested": {SCRIPT: [SCRIPT]},
    }
    answer = stack.post(
        f"/hooks/probe?q={SCRIPT}",
        json=body,
        headers={"X-Evil": SCRIPT, "User-Agent": SCRIPT},
    )
    event_id = answer.json()["event_id"]
    stack.relay.wait_for_status(event_id, "delivered", "failed")
    session = admin_session(stack)
    pages = {
        path: session.get(stack.relay.url + path, timeout=TIMEOUT)
        for path in (
            f"/admin/events/{event_id}",
            "/admin/events?text=script",
            "/admin/",
            "/admin/failures",
        )
    }
    for path, page in pages.items():
        assert page.status_code == 200, path
        assert "<script" not in page.text.lower(), path
        assert "<img src=x" not in page.text.lower(), path
        assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    shown = pages[f"/admin/events/{event_id}"].text
    assert "&lt;script&gt;alert(document.cookie)&lt;/script&gt;" in shown
    assert "&lt;img src=x onerror=alert(1)&gt;" in shown
    assert event_id in pages["/admin/events?text=script"].text


def test_a_content_type_of_500_characters_is_not_a_500(stack):
    content_type = "application/json; charset=utf-8; boundary=" + "b" * 500
    answer = stack.post(
        "/hooks/demo-form",
        data=b'{"email": "long-type@example.com"}',
        headers={"Content-Type": content_type},
    )
    delivered(stack, answer)


@pytest.mark.parametrize(
    "sent",
    [
        {"json": {"email": "nul@example.com", "first_name": "a\u0000b"}},
        {"data": {"email": "nul\x00@example.com"}},
    ],
    ids=["json", "form"],
)
def test_nul_characters_in_the_body_are_refused(stack, sent):
    with nothing_kept(stack):
        answer = stack.post("/hooks/probe", **sent)
        assert answer.status_code == 400
        assert error_of(answer) == "body holds a NUL character, which no text field can store"


def test_a_nul_character_in_the_query_is_kept_as_data(stack):
    answer = stack.post("/hooks/probe?a=%00b", json={"email": "nul-query@example.com"})
    delivered(stack, answer)
    assert stack.relay.event(answer.json()["event_id"])["query"] == {"a": "\u0000b"}
