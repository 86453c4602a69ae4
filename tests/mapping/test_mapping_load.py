"""Loading: routes from file names, and every kind of validation problem, with hints."""

import pytest

from relay.mapping import Mapping, MappingError, Problem, load_mappings
from tests.mapping.conftest import MAPPINGS, RICH, ROOT, STRIPE

MINIMAL = """
verify: none
rules:
  - name: r
    lead: {email: "{{ body.email }}"}
    actions: [{cmd: assign_tag, tag_name: T}]
"""


def test_demo_loads(demo):
    assert isinstance(demo, Mapping)
    assert demo.route == "demo-form"
    assert demo.verify == "none"
    assert (demo.status_code, demo.redirect, demo.account) == (200, None, "default")
    assert [r.name for r in demo.rules] == ["signup"]


def test_shipped_mappings_directory_loads():

    assert "demo-form" in load_mappings(MAPPINGS)


def test_rich_mapping_exposes_its_settings(rich):
    assert rich.route == "shop"
    assert rich.verify == {"scheme": "stripe", "secrets": ["whsec_test_secret"], "tolerance": 300}
    assert rich.status_code == 202
    assert rich.account == "shop_eu"
    assert rich.tables["levels"] == {"1": "gold", "2": "silver"}


def test_routes_come_from_file_names_and_skip_subdirectories(mapping_dir, write):
    write("a.yaml", MINIMAL)
    write("b_2.yml", MINIMAL)
    write("notes.txt", "not a mapping")
    write(".hidden.yaml", "not: [valid")
    (mapping_dir / "examples").mkdir()
    write("examples/stripe.yaml", "broken: [")
    assert sorted(load_mappings(mapping_dir)) == ["a", "b_2"]


def test_loading_is_deterministic_and_repeatable(mapping_dir, write):

    write("shop.yaml", RICH)
    write("a.yaml", MINIMAL)
    first, second = load_mappings(mapping_dir), load_mappings(mapping_dir)
    assert first == second
    assert list(first) == ["a", "shop"]


def test_problems_of_every_file_are_reported_together_in_order(mapping_dir, write):
    write("b.yaml", "verify: none\nrules: []\n")
    write("a.yaml", "rules: [{name: r}]\n")
    with pytest.raises(MappingError) as caught:
        load_mappings(mapping_dir)
    problems = caught.value.problems
    assert [p.file.rsplit("/", 1)[-1] for p in problems] == ["a.yaml", "b.yaml"]
    assert str(caught.value).splitlines() == [str(p) for p in problems]


def test_problem_text_has_file_path_message_and_hint():
    problem = Problem(
        "mappings/shop.yaml",
        "rules[0].actions[1].cmd",
        "unknown Kartra command 'asign_tag'",
        "did you mean 'assign_tag'?",
    )
    assert str(problem) == (
        "mappings/shop.yaml: rules[0].actions[1].cmd: unknown Kartra command 'asign_tag' "
        "(did you mean 'assign_tag'?)"
    )


def test_missing_directory(tmp_path):
    with pytest.raises(MappingError, match="not found"):
        load_mappings(tmp_path / "nope")


@pytest.mark.parametrize(
    "name", ["Shop.yaml", "-shop.yaml", "shop.v2.yaml", "my shop.yaml", "r" * 101 + ".yaml"]
)
def test_route_name_must_be_url_safe(mapping_dir, write, name):
    write(name, MINIMAL)
    with pytest.raises(MappingError) as caught:
        load_mappings(mapping_dir)
    (problem,) = caught.value.problems
    assert problem.message.endswith(
        "must be lower-case letters, digits, - and _, start with a letter or digit, "
        "and be at most 100 long"
    )
    assert problem.hint.startswith("rename the file")
    assert len(problem.hint.split("e.g. ")[1].removesuffix(".yaml")) <= 100


@pytest.mark.parametrize("account", ["a" * 65, "shop eu", "shop\\n"])
def test_an_account_name_is_refused_unless_whole_and_short_enough(problems, account):
    text = MINIMAL.replace("verify: none", f'verify: none\naccount: "{account}"')
    assert problems(text) == ["account: must be 1 to 64 lower-case letters, digits and _"]


