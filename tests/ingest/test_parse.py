import encodings
import gc
import json
import pkgutil
from encodings.aliases import aliases

import pytest

from relay.ingest.parse import MAX_FIELDS, BodyError, nest, parse_body
from tests.conftest import FIXTURES


def fixture(path: str) -> tuple[str, bytes]:
    file = FIXTURES / path
    headers = json.loads(file.with_name(file.stem + ".headers.json").read_text())
    headers = {k.lower(): v for k, v in headers.get("headers", headers).items()}
    return headers["content-type"], file.read_bytes()


def test_json_object():
    assert parse_body("application/json", b'{"a": [1, {"b": null}]}') == {"a": [1, {"b": None}]}


def test_json_with_charset_and_bom():
    body = '\ufeff{"name": "Zoë"}'.encode()
    assert parse_body("application/json; charset=utf-8", body) == {"name": "Zoë"}


def test_json_in_another_charset():
    body = '{"name": "Zoë"}'.encode("latin-1")
    assert parse_body("application/json; charset=iso-8859-1", body) == {"name": "Zoë"}


@pytest.mark.parametrize(
    ("content_type", "body", "status", "words"),
    [
        ("application/json", b"{not json", 400, "invalid JSON"),
        ("application/json", b"[1, 2]", 400, "must be an object"),
        ("application/json", b'"text"', 400, "must be an object"),
        ("application/json", b"\xff\xfe{}", 400, "not valid utf-8"),
        ("application/json; charset=klingon", b"{}", 415, "unknown charset"),
        ("text/plain", b"hello", 415, "unsupported content type"),
        (None, b"hello", 415, "unsupported content type"),
        ("application/json", b"[" * 100_000 + b"]" * 100_000, 400, "nested"),
        ("application/x-www-form-urlencoded", b"name=%FF", 400, "not valid utf-8"),
        ("application/json", b'{"a":' * 100 + b"1" + b"}" * 100, 400, "nested"),
        ("application/json", b'{"amount": NaN}', 400, "NaN is not a JSON number"),
        ("application/json", b'{"amount": -Infinity}', 400, "-Infinity is not a JSON number"),
        ("application/json", b'{"amount": 1e400}', 400, "out of range"),
        ("application/json", b'{"name": "\\ud800"}', 400, "lone surrogate (\\ud800)"),
        ("application/json", b'{"\\udfff": 1}', 400, "lone surrogate (\\udfff)"),
        ("application/x-www-form-urlencoded; charset=utf-7", b"a=%2B2AA-", 400, "surrogate"),
        ("application/json", b'{"email": "a\\u0000@b.co"}', 400, "NUL character"),
        ("application/x-www-form-urlencoded", b"email=a%00%40b.co", 400, "NUL character"),
        (
            "multipart/form-data; boundary=x",
            b'--x\r\nContent-Disposition: form-data; name="a"\r\n\r\nb\x00c\r\n--x--\r\n',
            400,
            "NUL character",
        ),
        (
            "multipart/form-data; boundary=x",
            b'--x\r\nContent-Disposition: form-data; name="a\\"\r\n\r\nv\r\n--x--\r\n',
            400,
            "has no name",
        ),
    ],
)
def test_unreadable_bodies_are_named(content_type, body, status, words):
    with pytest.raises(BodyError) as info:
        parse_body(content_type, body)
    assert info.value.status == status
    assert words in str(info.value)


def test_deeply_nested_object_is_refused_not_crashed():
    body = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
    with pytest.raises(BodyError):
        parse_body("application/json", body)


def test_json_without_content_type_is_recognised():
    assert parse_body(None, b' {"a": 1}') == {"a": 1}


def test_urlencoded_nested_keys():
    body = (
        b"customer%5Bemail%5D=a%40b.c&items%5B0%5D%5Bsku%5D=X&items%5B1%5D%5Bsku%5D=Y"
        b"&t%5B%5D=1&t%5B%5D=2"
    )
    assert parse_body("application/x-www-form-urlencoded", body) == {
        "customer": {"email": "a@b.c"},
        "items": [{"sku": "X"}, {"sku": "Y"}],
        "t": ["1", "2"],
    }


