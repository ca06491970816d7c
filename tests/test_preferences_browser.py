"""A volunteer's preferences in real headless Chromium, emulating a phone
(Pixel 7: viewport, touch, mobile user agent) against the real local stack:
only while charging (the Battery Status API stubbed by an init script), a
daily data cap (the page's meter checked against the edge server's access
log), a CPU share (the measured duty cycle), and preferences that survive a
reload. Each test has its own stack, so the edge's log and the jobs are its
page's alone."""

import shutil
import time
from collections import Counter

import pytest

from crowdtrain.local.process import LocalCloudProcess
from crowdtrain.local.swarm import open_context
from crowdtrain.paths import ROOT
from tests.harness import lease_items
from tests.pages import assert_quiet, watched

pytestmark = pytest.mark.skipif(not shutil.which("/usr/bin/chromium"), reason="needs Debian's chromium")
ARTIFACTS = ROOT / "artifacts"  # docs/screenshots/phone.png is copied from here

# Chromium has no Battery Status API in headless mode on every platform: a battery the test plugs and unplugs.
# And each lease request's time, on the page's clock (Playwright's own request events reach a sync test late).
BATTERY = """
(() => {
  window.__leases = [];
  const realFetch = window.fetch;
  window.fetch = (input, init) => {
    if (String(input.url || input).endsWith('/tasks/lease')) window.__leases.push(performance.now());
    return realFetch(input, init);
  };
  const battery = new EventTarget();
  Object.assign(battery, { charging: true, level: 0.5, chargingTime: 0, dischargingTime: Infinity });
  window.__plug = (charging) => { battery.charging = charging; battery.dispatchEvent(new Event('chargingchange')); };
  Object.defineProperty(Navigator.prototype, 'getBattery',
                        { value: () => Promise.resolve(battery), configurable: true });
})();
"""


@pytest.fixture
def stack(tmp_path):
    process = LocalCloudProcess(tmp_path)
    yield process
    process.stop()


@pytest.fixture(scope="module")
def playwright():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as instance:
        yield instance


@pytest.fixture
def phone(playwright, tmp_path):
    context = open_context(playwright, str(tmp_path / "profile"), device="Pixel 7")
    context.add_init_script(BATTERY)
    page = watched(context.new_page())
    yield page
    context.close()
    assert_quiet(page)


def leases_since(page, since: float) -> int:
    """Lease requests the page sent after `since` (its performance.now())."""
    return page.evaluate(f"window.__leases.filter((t) => t > {since}).length")


def tasks_done(page) -> int:
    return int(page.inner_text("#tasks"))


def held_leases(stack, job: str, volunteer: str) -> int:
    items = lease_items(stack.table, job)
    return sum(
        1
        for i in items
        if i["volunteer_id"].startswith(f"{volunteer}.")
        and i["state"] == "leased"
        and float(i["expires"]) > time.time()
    )


def set_value(page, selector: str, value) -> None:
    """As a person sets a control, once the page shows the saved preferences
    (before that, the page would put them back): its value, then the input
    and change events the page listens to."""
    page.wait_for_function("window.crowdtrain && window.crowdtrain.ready === true", timeout=30_000)
    page.eval_on_selector(
        selector,
        "(el, v) => { el.value = v; el.dispatchEvent(new Event('input', { bubbles: true }));"
        " el.dispatchEvent(new Event('change', { bubbles: true })); }",
        str(value),
    )


def test_unplugging_stops_leasing_within_one_task_and_plugging_in_resumes(stack, phone):
    job = stack.char_lstm_job(batches=400, epochs=1, lease_seconds=300)
    phone.goto(f"{stack.web}?volunteer=phone")
    phone.tap("#charging-only")
    assert "(charging now)" in phone.inner_text("#charging-note")
    phone.focus("#toggle")
    phone.keyboard.press("Enter")  # the keyboard alone starts it
    assert phone.get_attribute("#toggle", "class") == "stop" and phone.inner_text("#toggle") == "Stop"
    phone.wait_for_function("Number(document.getElementById('tasks').textContent) >= 3", timeout=120_000)
    unplugged = phone.evaluate("__plug(false), performance.now()")
    phone.wait_for_function("document.getElementById('state').textContent.includes('charge')", timeout=30_000)
    assert phone.inner_text("#charging-note") == "(not charging now)"
    deadline = time.monotonic() + 30
    while held_leases(stack, job, "phone"):  # the task computing and the one leased ahead go back
        assert time.monotonic() < deadline, "leases still held after unplugging"
        time.sleep(0.2)
    done = tasks_done(phone)
    time.sleep(5)
    # within one task: at most the lease already on its way when the battery said so, and nothing since
    assert leases_since(phone, unplugged) <= 1
    assert tasks_done(phone) == done and held_leases(stack, job, "phone") == 0
    assert stack.api.call("GET", f"/jobs/{job}")["counters"].get("released_stopped", 0) >= 1
    phone.evaluate("__plug(true)")
    phone.wait_for_function(f"Number(document.getElementById('tasks').textContent) > {done}", timeout=60_000)
    ARTIFACTS.mkdir(exist_ok=True)
    phone.screenshot(path=str(ARTIFACTS / "phone.png"), full_page=True)
    phone.reload()
    assert phone.is_checked("#charging-only")  # remembered