def test_an_upper_case_extension_is_a_problem_not_a_file_left_unread(mapping_dir, write):
    write("shop.YAML", MINIMAL)
    with pytest.raises(MappingError) as caught:
        load_mappings(mapping_dir)
    (problem,) = caught.value.problems
    assert (problem.message, problem.hint) == (
        "the extension must be lower case",
        "rename it shop.yaml",
    )


def test_same_route_twice(mapping_dir, write):
    write("shop.yaml", MINIMAL)
    write("shop.yml", MINIMAL)
    with pytest.raises(MappingError, match="route 'shop' is already defined"):
        load_mappings(mapping_dir)


def test_unknown_command_with_hint(problems):
    found = problems(
        """
        verify: none
        rules:
          - name: r
            lead: {email: x@example.com}
            actions:
              - {cmd: assign_tag, tag_name: A}
              - {cmd: asign_tag, tag_name: B}
        """
    )
    assert found == [
        "rules[0].actions[1].cmd: unknown Kartra command 'asign_tag' (did you mean 'assign_tag'?)"
    ]


def test_lead_commands_are_not_actions(problems):
    found = problems(
        "verify: none\nrules: [{name: r, lead: {email: a@b.c}, actions: [{cmd: create_lead}]}]"
    )
    assert found == [
        "rules[0].actions[0].cmd: unknown Kartra command 'create_lead' "
        "(the relay sends lead commands itself: use the rule's `lead:`)"
    ]


def test_unknown_keys_everywhere_with_hints(problems):
    found = problems(
        """
        verify: none
        respone: {status: 200}
        response: {stauts: 202}
        rules:
          - name: r
            wen: body.x
            lead:
              emial: "{{ body.email }}"
              email: "{{ body.email }}"
            actions: [{cmd: assign_tag, tag_name: T}]
        """
    )
    assert found == [
        "respone: unknown key (did you mean 'response'?)",
        "response.stauts: unknown key (did you mean 'status'?)",
        "rules[0].wen: unknown key (did you mean 'when'?)",
        "rules[0].lead.emial: unknown key (did you mean 'email'?)",
    ]


def test_action_parameters_checked_against_the_command_table(problems):
    found = problems(
        """
        verify: none
        rules:
          - name: r
            lead: {email: a@b.c}
            actions:
              - {cmd: assign_tag}
              - {cmd: assign_tag, tag: X}
              - {cmd: calendar_subscribe, calendar_name: C}
              - {cmd: give_points_to_lead, points: 5, colour: red}
              - {cmd: cancel_transaction}
              - {cmd: assign_tag, tag_name: [a, b]}
        """
    )
    assert found == [
        "rules[0].actions[0]: assign_tag needs tag_name",
        "rules[0].actions[1]: assign_tag needs tag_name",
        "rules[0].actions[1].tag: assign_tag does not take 'tag' (it takes tag_name)",
        "rules[0].actions[2]: calendar_subscribe needs class_name",
        "rules[0].actions[3].colour: give_points_to_lead does not take 'colour' "
        "(it takes points, expiration)",
        "rules[0].actions[4]: cancel_transaction needs transaction_id or "
        "transaction_internal_subscription_id",
        "rules[0].actions[5].tag_name: must be text, a number or true/false",
    ]


def test_subscription_commands_are_checked_as_kartra_checks_them(problems):
    found = problems(
        """
        verify: none
        rules:
          - name: r
            actions:
              - {cmd: edit_subscription, subscription_id: 1}
              - cmd: cancel_transaction
                transaction_id: 1
                transaction_internal_subscription_id: 2
              - cmd: modify_subscription_status
                subscription_id: 1
                subscription_status_modification: stop
              - {cmd: edit_subscription, subscription_id: 1, subscription_recurrence: monthly}
              - cmd: edit_subscription
                subscription_id: 1
                subscription_recurrence[recurring_period_1]: fortnightly
              - cmd: modify_subscription_status
                subscription_id: 1
                subscription_status_modification: "{{ body.s }}"
        """
    )
    assert found[0].startswith(
        "rules[0].actions[0]: edit_subscription needs subscription_product_id or "
    )
    assert found[1:] == [
        "rules[0].actions[1]: cancel_transaction takes only one of transaction_id and "
        "transaction_internal_subscription_id",
        "rules[0].actions[2].subscription_status_modification: must be one of cancel, pause, "
        "unpause",
        "rules[0].actions[3]: edit_subscription needs subscription_product_id or "
        + found[0].split(" or ", 1)[1],
        "rules[0].actions[3].subscription_recurrence: edit_subscription does not take "
        "'subscription_recurrence' (Kartra takes it as subscription_recurrence[recurring_period_1] "
        "and subscription_recurrence[recurring_period_2])",
        "rules[0].actions[4].subscription_recurrence[recurring_period_1]: must be one of "
        "monthly, every 2 months, quarterly, yearly, every 2 years, weekly, every 2 weeks",
    ]


