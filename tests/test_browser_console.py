"""The console's supervisor items in a real browser (Playwright, Debian's Chromium): the
communication-lost banner appears live when the cell stops reporting in, "Nothing needs
you" only while it does, the cell clock shown; and at phone, tablet and desktop widths
nothing is clipped (issue 18)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from helpers.waiting import BROWSER_BOUND_MS
from playwright.sync_api import Page, expect
from test_console_browser import PASSWORDS, Served, login, seed, serve

from ops.console.app import ConsoleSettings
from ops.console.backend import InMemoryBackend
from ops.console.users import UserStore

pytestmark = pytest.mark.timeout(600)
WIDTHS = (390, 768, 1280)


@pytest.fixture(autouse=True, scope="module")
def _expect_waits_on_events() -> Iterator[None]:
    expect.set_options(timeout=BROWSER_BOUND_MS)
    yield
    expect.set_options(timeout=None)


@pytest.fixture(scope="module")
def users(tmp_path_factory: pytest.TempPathFactory) -> UserStore:
    store = UserStore(tmp_path_factory.mktemp("browser-console") / "users.db")
    store.add("sup", "supervisor", PASSWORDS["sup"])
    return store


@pytest.fixture
def console(users: UserStore) -> Iterator[Served]:
    backend = InMemoryBackend(max_shelve_s=3600)
    seed(backend)
    served = serve(backend, users, ConsoleSettings(cell="browser-test", poll_s=0.2))
    yield served
    served.stop()


def page_at(browser: Any, width: int) -> Page:
    ctx = browser.new_context(viewport={"width": width, "height": 800})
    ctx.set_default_timeout(BROWSER_BOUND_MS)
    return ctx.new_page()


def test_the_banner_appears_live_when_the_cell_stops_reporting(console: Served,
                                                               browser: Any) -> None:
    page = page_at(browser, 1280)
    login(page, console.url, "sup")
    expect(page.locator("#cell-clock time")).to_have_text(re.compile(r"^\d\d:\d\d:\d\d$"))
    expect(page.locator("#link-lost")).to_have_count(0)
    for e in console.backend.list():                  # nothing open: the cell is live
        console.backend.decide(e.id, "sup", "wait_for_repair", "", console.backend.now())
    expect(page.locator("#calm")).to_have_text(
        "Nothing needs you. The agents are handling the cell.")

    console.backend.heartbeat_at = time.time() - 60   # the cell fell silent a minute ago
    banner = page.locator("#link-lost")
    expect(banner).to_contain_text("Communication with the cell lost since")
    expect(banner).to_be_visible()
    expect(page.locator("#calm")).to_have_count(0)
    expect(page.locator("#no-open")).to_contain_text("this page is not current")

    console.backend.stopped_at = time.time()
    expect(banner).to_contain_text("The run has ended (at ")
    page.context.close()


def unclipped(page: Page) -> list[str]:
    """Elements wider than their box or sticking out of the viewport (nothing at all when
    the layout fits)."""
    return list(page.evaluate("""() => {
      const out = [], vw = document.documentElement.clientWidth;
      if (document.documentElement.scrollWidth > vw)
        out.push(`page ${document.documentElement.scrollWidth} > ${vw}`);
      for (const el of document.querySelectorAll("body *")) {
        const r = el.getBoundingClientRect();
        if (r.width === 0 || getComputedStyle(el).visibility === "hidden") continue;
        if (el.scrollWidth > el.clientWidth + 1 && getComputedStyle(el).overflowX !== "visible")
          out.push(`${el.tagName}#${el.id}.${el.className} scroll ${el.scrollWidth} > ${el.clientWidth}`);
        if (r.right > vw + 1) out.push(`${el.tagName}#${el.id}.${el.className} right ${r.right} > ${vw}`);
      }
      return out;
    }"""))


@pytest.mark.parametrize("width", WIDTHS)
def test_nothing_is_clipped_at_phone_tablet_and_desktop_widths(console: Served, browser: Any,
                                                               width: int) -> None:
    page = page_at(browser, width)
    page.goto(f"{console.url}/login")
    assert unclipped(page) == [], "login"
    login(page, console.url, "sup")
    expect(page.locator("#open-count")).to_be_visible()
    assert unclipped(page) == [], "list"
    page.wait_for_selector("body[data-connected='1']")
    console.backend.heartbeat_at = time.time() - 60
    expect(page.locator("#link-lost")).to_be_visible()
    assert unclipped(page) == [], "list with the banner"
    for path in ("/escalations/e-none", "/escalations/e-rep"):
        page.goto(console.url + path)
        expect(page.locator("#cause")).to_be_visible()
        assert unclipped(page) == [], path
    page.goto(console.url + "/journal")
    expect(page.locator("#journal-filters")).to_be_visible()
    assert unclipped(page) == [], "/journal"
    page.goto(console.url + "/kpis")
    expect(page.locator("#kpis")).to_be_visible()
    assert unclipped(page) == [], "/kpis"
    page.context.close()


def test_the_countdown_is_labelled_ticks_and_turns_red_near_zero(console: Served,
                                                                 browser: Any) -> None:
    b = console.backend
    b.raise_escalation(escalation_id="e-soon", priority=1, cause="no_capable_resource",
                       consequence="o-5 waits", safe_default="wait_for_repair",
                       options=[{"id": "wait_for_repair", "label": "Wait for repair",
                                 "effect": ""}],
                       deadline_at=b.now() + 100, context={"order": "o-5", "down": ["lathe1"],
                                                          "capability": "turning"})
    page = page_at(browser, 390)
    login(page, console.url, "sup")
    row = page.locator("a.esc[data-id='e-soon']")
    expect(row).to_contain_text("No machine can do the next step")
    expect(row).to_contain_text("Lathe 1 is down and no other machine can turn o-5.")
    box = row.locator(".countdown-box")
    expect(box).to_contain_text(re.compile(r"safe default in 1:[0-3]\d"))
    expect(box.locator(".countdown")).to_have_class(re.compile(r"\burgent\b"))
    first = box.locator(".countdown").text_content()
    expect(box.locator(".countdown")).not_to_have_text(first or "")     # it ticks
    page.context.close()


def test_shelving_past_the_deadline_asks_to_confirm(console: Served, browser: Any) -> None:
    page = page_at(browser, 768)
    login(page, console.url, "sup")
    page.goto(f"{console.url}/escalations/e-qual")                      # deadline in 30 min
    page.fill("#shelve-form textarea[name=reason]", "fitter on the way")
    page.fill("#shelve-form input[name=duration_min]", "45")
    page.click("#shelve")
    expect(page.locator("#confirm-shelve")).to_contain_text(
        "will apply while this is shelved")
    assert console.backend.get("e-qual").state == "unacknowledged"
    page.click("#shelve-anyway")
    expect(page.locator("#done")).to_have_text("Shelved.")
    assert console.backend.get("e-qual").state == "shelved"
    page.context.close()


def test_a_whole_group_is_acknowledged_at_once(console: Served, browser: Any) -> None:
    b = console.backend
    for k in range(3):
        b.raise_escalation(escalation_id=f"g-{k}", priority=2, cause="repeat_faults",
                           consequence="agv-2 faults", safe_default="keep",
                           options=[{"id": "keep", "label": "Keep in service", "effect": ""}],
                           deadline_at=b.now() + 1800, group="repeat_faults/agv-9",
                           context={"resource": "agv-9", "faults": 3 + k, "window_s": 3600})
    page = page_at(browser, 390)
    login(page, console.url, "sup")
    member = page.locator("a.esc.member[data-id='g-2']")
    expect(member).to_contain_text("AGV 9 broke down 5 times within 60 min")  # its consequence
    assert unclipped(page) == []
    page.click("button[data-group='repeat_faults/agv-9']")
    expect(page.locator("#done")).to_have_text("Acknowledged 3.")
    assert [b.get(f"g-{k}").state for k in range(3)] == ["acknowledged"] * 3
    assert [a["user"] for a in b.audit() if a["escalation"].startswith("g-")
            and a["action"] == "acknowledge"] == ["sup"] * 3
    page.context.close()


def test_a_new_p1_is_annunciated_once_sound_is_turned_on(console: Served, browser: Any) -> None:
    b = console.backend
    page = page_at(browser, 1280)
    login(page, console.url, "sup")
    page.wait_for_selector("body[data-connected='1']")
    expect(page.locator("#sound")).to_have_attribute("aria-pressed", "false")

    def raise_p1(eid: str) -> None:
        b.raise_escalation(escalation_id=eid, priority=1, cause="reject_burst",
                           consequence="forged", safe_default="continue",
                           options=[{"id": "continue", "label": "Continue", "effect": ""}],
                           deadline_at=b.now() + 600, context={"resource": "mill-3"})

    raise_p1("p1-silent")                                   # sound off: no annunciation
    expect(page.locator("a.esc[data-id='p1-silent']")).to_be_visible()
    assert page.evaluate("document.body.dataset.annunciated") is None
    page.click("#sound")                                    # the person turns it on
    expect(page.locator("#sound")).to_have_attribute("aria-pressed", "true")
    raise_p1("p1-loud")
    expect(page.locator("body")).to_have_attribute("data-annunciated", "1")
    page.reload()                                           # the choice stays in this browser
    expect(page.locator("#sound")).to_have_text("Sound for new P1: on")
    page.context.close()