def test_a_data_cap_stops_leasing_at_the_cap_counting_what_the_edge_served(stack, phone):
    job = stack.char_lstm_job(batches=400, epochs=1, lease_seconds=300)
    phone.goto(f"{stack.web}?volunteer=capped&autostart")
    phone.wait_for_function("Number(document.getElementById('tasks').textContent) >= 3", timeout=120_000)
    cap = phone.evaluate("window.crowdtrain.meter.today") + 150_000
    set_value(phone, "#data-cap", cap / 1e6)
    # near the cap: a task that would cross it (its model version is new here) goes back; one whose
    # version is here already may still be done, if it fits
    phone.wait_for_function("document.getElementById('state').textContent.includes('data cap')", timeout=180_000)
    deadline = time.monotonic() + 30
    while held_leases(stack, job, "capped"):
        assert time.monotonic() < deadline, "leases still held near the cap"
        time.sleep(0.2)
    time.sleep(5)
    # tasks stop short of the cap; what goes on until the cap itself is a lease try every 30 s and status polls
    assert phone.evaluate("window.crowdtrain.meter.today") <= cap + 20_000
    # at the cap: nothing is leased any more
    cap = phone.evaluate("window.crowdtrain.meter.today")
    set_value(phone, "#data-cap", cap / 1e6)
    phone.wait_for_function("document.getElementById('state').textContent.includes('is reached')", timeout=30_000)
    at_cap = phone.evaluate("performance.now()")
    time.sleep(4)
    assert leases_since(phone, at_cap) == 0, "leased at the cap"
    assert held_leases(stack, job, "capped") == 0
    # what the page counted from its own requests is what the edge sent it, path by path
    served = Counter()
    for line in edge_log(stack):
        if line["path"].startswith("/jobs/") and line["status"] == "200":
            served[line["path"]] += line["sent"]
    counted = phone.evaluate(
        "Object.fromEntries([...window.crowdtrain.meter.edge].filter(([p]) => p.startsWith('/jobs/')))"
    )
    assert counted == dict(served)
    assert any(p.endswith("weights.bin") for p in counted) and any("/data/batch-" in p for p in counted)
    assert "MB of" in phone.inner_text("#data-today")
    today = phone.evaluate("window.crowdtrain.meter.today")
    reloaded = time.time()
    phone.reload()  # the cap and today's bytes are remembered: the page does not start again
    assert float(phone.input_value("#data-cap")) == pytest.approx(cap / 1e6)
    phone.wait_for_function("document.getElementById('job').textContent.includes('data cap')", timeout=10_000)
    assert phone.evaluate("window.crowdtrain.meter.today") >= today
    # at the cap the page does not poll the job's status either
    assert [
        line["path"] for line in edge_log(stack) if line["time"] > reloaded and line["path"].startswith("/jobs/")
    ] == []


# A phone on a cellular link (Android's Chrome says so in navigator.connection), with today's
# data counted up to 2.5 MB under the page's default cap for such a link: seeded once, before the page loads.
CELLULAR = """
(() => {
  Object.defineProperty(Navigator.prototype, 'connection', { configurable: true,
    get: () => ({ type: 'cellular', effectiveType: '4g', saveData: false, addEventListener() {} }) });
  if (!sessionStorage.getItem('seeded')) {
    sessionStorage.setItem('seeded', '1');
    const today = new Date().toISOString().slice(0, 10);
    localStorage.setItem('crowdtrain-data', JSON.stringify({ day: today, today: 97.5e6, total: 97.5e6 }));
  }
})();
"""


