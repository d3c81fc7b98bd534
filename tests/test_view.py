"""`mwtap view` end to end: the real command serving a capture on 127.0.0.1, driven by Playwright
in Debian's Chromium (no browser download). Screenshots of each screen go to tmp_path (or to
$MWTAP_SCREENSHOTS), to be looked at."""

from __future__ import annotations

import gzip
import os
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

import orjson
import pytest

from conftest import BIN, REPO
from sample_capture import generate

CHROMIUM = "/usr/bin/chromium"
needs_chromium = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian's chromium is not installed "
                                    "(.ci/run installs it)")


def start_view(procs, tmp_path: Path, *args: str) -> tuple[object, str]:
    proc = procs.start([str(BIN / "mwtap"), "view", "--no-browser", *args], "view")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = re.search(r"http://\S+/", proc.log_path.read_text())
        if found:
            return proc, found[0]
        assert proc.poll() is None, proc.log_path.read_text()
        time.sleep(0.1)
    raise TimeoutError(proc.log_path.read_text())


@pytest.fixture
def capture(tmp_path) -> Path:
    path = tmp_path / "sample.jsonl"
    generate(path)
    return path


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


def shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("MWTAP_SCREENSHOTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def wait_until(page, expression: str, timeout: float = 30.0) -> None:
    """Poll a page expression (wait_for_function evaluates a string, which the view's policy forbids)."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"not true after {timeout} s: {expression}"
        time.sleep(0.05)


def open_page(browser, url: str):
    page = browser.new_page(viewport={"width": 1500, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: m.type == "error" and errors.append(m.text))
    page.goto(url)
    page.wait_for_selector("body[data-ready='1']", timeout=30_000)
    return page, errors


@needs_chromium
def test_browse_violations_pairs_filters(procs, tmp_path, capture, browser):
    _, url = start_view(procs, tmp_path, str(capture))
    page, errors = open_page(browser, url)
    out = shots(tmp_path)

    # Connections: every consumer of the capture, worst first (the misbehaving one has the errors).
    conns = page.locator("li.conn")
    assert conns.count() == 10
    first_group = page.locator(".consumer").first
    assert first_group.locator(".badge.error").count() >= 1
    page.screenshot(path=out / "view-connections.png")

    # A click on a violation lands on its frame.
    page.click(".tabs button[data-tab=violations]")
    page.locator("details.rule", has_text="invalid-json").locator("summary").click()
    page.locator("details.rule", has_text="invalid-json").locator("li.vitem").first.click()
    page.wait_for_selector("#detail .violation.error")
    assert "invalid-json" in page.inner_text("#detail")
    assert page.locator("#list .row.on").count() == 1
    assert "f=" in page.evaluate("location.hash")
    page.screenshot(path=out / "view-violation.png")

    # Request -> response and back, latency on both.
    page.click(".tabs button[data-tab=connections]")
    page.evaluate("document.getElementById('list').scrollTop = 0")
    wait_until(page, "document.getElementById('rows').style.top === '0px'")
    page.locator("#list .row.k-req").first.click()
    page.wait_for_selector("#detail button.jump:has-text('response')")
    request_text = page.inner_text("#detail h3")
    page.click("#detail button.jump:has-text('response')")
    page.wait_for_selector("#detail button.jump:has-text('request')")
    assert page.inner_text("#detail h3").startswith("resp")
    assert re.search(r"\d+\.\d ms", page.inner_text("#detail .links"))
    page.click("#detail button.jump:has-text('request')")
    page.wait_for_selector("#detail button.jump:has-text('response')")
    assert page.inner_text("#detail h3") == request_text
    selected = page.locator("#rows .row.on").get_attribute("data-g")
    page.keyboard.press("ArrowDown")  # the next frame of the list opens
    wait_until(page, f"document.querySelector('#rows .row.on').dataset.g !== '{selected}'")
    assert page.inner_text("#detail h3").startswith("resp")
    page.keyboard.press("k")
    wait_until(page, f"document.querySelector('#rows .row.on').dataset.g === '{selected}'")
    page.screenshot(path=out / "view-pair.png")

    # A filter narrows the list, and the URL carries it (a link reproduces the view).
    before = int(page.inner_text("#list-foot").split()[0].replace(",", ""))
    page.fill("#filters input[name=type]", "GetClock")
    page.press("#filters input[name=type]", "Enter")
    wait_until(page, "document.querySelector('#list-foot').textContent.includes('filtered')")
    after = int(page.inner_text("#list-foot").split()[0].replace(",", ""))
    assert 0 < after < before
    assert all("GetClock" in t for t in page.locator("#list .row span:nth-child(4)").all_inner_texts())
    link = page.url
    assert "type=GetClock" in link
    # Dragging across the timeline zooms to that time range; the list follows.
    box = page.locator("#timeline").bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.1, box["y"] + 60)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + 60, steps=5)
    page.mouse.up()
    shown = "parseInt(document.querySelector('#list-foot').textContent.replace(/,/g, ''))"
    wait_until(page, f"location.hash.includes('t0=') && {shown} < {after}")
    assert page.is_visible("#range")
    page.dblclick("#timeline")
    wait_until(page, f"!location.hash.includes('t0=') && {shown} === {after}")
    page.screenshot(path=out / "view-filter.png")
    again, more_errors = open_page(browser, link)
    assert again.input_value("#filters input[name=type]") == "GetClock"
    assert int(again.inner_text("#list-foot").split()[0].replace(",", "")) == after
    assert errors == [] and more_errors == []


@needs_chromium
def test_acknowledgements_streams_and_reconnects(procs, tmp_path, capture, browser):
    _, url = start_view(procs, tmp_path, str(capture))
    page, errors = open_page(browser, url)
    # An agent's message -> the consumer's ACCEPT (and back); READ is offered too.
    page.fill("#filters input[name=text]", "agent says hello")
    page.press("#filters input[name=text]", "Enter")
    # Only the agent's messages are listed once the filter applied (before, the first notification is another).
    wait_until(page, "[...document.querySelectorAll('#rows .row')].every(r => r.classList.contains('k-notification'))"
                     " && document.querySelector('#rows .row') !== null")
    page.locator("#rows .row.k-notification").first.click()
    page.wait_for_selector("#detail button.jump:has-text('READ')")
    message = page.inner_text("#detail .facts")
    page.click("#detail button.jump:has-text('ACCEPT')")
    page.wait_for_selector("#detail button.jump:has-text('message')")
    assert '"status": "ACCEPT"' in page.inner_text("#detail pre.json")
    page.click("#detail button.jump:has-text('message')")
    page.wait_for_selector("#detail button.jump:has-text('ACCEPT')")
    assert page.inner_text("#detail .facts") == message
    page.screenshot(path=shots(tmp_path) / "view-accept.png")
    # A subscription's frames: the list shows its stream.
    page.click("#clear")
    page.locator("#rows .row.k-resp", has_text="cqm.SubscribeExConversationsResponse").first.click()
    page.click("#detail button.jump:has-text('stream')")
    # The hash changes before the stream's rows arrive; the footer says "(filtered)" once they are drawn.
    wait_until(page, "location.hash.includes('stream=') && "
                     "document.querySelector('#list-foot').textContent.includes('filtered')")
    kinds = set(page.locator("#rows .row span:nth-child(3)").all_inner_texts())
    assert kinds == {"req", "resp", "notification"}
    # A close -> the connection that reconnected after it.
    first = page.locator("li.conn.on .cid").get_attribute("title")
    page.click("#clear")
    page.select_option("#filters select[name=kind]", "open,close")
    page.locator("#rows .row.k-close").click()
    page.click("#detail button.jump:has-text('reconnect')")
    wait_until(page, f"!document.querySelector('li.conn.on .cid').title.startsWith('{first}')")
    assert page.locator("li.conn.on").count() == 1
    assert errors == []


@needs_chromium
def test_a_late_answer_for_a_replaced_filter_is_not_drawn(procs, tmp_path, capture, browser):
    """Two filters in a row, the first one's rows arriving last: the list and its count stay the
    second's (the answer of a list no longer asked for is dropped)."""
    _, url = start_view(procs, tmp_path, str(capture))
    page, errors = open_page(browser, url)
    wait_until(page, "document.querySelector('#list-foot').textContent.includes('frames')")
    held = []  # the first filter's first page, answered only when the test says
    page.route(lambda u: "/frames?" in u and "type=PublishEvent" in u, lambda route: held.append(route))
    page.fill("#filters input[name=type]", "PublishEvent")
    page.press("#filters input[name=type]", "Enter")
    deadline = time.monotonic() + 30
    while not held:
        assert time.monotonic() < deadline, "the first filter's rows were never asked for"
        page.wait_for_timeout(50)
    page.fill("#filters input[name=type]", "MessagingEventNotification")
    page.press("#filters input[name=type]", "Enter")
    shown = "parseInt(document.querySelector('#list-foot').textContent.replace(/,/g, ''))"
    wait_until(page, "location.hash.includes('type=MessagingEventNotification') && "
                     "document.querySelector('#list-foot').textContent.includes('filtered')")
    count = page.evaluate(shown)
    types = page.locator("#list .row span:nth-child(4)").all_inner_texts()
    assert count > 0 and types and all("MessagingEventNotification" in t for t in types)
    with page.expect_response(lambda r: "type=PublishEvent" in r.url):
        held[0].continue_()
    page.wait_for_timeout(1000)  # the late rows had their chance to be drawn
    assert page.evaluate(shown) == count
    assert page.locator("#list .row span:nth-child(4)").all_inner_texts() == types
    assert errors == []


@needs_chromium
def test_a_late_timeline_of_a_connection_left_is_not_drawn(procs, tmp_path, capture, browser):
    """One connection's timeline answered after another connection was chosen: the canvas keeps
    the chosen connection's timeline."""
    _, url = start_view(procs, tmp_path, str(capture))
    page, errors = open_page(browser, url)
    wait_until(page, "document.querySelector('#list-foot').textContent.includes('frames')")
    numbers = [int(n) for n in page.eval_on_selector_all("li.conn", "lis => lis.map(li => li.dataset.conn)")]
    left, chosen = numbers[-2], numbers[-1]
    held = []  # the left connection's timeline, answered only when the test says
    page.route(re.compile(rf"/timeline\?(.*&)?conn={left}(&|$)"), lambda route: held.append(route))
    page.click(f"li.conn[data-conn='{left}']")
    deadline = time.monotonic() + 30
    while not held:
        assert time.monotonic() < deadline, "the first connection's timeline was never asked for"
        page.wait_for_timeout(50)
    before = page.eval_on_selector("#timeline", "c => c.toDataURL()")
    page.click(f"li.conn[data-conn='{chosen}']")
    wait_until(page, f"document.querySelector('#timeline').toDataURL() !== {before!r}")  # the chosen one drawn
    drawn = page.eval_on_selector("#timeline", "c => c.toDataURL()")
    with page.expect_response(re.compile(rf"/timeline\?(.*&)?conn={left}(&|$)")):
        held[0].continue_()
    page.wait_for_timeout(1000)  # the late timeline had its chance to be drawn
    assert page.eval_on_selector("#timeline", "c => c.toDataURL()") == drawn
    assert errors == []


@needs_chromium
def test_follow_shows_appended_frame(procs, tmp_path, capture, browser):
    _, url = start_view(procs, tmp_path, "--follow", str(capture))
    page, errors = open_page(browser, url)
    records = [orjson.loads(line) for line in capture.read_bytes().splitlines()]
    last_open = [r for r in records if r["rec"] == "open"][-1]
    conn = last_open["conn"]
    page.locator(f"li.conn .cid[title='{conn}']").click()
    wait_until(page, "document.querySelector('#list-foot').textContent.includes('frames')")
    last = max(r["t"] for r in records)
    with capture.open("ab") as f:  # written in two pieces, as a recorder's buffered line may arrive
        line = orjson.dumps({"rec": "msg", "t": last + 1, "conn": conn, "n": 10_000, "dir": "c2s", "op": "text",
                             "size": 52, "text": '{"kind":"req","id":"appended-1","type":"GetClock"}',
                             "kind": "req", "id": "appended-1", "type": "GetClock"}) + b"\n"
        f.write(line[:20])
        f.flush()
        time.sleep(0.5)
        f.write(line[20:])
        f.write(orjson.dumps({"rec": "msg", "t": last + 2, "conn": conn, "n": 10_001, "dir": "c2s", "op": "text",
                              "size": 9, "text": "{not json"}) + b"\n")
    page.fill("#filters input[name=text]", "appended-1")
    page.press("#filters input[name=text]", "Enter")
    page.wait_for_selector("#list .row:has-text('appended-1')", timeout=15_000)
    page.screenshot(path=shots(tmp_path) / "view-follow.png")
    assert page.is_visible("#follow")
    # The finding on the appended line is there too, in the engine's words.
    page.click(".tabs button[data-tab=violations]")
    page.wait_for_selector("#summary:has-text('6 errors')", timeout=15_000)
    assert page.locator("details.rule", has_text="invalid-json").count() == 2
    assert errors == []


@needs_chromium
def test_violation_groups_read_as_the_verdict(procs, tmp_path, browser):
    """The violations panel words each (consumer, rule) group as `mwtap analyze`'s verdict does: the
    count at the group's severity, the lower ones apart (the demo: missing-accept × 9, 1 more as info)."""
    from analysis import analyze
    from analysis.verdict import lower
    demo = REPO / "notebooks" / "data" / "demo.jsonl.gz"
    summary, _ = analyze(demo)
    expected = sorted(
        f"{g['severity']} {g['rule']} × {g['count']}"
        + (f" ({g['connections']} connections)" if g["connections"] > 1 else "") + lower(g)
        for g in summary["verdict"]["findings"])
    assert any("(and 1 more as info)" in line for line in expected)
    _, url = start_view(procs, tmp_path, str(demo))
    page, errors = open_page(browser, url)
    page.click(".tabs button[data-tab=violations]")
    page.wait_for_selector("details.rule summary")
    shown = sorted(page.eval_on_selector_all("details.rule > summary", "els => els.map((e) => e.textContent)"))
    assert shown == expected
    assert errors == []


def test_token_required_and_loopback_only(procs, tmp_path, capture):
    _, url = start_view(procs, tmp_path, str(capture))
    with urllib.request.urlopen(url + "api/summary", timeout=10) as r:
        assert orjson.loads(r.read())["connections"] == 10
        assert "default-src 'self'" in r.headers["Content-Security-Policy"]
    base = url.rsplit("/", 2)[0]
    for path in ("/", "/api/summary", "/static/app.js", "/wrongtoken/api/summary"):
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(base + path, timeout=10)
        assert e.value.code == 403, path
    refused = procs.start([str(BIN / "mwtap"), "view", "--no-browser", "--host", "0.0.0.0", str(capture)], "refused")
    assert refused.wait(60) == 2
    assert "not a loopback address" in refused.log_path.read_text()


def test_bad_input_one_line_exit_2(procs, tmp_path, capture):
    not_capture = tmp_path / "notes.jsonl"
    not_capture.write_text('{"hello": 1}\n')
    gz = tmp_path / "sample.jsonl.gz"
    gz.write_bytes(gzip.compress(capture.read_bytes()))
    for args, message in (([str(not_capture)], "notes.jsonl:1: not an mwtap capture"),
                          ([str(tmp_path / "missing.jsonl")], "missing.jsonl: cannot open"),
                          (["--follow", str(gz)], "--follow needs a plain .jsonl capture")):
        proc = procs.start([str(BIN / "mwtap"), "view", "--no-browser", *args], "bad")
        assert proc.wait(60) == 2, args
        assert message in proc.log_path.read_text() and "Traceback" not in proc.log_path.read_text()
