import random
import string
from typing import Any
from urllib.parse import unquote_plus

import pytest

from relay.kartra.form import decode, encode

HOSTILE = [
    "x&api_key=1",
    "a=b",
    "]",
    "[",
    "lead[id]=7",
    "&actions[0][cmd]=unassign_tag",
    "100%",
    "%26",
    "+ plus",
    "line\nbreak",
    "Zoë 🚀 Ünïcødé",
    "",
]


def test_api_md_example_encodes_to_php_bracket_keys() -> None:
    params = {
        "app_id": "A",
        "lead": {
            "email": "jane@example.com",
            "custom_fields": [
                {"field_identifier": "signup_source", "field_value": "webinar"},
                {"field_identifier": "interests", "field_value": [620, 621]},
            ],
        },
        "actions": [{"cmd": "create_lead"}, {"cmd": "assign_tag", "tag_name": "Customer"}],
    }
    assert unquote_plus(encode(params)).split("&") == [
        "app_id=A",
        "lead[email]=jane@example.com",
        "lead[custom_fields][0][field_identifier]=signup_source",
        "lead[custom_fields][0][field_value]=webinar",
        "lead[custom_fields][1][field_identifier]=interests",
        "lead[custom_fields][1][field_value][0]=620",
        "lead[custom_fields][1][field_value][1]=621",
        "actions[0][cmd]=create_lead",
        "actions[1][cmd]=assign_tag",
        "actions[1][tag_name]=Customer",
    ]


def test_scalars_none_and_empty_containers() -> None:
    body = encode({"t": True, "f": False, "n": None, "i": 3, "x": 1.5, "e": [], "d": {}})
    assert body == "t=1&f=0&i=3&x=1.5"
    # Like PHP, a skipped list item keeps the indices of the others.
    assert encode({"a": [None, "b"]}) == "a[1]=b"


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_values_stay_one_value(value: str) -> None:
    params = {"api_key": "real", "lead": {"email": value}, "actions": [{"cmd": value}]}
    body = encode(params)
    assert body.count("&") == 2
    assert body.count("=") == 3
    assert decode(body) == params


@pytest.mark.parametrize("key", ["a[b", "a]", "x[0]"])
def test_keys_with_brackets_are_refused(key: str) -> None:
    with pytest.raises(ValueError, match="bracket"):
        encode({"lead": {key: "1"}})


def test_keys_with_separators_are_escaped() -> None:
    assert decode(encode({"a&api_key": {"b=c": "1"}})) == {"a&api_key": {"b=c": "1"}}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("a[]=x&a[]=y", {"a": ["x", "y"]}),
        ("a[1]=x", {"a": {"1": "x"}}),
        ("a[0]=x&a[2]=y", {"a": {"0": "x", "2": "y"}}),
        ("a[1]=y&a[0]=x", {"a": ["x", "y"]}),
        ("a[01]=x", {"a": {"01": "x"}}),
        ("a[5]=x&a[]=y", {"a": {"5": "x", "6": "y"}}),
        ("a=1&a=2", {"a": "2"}),
        ("a=1&a[b]=2", {"a": {"b": "2"}}),
        ("a[b]=2&a=1", {"a": "1"}),
        ("a[b=1", {"a_b": "1"}),
        ("a[b]junk=1", {"a": {"b": "1"}}),
        ("[x]=1&y=2", {"y": "2"}),
        ("q=a+b&r=%5B%5D&e=", {"q": "a b", "r": "[]", "e": ""}),
        ("lead%5Bemail%5D=j%40x.com", {"lead": {"email": "j@x.com"}}),
    ],
)
def test_decode_follows_php_parse_str(body: str, expected: dict[str, Any]) -> None:
    assert decode(body) == expected


def test_decode_accepts_bytes() -> None:
    assert decode(b"name=Zo\xc3\xab&x=%F0%9F%9A%80") == {"name": "Zoë", "x": "🚀"}


def _random_text(rng: random.Random) -> str:
    alphabet = string.ascii_letters + string.digits + "&=[]%+ ;/?#\n\"'é€🚀"
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))


def _random_key(rng: random.Random) -> str:
    """Non-numeric keys without brackets (numeric map keys come back as lists)."""
    alphabet = string.ascii_letters + "_-&=% é"
    return "k" + "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 6)))


def _random_params(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth >= 3 or roll < 0.45:
        return rng.choice([_random_text(rng), rng.randint(-5, 500), rng.random() < 0.5])
    if roll < 0.75:
        return {_random_key(rng): _random_params(rng, depth + 1) for _ in range(rng.randint(1, 4))}
    return [_random_params(rng, depth + 1) for _ in range(rng.randint(1, 4))]


def _as_php_sees_it(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _as_php_sees_it(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_as_php_sees_it(item) for item in value]
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def test_random_round_trip() -> None:
    rng = random.Random(20240611)
    for _ in range(400):
        # Top-level names without spaces: PHP would rewrite them, so encode refuses them.
        params = {
            _random_key(rng).replace(" ", "_"): _random_params(rng)
            for _ in range(rng.randint(1, 5))
        }
        assert decode(encode(params)) == _as_php_sees_it(params)
