"""Reading mapping files: YAML errors with positions, safe tags, size and alias bounds."""

import time

import pytest

from relay.mapping.files import MAX_FILE_BYTES


def test_yaml_syntax_error_has_line_and_column(problems):
    (found,) = problems("verify: none\nrules:\n  - name: [r\n")
    assert found.startswith("YAML error at line 4, column 1:")


def test_python_tags_are_refused(problems):
    (found,) = problems("verify: !!python/object/apply:os.system ['true']\nrules: []\n")
    assert found == (
        "YAML error at line 1, column 9: !!python/object/apply:os.system is not allowed: "
        "a mapping file holds plain data, no Python objects"
    )


def test_duplicate_keys_are_refused(problems):
    (found,) = problems("verify: none\nverify: none\nrules: [{name: r}]\n")
    assert found == "YAML error at line 2, column 1: duplicate key 'verify'"


def test_merge_keys_may_be_overridden(load):
    mapping = load(
        """
        verify: none
        rules:
          - &base {name: a, when: "false"}
          - {<<: *base, name: b}
        """
    )
    assert [rule.name for rule in mapping.rules] == ["a", "b"]


def test_billion_laughs_fails_fast(problems):
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 10):
        refs = ", ".join([f"*a{i - 1}"] * 9)
        lines.append(f"a{i}: &a{i} [{refs}]")
    started = time.monotonic()
    (found,) = problems("\n".join(lines) + "\nverify: none\nrules: [{name: r}]\n")
    assert time.monotonic() - started < 1
    assert "YAML aliases expand to more than 100000 values" in found
    assert "billion laughs" in found


def test_recursive_alias_is_refused(problems):
    (found,) = problems("verify: none\nrules: &r [*r]\n")
    assert "YAML alias refers to itself" in found


def test_deep_nesting_is_refused(problems):
    (found,) = problems("verify: none\nx: " + "[" * 200 + "]" * 200 + "\n")
    assert found == "YAML is nested more than 50 levels deep (line 2)"


def test_files_over_one_mebibyte_are_refused(problems):
    padding = "# " + "x" * 100 + "\n"
    text = "verify: none\nrules: [{name: r}]\n" + padding * (MAX_FILE_BYTES // len(padding) + 1)
    assert problems(text) == ["file is larger than 1024 KiB"]


def test_non_utf8_is_refused(mapping_dir):
    from relay.mapping import MappingError, load_mapping

    path = mapping_dir / "t.yaml"
    path.write_bytes(b"verify: none\ndescription: caf\xe9\n")
    with pytest.raises(MappingError, match="not UTF-8"):
        load_mapping(path)


def test_empty_file(problems):
    assert problems("") == [
        "a mapping file is a YAML mapping (key: value) at the top (start with `verify: none`)"
    ]
