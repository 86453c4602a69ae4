"""The dashboard in a real browser (Debian's chromium driven by Playwright) against
the running relay and the fake Kartra, all processes on 127.0.0.1.

The story the dashboard exists for: a buyer says "I paid but got nothing"; the
operator signs in, finds the event by email, sees Kartra refused a misspelt tag,
fixes the mapping, deploys (restarts), replays, and sees the new call succeed.
"""

import os
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

from tests.conftest import ROOT
from tests.e2e.conftest import API_KEY, API_PASSWORD, live_env

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TOKEN = "browser-admin-token-0123456789"
# Set to a folder (e.g. docs/screenshots) to refresh the README's screenshots.
SCREENSHOTS = os.environ.get("RELAY_SCREENSHOTS")

SHOP = (
    (ROOT / "mappings" / "demo-form.yaml")
    .read_text()
    .replace("tag_name: Relay Demo", "tag_name: Relay Demoo")
)


@pytest.fixture
def browser():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def sign_in(page, url: str) -> None:
    page.goto(url + "/admin/")
    page.get_by_label("Admin token").fill(TOKEN)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Last 24 hours")).to_be_visible()


def shoot(page, name: str, tmp_path: Path) -> None:
    folder = Path(SCREENSHOTS) if SCREENSHOTS else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def test_find_janes_event_fix_replay_and_see_kartra_accept_it(
    relay_factory, fake_kartra, browser, tmp_path
):
    mappings = tmp_path / "mappings"
    mappings.mkdir()
    (mappings / "demo-form.yaml").write_text(SHOP)
    relay = relay_factory(
        **live_env(fake_kartra), ADMIN_TOKEN=TOKEN, MAPPINGS_DIR=str(mappings)
    ).start()
    relay.post("demo-form", data={"email": "bob@example.com"})
    event_id = relay.post(
        "demo-form",
        data={"email": "jane@example.com", "first_name": "<script>alert('x')</script>Jane"},
    ).json()["event_id"]
    relay.wait_for_status(event_id, "failed")

    relay.stop()  # the fix, deployed: the tag's name corrected, the relay restarted
    (mappings / "demo-form.yaml").write_text(SHOP.replace("Relay Demoo", "Relay Demo"))
    relay.start()

    page = browser.new_page()
    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    sign_in(page, relay.url)
    shoot(page, "overview", tmp_path)
    page.get_by_role("link", name="Events", exact=True).click()
    page.get_by_label("lead email").fill("jane@example.com")
    page.get_by_role("button", name="Search").click()
    rows = page.locator("tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("failed")
    shoot(page, "events", tmp_path)
    page.get_by_role("link", name=event_id).click()

    expect(page.locator("pre.payload")).to_contain_text("<script>alert('x')</script>Jane")
    expect(page.locator("body")).to_contain_text("Relay Demoo")
    content = page.content()
    assert API_KEY not in content and API_PASSWORD not in content and TOKEN not in content
    page.get_by_role("button", name="Replay").click()
    expect(page.get_by_role("status")).to_contain_text("Replayed: queued")
    expect(page.locator("h1 .badge")).to_have_text("delivered", timeout=20_000)
    expect(page.locator("pre.response").last).to_contain_text('"status": "Success"')
    shoot(page, "event", tmp_path)
    assert dialogs == []
    assert relay.event(event_id)["status"] == "delivered"
    [lead] = [x for x in fake_kartra.leads() if x["email"] == "jane@example.com"]
    assert lead["tags"] == ["Relay Demo"]


def test_forms_without_their_csrf_token_are_refused_and_phones_fit(
    relay_factory, fake_kartra, browser, tmp_path
):
    relay = relay_factory(**live_env(fake_kartra), ADMIN_TOKEN=TOKEN).start()
    event_id = relay.post("demo-form", data={"email": "jane@example.com"}).json()["event_id"]
    relay.wait_for_status(event_id, "delivered")

    page = browser.new_page()
    sign_in(page, relay.url)
    page.goto(f"{relay.url}/admin/events/{event_id}")
    page.locator("input[name=csrf_token]").evaluate_all("inputs => inputs.forEach(i => i.remove())")
    page.get_by_role("button", name="Replay").click()
    expect(page.locator("body")).to_contain_text("CSRF token is missing")
    assert len(relay.event(event_id)["deliveries"]) == 1

    phone = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True)
    sign_in(phone, relay.url)
    for path in (
        "/admin/",
        "/admin/events",
        f"/admin/events/{event_id}",
        "/admin/failures",
        "/admin/accounts",
    ):
        phone.goto(relay.url + path)
        overflow = phone.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{path} is {overflow}px wider than a phone"
        heading = phone.evaluate(  # the body may clip what sticks out: the heading itself
            "(h => h.scrollWidth - h.clientWidth)(document.querySelector('h1'))"
        )
        assert heading <= 0, f"{path}: its heading is {heading}px wider than a phone"
    phone.goto(relay.url + "/admin/events")
    shoot(phone, "events-phone", tmp_path)