def test_urlencoded_in_windows_1252():
    body = b"first_name=Ren%E9"
    assert parse_body("application/x-www-form-urlencoded; charset=windows-1252", body) == {
        "first_name": "Ren\xe9"
    }


def test_too_many_form_fields():
    body = "&".join(f"f{i}=1" for i in range(MAX_FIELDS + 1)).encode()
    with pytest.raises(BodyError, match="fields"):
        parse_body("application/x-www-form-urlencoded", body)


def test_nest_keeps_malformed_keys_whole_and_repeated_keys_as_lists():
    assert nest(
        [("a[b", "1"), ("[x]", "2"), ("k", "1"), ("k", "2"), ("m[0]", "a"), ("m[2]", "b")]
    ) == {"a[b": "1", "[x]": "2", "k": ["1", "2"], "m": {"0": "a", "2": "b"}}


def test_multipart_fields_kept_files_summarised():
    boundary = "XyZ"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="email"\r\n\r\njane@example.com\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="cv"; filename="cv.pdf"\r\n'
        f"Content-Type: application/pdf\r\n\r\n%PDF-1.4 data\r\n--{boundary}--\r\n"
    ).encode()
    parsed = parse_body(f"multipart/form-data; boundary={boundary}", body)
    assert parsed["email"] == "jane@example.com"
    assert parsed["cv"] == {"filename": "cv.pdf", "content_type": "application/pdf", "size": 13}


def test_broken_multipart_is_a_400():
    with pytest.raises(BodyError):
        parse_body("multipart/form-data", b"--x\r\n")


def test_multipart_cut_inside_a_file_leaves_no_file_open():
    """Found by the fuzzer: werkzeug's spooled temporary file was never closed."""
    body = (
        b'--x\r\nContent-Disposition: form-data; name="cv"; filename="cv.pdf"\r\n'
        b"Content-Type: application/pdf\r\n\r\n%PDF-1.4 da"
    )
    with pytest.raises(BodyError):
        parse_body("multipart/form-data; boundary=x", body)
    gc.collect()  # an unclosed file warns here, and warnings are errors


def test_a_form_with_numeric_names_is_still_an_object():
    """Found by the fuzzer: `0=a&1=b` became the list ["a", "b"] instead of a body."""
    body = parse_body("application/x-www-form-urlencoded", b"0=a&1=b")
    assert body == {"0": "a", "1": "b"}


@pytest.mark.parametrize(
    ("path", "key", "value"),
    [
        ("stripe/checkout.session.completed.json", "type", "checkout.session.completed"),
        ("html-form/optin.urlencoded.txt", None, None),
        ("html-form/contact.multipart.txt", None, None),
        ("thrivecart/order.success.txt", "event", "order.success"),
        ("gumroad/sale.txt", None, None),
        ("jotform/submission.txt", None, None),
        ("paypal-ipn/web_accept.Completed.txt", None, None),
        ("typeform/form_response.json", "event_type", "form_response"),
    ],
)
def test_every_kind_of_fixture_parses(path, key, value):
    content_type, raw = fixture(path)
    parsed = parse_body(content_type, raw)
    assert isinstance(parsed, dict) and parsed
    if key:
        assert parsed[key] == value


def test_paypal_ipn_charset_field_decides_the_decoding():
    content_type, raw = fixture("paypal-ipn/web_accept.Completed.txt")
    parsed = parse_body(content_type, raw)
    assert parsed["charset"] == "windows-1252"
    assert parsed["first_name"] == "Chloé"


def test_html_checkbox_group_keeps_every_value():
    content_type, raw = fixture("html-form/optin.urlencoded.txt")
    parsed = parse_body(content_type, raw)
    assert parsed["interest"] == ["Coaching", "Workshops"]
    assert parsed["phone"] == "+1 (555) 555-0110"
    assert parsed["website"] == ""


