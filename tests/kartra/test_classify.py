"""`classify` must agree with API.md §11 and cover every code in commands.yaml."""

import re

import pytest
import yaml

from relay.kartra import classify
from relay.kartra.client import CODE_CLASSES
from tests.conftest import SHARED

KARTRA = SHARED / "kartra"


def _documented_classes() -> dict[int, str]:
    """Expected class per code, read from the §11 tables of API.md."""
    text = (KARTRA / "API.md").read_text(encoding="utf-8")
    section = text[text.index("## 11. Error type codes") : text.index("## 12.")]
    call_level = section[: section.index("### 11.2")]
    expected = {}
    for part, config_class in ((call_level, "account"), (section[len(call_level) :], None)):
        for row in re.finditer(r"^\| (\d{3})\b[^|]*\|[^|]*\|[^|]*\| (.+?) \|$", part, re.M):
            code, retry = int(row.group(1)), row.group(2)
            if code == 244:
                # Success-equivalent only inside deliver's upsert flow, which handles it.
                expected[code] = "data"
            elif "success-equivalent" in retry:
                expected[code] = "success_equivalent"
            elif retry.startswith("transient-ambiguous"):
                expected[code] = "ambiguous"
            elif retry.startswith("transient"):
                expected[code] = "transient"
            elif retry.startswith("permanent-config"):
                expected[code] = config_class or "action_config"
            else:
                assert retry.startswith("permanent-data"), retry
                expected[code] = "data"
    return expected


DOCUMENTED = _documented_classes()


def test_api_md_tables_were_read() -> None:
    assert len(DOCUMENTED) > 70
    assert {429, 201, 206, 212, 231, 266, 290} <= DOCUMENTED.keys()


@pytest.mark.parametrize(("code", "expected"), sorted(DOCUMENTED.items()))
def test_classify_matches_api_md(code: int, expected: str) -> None:
    assert classify(code) == expected


def test_every_catalogued_code_has_an_explicit_row() -> None:
    catalog = yaml.safe_load((KARTRA / "commands.yaml").read_text(encoding="utf-8"))
    codes = {code for code in catalog["error_catalog"] if isinstance(code, int)}
    codes |= set(catalog["success_catalog"]) - {"no_type", "not_captured"}
    assert codes - CODE_CLASSES.keys() == set()


def test_success_and_unknown_codes() -> None:
    assert {classify(code) for code in (101, 103, 104, 105, 106, 107, 112, 113, 114, 115)} == {"ok"}
    assert classify(205) == "data"
    assert classify(999) == "data"
