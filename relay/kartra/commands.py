"""The Kartra command table, derived from shared/kartra/commands.yaml.

Only the commands a mapping may put in `actions` are listed as `ACTIONS`; the lead
commands (`create_lead`, `edit_lead`, `search_lead`) are chosen by the client itself,
and the read commands (`retrieve_*`, `get_*`, `search_*`) return data that a relay
delivering events has no use for. `tests/kartra/test_commands.py` keeps this table
honest against the YAML catalogue.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    """`optional_needed`: "one" (exactly one of the optional params) or "any" (at least
    one); `choices`: the only values Kartra takes for a param. A param written
    `base[key]` goes to Kartra nested, as `actions[i][base][key]`."""

    name: str
    needs_lead: bool
    required: tuple[str, ...]
    optional: tuple[str, ...] = ()
    idempotent: bool = True
    optional_needed: str = ""
    choices: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @property
    def params(self) -> tuple[str, ...]:
        return self.required + self.optional


LEAD_COMMANDS = ("create_lead", "edit_lead", "search_lead")

LEAD_FIELDS = (
    "email",
    "id",
    "new_email",
    "phone",
    "phone_country_code",
    "first_name",
    "middle_name",
    "last_name",
    "last_name2",
    "ip",
    "address",
    "zip",
    "city",
    "state",
    "country",
    "company",
    "lead_picture",
    "website",
    "facebook",
    "twitter",
    "linkedin",
    "lead_preferred_time_zone",
    "sales_tax_id",
    "business_type",
)

_ACTIONS = (
    Command("subscribe_lead_to_list", True, ("list_name",)),
    Command("unsubscribe_lead_from_list", True, ("list_name",)),
    Command("assign_tag", True, ("tag_name",)),
    Command("unassign_tag", True, ("tag_name",)),
    Command("give_points_to_lead", True, ("points",), ("expiration",), idempotent=False),
    Command("remove_points_from_lead", True, ("points",), idempotent=False),
    Command("subscribe_lead_to_sequence_at_step", True, ("sequence_name", "step")),
    Command("unsubscribe_lead_from_sequence", True, ("sequence_name",)),
    Command(
        "calendar_subscribe",
        True,
        ("calendar_name", "class_name"),
        ("starting_date", "starting_hour"),
    ),
    Command("calendar_cancel", True, ("calendar_name", "class_name")),
    Command("refund_transaction", False, ("transaction_id",), ("refund_amount",), idempotent=False),
    Command(
        "cancel_transaction",
        False,
        (),
        ("transaction_id", "transaction_internal_subscription_id"),
        idempotent=False,
        optional_needed="one",
    ),
    Command(
        "modify_subscription_status",
        False,
        ("subscription_id", "subscription_status_modification"),
        choices=(("subscription_status_modification", ("cancel", "pause", "unpause")),),
    ),
    Command(
        "edit_subscription",
        False,
        ("subscription_id",),
        (
            "subscription_product_id",
            "subscription_price_point",
            "subscription_next_payment_date",
            "subscription_amount",
            "subscription_recurrence[recurring_period_1]",
            "subscription_recurrence[recurring_period_2]",
            "subscription_product_quantity",
            "subscription_installments_left",
            "subscription_tax_percent",
        ),
        optional_needed="any",
        choices=(
            (
                "subscription_recurrence[recurring_period_1]",
                (
                    "monthly",
                    "every 2 months",
                    "quarterly",
                    "yearly",
                    "every 2 years",
                    "weekly",
                    "every 2 weeks",
                ),
            ),
            ("subscription_recurrence[recurring_period_2]", ("yearly", "every 2 years")),
        ),
    ),
)

ACTIONS: dict[str, Command] = {c.name: c for c in _ACTIONS}