def test_lead_scoped_command_needs_a_lead(problems):
    found = problems(
        """
        verify: none
        rules:
          - name: r
            actions:
              - {cmd: refund_transaction, transaction_id: "{{ body.id }}"}
              - {cmd: assign_tag, tag_name: T}
        """
    )
    assert found == [
        "rules[0].actions[1]: assign_tag acts on a lead, but the rule has no `lead:` "
        "(add a lead with email or id)"
    ]


def test_lead_needs_an_identifier_and_known_fields(problems):
    found = problems(
        """
        verify: none
        rules:
          - name: r
            lead: {first_name: Jane, mode: sometimes, custom_fields: {"bad id": 1, ok: null}}
            actions: [{cmd: assign_tag, tag_name: T}]
          - name: s
            lead: {email: a@b.c, mode: existing}
        """
    )
    assert found == [
        "rules[0].lead: needs email or id (Kartra finds a lead by one of them)",
        "rules[0].lead.mode: must be upsert or existing",
        "rules[0].lead.custom_fields.bad id: a custom field identifier has only letters, "
        "digits, - and _",
        "rules[0].lead.custom_fields.ok: must be text, a number or a list of option ids",
        "rules[1].lead.mode: `existing` does nothing without actions "
        "(add actions, or use upsert to update the profile)",
    ]


def test_required_keys_and_types(problems):
    found = problems(
        """
        response: {status: 201, redirect: "ftp://x"}
        account: Shop EU
        event_id: 5
        rules:
          - when: body.x
          - name: ""
            actions: {cmd: assign_tag}
          - just text
        """
    )
    assert found == [
        "verify: required key is missing "
        "(write `verify: none` to accept unsigned posts, or name a signature scheme)",
        "response.status: must be 200 or 202",
        "response.redirect: must be an http:// or https:// URL",
        "account: must be 1 to 64 lower-case letters, digits and _",
        "event_id: must be text",
        "rules[0].name: required key is missing (give every rule a unique name)",
        "rules[1].name: must be 1 to 100 characters",
        "rules[1].actions: must be a list",
        "rules[2]: must be a mapping of key: value",
    ]


def test_rules_must_not_be_empty(problems):
    assert problems("verify: none\nrules: []\n") == ["rules: needs at least one rule"]


@pytest.mark.parametrize(
    ("verify", "message"),
    [
        ("stripe", "verify: must be `none` or a mapping with `scheme:`, not 'stripe'"),
        ("{secret: x}", "verify: needs a `scheme:`"),
    ],
)
def test_verify_is_none_or_a_scheme(problems, verify, message):
    (found,) = problems(f"verify: {verify}\nrules: [{{name: r}}]\n")
    assert found.startswith(message)


def test_duplicate_rule_names(problems):
    found = problems("verify: none\nrules: [{name: a}, {name: b}, {name: a}]\n")
    assert found == [
        "rules[2].name: duplicate rule name 'a' (also rules[0]) "
        "(rule names must be unique in a file)"
    ]


def test_a_lookup_without_its_table_is_refused_at_load(problems):
    """It passed `check`, then every event was rejected with a Python TypeError."""
    found = problems(
        "verify: none\ntables: {t: {a: b}}\nrules:\n  - name: r\n    lead:\n"
        '      email: a@b.co\n      city: "{{ body.c | lookup }}"\n'
    )
    assert found == [
        "rules[0].lead.city: lookup needs the table to read (e.g. `lookup('products')`)"
    ]