def test_jotform_raw_request_is_decoded_in_place():
    body = parse_body(*fixture("jotform/submission.txt"))
    assert body["rawRequest"]["q4_email"] == "liam.obrien@example.com"
    assert body["rawRequest"]["q3_name"] == {"first": "Liam", "last": "O'Brien"}
    assert (
        parse_body("application/x-www-form-urlencoded", b"rawRequest=%7Bnot+json")["rawRequest"]
        == "{not json"
    )


def test_every_charset_python_knows_is_text_or_a_clear_refusal():
    """`codecs.lookup` also finds codecs that are not bytes to text (base64, rot13, zlib)
    and some that refuse without a position (punycode, undefined): each a 500 once."""
    names = set(aliases) | set(aliases.values())
    names |= {module.name for module in pkgutil.iter_modules(encodings.__path__)}
    refused = set()
    for name in sorted(names):
        for content_type, body in (
            (f"application/json; charset={name}", b'{"email": "a@b.co"}'),
            (f"application/x-www-form-urlencoded; charset={name}", b"email=a%40b.co&n=\xff"),
            ("application/x-www-form-urlencoded", b"charset=" + name.encode() + b"&email=a"),
        ):
            try:
                parse_body(content_type, body)
            except BodyError as exc:
                refused.add(exc.status)
    assert refused == {400, 415}


@pytest.mark.parametrize(
    "content_type, body",
    [
        ("Application/JSON", b'{"email": "a@example.com"}'),
        ("APPLICATION/X-WWW-FORM-URLENCODED", b"email=a%40example.com"),
        (
            "Multipart/Form-Data; boundary=XyZ",
            b'--XyZ\r\nContent-Disposition: form-data; name="email"\r\n\r\n'
            b"a@example.com\r\n--XyZ--\r\n",
        ),
    ],
)
def test_a_content_type_in_capitals_is_the_same_type(content_type, body):
    """MIME types are case-insensitive (RFC 9110, 8.3.1); a 415 is permanent to a sender."""
    assert parse_body(content_type, body) == {"email": "a@example.com"}


@pytest.mark.parametrize(
    "pairs",
    [
        [("email", "a@example.com"), ("email[x]", "zz")],
        [("email[]", "a@example.com"), ("email", "n@example.com")],
        [("tags[0]", "a"), ("tags", "b")],
        [("a[b]", "1"), ("a[b][c]", "2")],
    ],
)
def test_a_field_given_both_as_a_value_and_as_a_group_is_refused(pairs):
    """One would overwrite the other: a clear 400 instead of a value silently lost."""
    with pytest.raises(BodyError, match="both as a value and as a group"):
        nest(pairs)


def test_a_multipart_part_that_is_not_utf8_is_refused_not_replaced():
    body = (
        b'--XyZ\r\nContent-Disposition: form-data; name="first_name"\r\n\r\nJ\xf6rg\r\n--XyZ--\r\n'
    )
    with pytest.raises(BodyError, match="not valid utf-8"):
        parse_body("multipart/form-data; boundary=XyZ", body)


def test_a_multipart_part_holding_the_replacement_character_itself_is_kept():
    body = (
        b'--XyZ\r\nContent-Disposition: form-data; name="note"\r\n\r\n'
        b"a \xef\xbf\xbd b\r\n--XyZ--\r\n"
    )
    assert parse_body("multipart/form-data; boundary=XyZ", body) == {"note": "a \ufffd b"}


def test_files_sent_under_one_name_are_all_summarised():
    """`<input type="file" name="docs" multiple>` sends one part per file, all named docs."""
    part = (
        '--XyZ\r\nContent-Disposition: form-data; name="docs"; filename="{0}"\r\n'
        "Content-Type: text/plain\r\n\r\n{0}\r\n"
    )
    body = (part.format("a.txt") + part.format("bb.txt") + "--XyZ--\r\n").encode()
    assert parse_body("multipart/form-data; boundary=XyZ", body) == {
        "docs": [
            {"filename": "a.txt", "content_type": "text/plain", "size": 5},
            {"filename": "bb.txt", "content_type": "text/plain", "size": 6},
        ]
    }