def test_on_a_cellular_link_the_page_shows_a_default_cap_and_stops_leasing_at_it(stack, phone):
    job = stack.char_lstm_job(batches=400, epochs=1, lease_seconds=300)
    phone.context.add_init_script(CELLULAR)
    phone.goto(f"{stack.web}?volunteer=cellular")
    phone.wait_for_function("window.crowdtrain && window.crowdtrain.ready === true", timeout=30_000)
    assert float(phone.input_value("#data-cap")) == 100 and "metered connection" in phone.inner_text("#cap-note")
    phone.click("#toggle")
    phone.wait_for_function("document.getElementById('state').textContent.includes('data cap')", timeout=180_000)
    assert tasks_done(phone) >= 1  # it trained until the cap came near
    deadline = time.monotonic() + 30
    while held_leases(stack, job, "cellular"):
        assert time.monotonic() < deadline, "leases still held at the cap"
        time.sleep(0.2)
    stopped, done = phone.evaluate("performance.now()"), tasks_done(phone)
    time.sleep(4)
    assert phone.evaluate("window.crowdtrain.meter.today") <= 100e6 + 20_000
    # near the cap the page asks for a task at most every 30 s, but one whose model is still here (its
    # last result not folded yet) fits and is trained, and a completion answered as the hold began may
    # still be counted: at most one task since, and the lease after it
    assert "of 100 MB" in phone.inner_text("#data-today") and tasks_done(phone) <= done + 1
    assert leases_since(phone, stopped) <= 1 + (tasks_done(phone) - done)
    phone.reload()  # the default cap is not the volunteer's choice: it is not stored, and still shown
    assert float(phone.input_value("#data-cap")) == 100
    assert "dailyCapMb" not in (phone.evaluate("localStorage.getItem('crowdtrain-preferences')") or "")


def test_a_page_fetches_each_version_once(stack, phone):
    """The version a lease names is fetched ahead on the page's thread and handed to the worker
    with its task: each version's weights are asked for once (from the network or the browser's
    cache alike: every request the page and its worker make is counted), the topology once."""
    job = stack.char_lstm_job(batches=400, epochs=1, lease_seconds=300)
    asked = Counter()
    phone.on("request", lambda request: asked.update([request.url.split("/versions/", 1)[-1]]))
    phone.goto(f"{stack.web}?volunteer=once&autostart")
    phone.wait_for_function("Number(document.getElementById('tasks').textContent) >= 6", timeout=120_000)
    phone.click("#toggle")
    phone.wait_for_function("document.getElementById('state').textContent.includes('stopped')", timeout=60_000)
    weights = {path: n for path, n in asked.items() if path.endswith("/weights.bin")}
    assert len(weights) >= 3 and set(weights.values()) == {1}, weights
    assert sum(n for path, n in asked.items() if path.endswith("/model.json")) == 1, asked
    served = Counter(line["path"] for line in edge_log(stack) if line["path"].startswith(f"/jobs/{job}/versions/"))
    assert set(served.values()) == {1}, served


def edge_log(stack) -> list[dict]:
    """The local edge server's access log: one line per response, with the body bytes it sent."""
    names = ("time", "method", "path", "status", "sent")
    lines = [
        dict(zip(names, line.split("\t")))
        for line in (stack.workdir / ".crowdtrain" / "edge-access.log").read_text().splitlines()
    ]
    return [{**line, "time": float(line["time"]), "sent": int(line["sent"])} for line in lines]


def test_a_cpu_share_of_half_computes_half_the_time(stack, phone):
    stack.char_lstm_job(batches=400, epochs=1, units=(64,), seq_len=40, batch_size=32, lease_seconds=300)
    phone.goto(f"{stack.web}?volunteer=half")
    set_value(phone, "#cpu-share", 50)
    assert phone.inner_text("#cpu-share-value") == "50 %"
    phone.tap("#toggle")
    phone.wait_for_function("window.crowdtrain.tasks.length >= 10", timeout=240_000)
    spans = [t["at"] for t in phone.evaluate("window.crowdtrain.tasks")][2:10]  # past the canary's first task
    computing = sum(s["computed"] - s["computing"] for s in spans[:-1])
    duty = computing / (spans[-1]["computing"] - spans[0]["computing"])
    assert abs(duty - 0.5) <= 0.05, f"computing {100 * duty:.1f} % of the time at a share of 50 %"
    assert computing / len(spans[:-1]) > 100  # a step long enough that the pause, not the overhead, sets the share
    phone.reload()
    assert phone.input_value("#cpu-share") == "50"


def test_every_control_is_labelled_and_state_changes_are_announced(stack, phone):
    stack.char_lstm_job(batches=4, epochs=1)  # a job to show (with none, the job list is a 404)
    phone.goto(stack.web)
    unlabelled = phone.evaluate("""[...document.querySelectorAll('input, select')]
        .filter((el) => el.labels.length === 0 && !el.getAttribute('aria-label')).map((el) => el.id)""")
    assert unlabelled == []
    assert phone.get_attribute("#state", "aria-live") == "polite"
    assert phone.get_attribute("#toggle", "class") == "start"
    overflow = phone.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page is {overflow}px wider than the phone"
    # "pause while I type or move the mouse here": typing on the page holds it, saying so, and it resumes after
    phone.check("#pause-busy")
    phone.tap("#toggle")
    phone.keyboard.type("hello")
    phone.wait_for_function(
        "document.getElementById('state').textContent.includes('while you use this page')", timeout=2_000
    )
    phone.wait_for_function("!document.getElementById('state').textContent.includes('while you use')", timeout=30_000)
    phone.reload()
    assert phone.is_checked("#pause-busy")