def test_template_and_expression_syntax_errors_name_the_line(problems):
    found = problems(
        """
        verify: none
        event_id: "{{ body.id }"
        rules:
          - name: r
            when: body.x ==
            lead:
              email: "{{ body.email | emial }}"
              first_name: "Hi {% if body.x %}there"
              last_name: "{{ body.last | lookup('prodcts') }}"
              city: "{{ body.city is nmber }}"
            actions:
              - {cmd: assign_tag, tag_name: "{{ body.t }}{{", when: "{{ body.vip }}"}
        """
    )
    assert found == [
        "event_id: template syntax error: unexpected '}' (line 1)",
        "rules[0].when: expression syntax error: unexpected 'end of template' (line 1)",
        "rules[0].lead.email: unknown filter 'emial' (did you mean 'email'?)",
        "rules[0].lead.first_name: template syntax error: Unexpected end of template. Jinja "
        "was looking for the following tags: 'elif' or 'else' or 'endif'. The innermost block "
        "that needs to be closed is 'if'. (line 1)",
        "rules[0].lead.last_name: lookup names unknown table 'prodcts' "
        "(declare it under `tables:`)",
        "rules[0].lead.city: unknown test 'nmber' (did you mean 'number'?)",
        "rules[0].actions[0].tag_name: template syntax error: unexpected 'end of template' "
        "(line 1)",
        "rules[0].actions[0].when: a condition is a bare expression, without {{ }} "
        "(write `when: body.vip`, not `when: '{{ body.vip }}'`)",
    ]


def test_syntax_error_line_is_the_line_inside_the_template(problems):
    (found,) = problems(
        """
        verify: none
        rules:
          - name: r
            lead:
              email: a@b.c
              first_name: |
                {% if body.name %}
                  {{ body.name ) }}
                {% endif %}
        """
    )
    assert found == "rules[0].lead.first_name: template syntax error: unexpected ')' (line 2)"


def test_lookup_table_names_are_checked_with_a_hint(problems):
    found = problems(
        """
        verify: none
        tables: {products: {a: b}, "bad name": {}, nested: {k: [1]}}
        rules:
          - name: r
            lead: {email: "{{ body.e }}"}
            actions: [{cmd: assign_tag, tag_name: "{{ body.p | lookup('prodcts') }}"}]
        """
    )
    assert found == [
        "tables.bad name: a table name has only letters, digits and _, and starts with a "
        "letter or _",
        "tables.nested.k: must be text, a number or true/false",
        "rules[0].actions[0].tag_name: lookup names unknown table 'prodcts' "
        "(did you mean 'products'?)",
    ]


def test_templates_cannot_include_files(problems):
    (found,) = problems(
        "verify: none\nrules: [{name: r, lead: {email: \"{% include '/etc/passwd' %}\"}}]\n"
    )
    assert found.startswith("rules[0].lead.email: templates cannot extend, include or import")


def test_a_top_level_list_is_refused(problems):
    assert problems("- a\n- b\n") == [
        "a mapping file is a YAML mapping (key: value) at the top (start with `verify: none`)"
    ]


def test_the_examples_in_the_docs_load(mapping_dir, event):
    """docs/mappings.md shows the shipped demo and a Stripe mapping that really work."""
    import json

    docs = (ROOT / "docs" / "mappings.md").read_text()
    blocks = [b.split("```", 1)[0] for b in docs.split("```yaml\n")[1:]]
    examples = {
        b.splitlines()[0].removeprefix("# mappings/"): b
        for b in blocks
        if b.startswith("# mappings/")
    }
    assert sorted(examples) == ["demo-form.yaml", "stripe.yaml"]
    for name, text in examples.items():
        (mapping_dir / name).write_text(text)
    mappings = load_mappings(mapping_dir)
    shipped = load_mappings(ROOT / "mappings")["demo-form"]
    assert mappings["demo-form"].rules == shipped.rules

    body = json.loads((STRIPE / "checkout.session.completed.json").read_text())
    body["livemode"] = True
    (plan,) = mappings["stripe"].render(event(body)).plans
    assert [a.get("tag_name") for a in plan["actions"]] == [
        "Bought Course 101",
        "Member Access: Course 101",
        None,
    ]
