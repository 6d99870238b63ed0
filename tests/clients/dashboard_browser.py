"""The dashboard in a real browser: headless Chromium (Debian's chromium and chromium-driver) driven by Selenium,
against a running `fjord start`.

Usage: dashboard_browser.py HTTP_ADDR BOOTSTRAP FJORD_BIN SCREENSHOT_DIR [USER:PASSWORD]

With USER:PASSWORD (the platform runs with dashboard.auth.basic.users) every page is opened as
http://USER:PASSWORD@HTTP_ADDR/, the browser's own basic-auth login; the page's changes carry the CSRF token from
its cookie.

Before this runs, the test has created topic `orders` (2 partitions) and produced 5 records with kcat to its
partition 0 (key k1..k5, JSON values, a header trace=abc). This script keeps a confluent-kafka consumer in group
`billing` alive (3 of the 5 records committed, so its lag is 2) while it checks each page, then creates topics
through the form and compares with the CLI, and deletes one (its name typed as confirmation); changes a topic
config (validated by the broker first); then closes the consumer, resets the group's offsets to a timestamp and
deletes the group (its id typed as confirmation); with a login, logs out through the header's button. Every wait is bounded. The platform runs without the registry and Connect, whose pages must say so. Prints `ok` at the end.
"""

import json
import os
import subprocess
import sys
import time

from confluent_kafka import Consumer, Producer
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select, WebDriverWait

http, bootstrap, fjord_bin, shots = sys.argv[1:5]
login = sys.argv[5] if len(sys.argv) > 5 else None
base = f"http://{login}@{http}/" if login else f"http://{http}/"
os.makedirs(shots, exist_ok=True)
WAIT = 20


def fjord(*args):
    """Runs the fjord CLI; returns (exit code, stdout, stderr)."""
    p = subprocess.run(
        [fjord_bin, *args, "--bootstrap-server", bootstrap],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return p.returncode, p.stdout, p.stderr


# The consumer group: join, read the 5 records of partition 0, commit after the third.
consumer = Consumer(
    {
        "bootstrap.servers": bootstrap,
        "group.id": "billing",
        "client.id": "billing-client",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 30000,
    }
)
consumer.subscribe(["orders"])
seen = []
deadline = time.time() + 60
while len(seen) < 5:
    assert time.time() < deadline, f"consumer saw only {len(seen)} records"
    m = consumer.poll(0.5)
    if m is None or m.error():
        continue
    seen.append(m)
    if len(seen) == 3:
        consumer.commit(message=m, asynchronous=False)


consumer_open = True


def keep_alive():
    # Polling keeps the member in the group (records after the commit are read but never committed).
    if consumer_open:
        consumer.poll(0)


opts = webdriver.ChromeOptions()
opts.binary_location = "/usr/bin/chromium"
for a in [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1000",
]:
    opts.add_argument(a)
driver = webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=opts)
driver.set_page_load_timeout(30)
wait = WebDriverWait(driver, WAIT)


def goto(hash_):
    """Opens a view in a freshly loaded page (a fragment-only navigation would keep the old form state) and waits
    until the page says it rendered that view."""
    driver.get("about:blank")
    driver.get(base + hash_)
    want = hash_.lstrip("#") or "/"
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-loaded") == want)
    errors = driver.find_elements(By.CSS_SELECTOR, "#view > .error")
    assert not errors, f"{hash_}: {errors[0].text}"
    keep_alive()


def text(css):
    return driver.find_element(By.CSS_SELECTOR, css).text


def shot(name):
    driver.save_screenshot(os.path.join(shots, f"{name}.png"))


try:
    # Overview: the topic count is the broker's, and the live chart is drawn.
    t0 = time.time()
    goto("")
    load_s = time.time() - t0
    assert int(text("#ov-topics")) >= 1, text("#ov-topics")
    assert text("#ov-brokers") == "1"
    assert driver.find_element(By.ID, "rate-chart").size["height"] > 100
    # The page handed out the CSRF token the script sends with every change.
    csrf = driver.get_cookie("fjord_csrf")
    assert csrf and len(csrf["value"]) >= 32, csrf
    shot("overview")

    # Live: while records flow, the chart gains points over server-sent events (a sample every 5 s) without the
    # page being rendered again: the same canvas element, and a mark left on the page is still there.
    code, _, err = fjord("topics", "create", "traffic")
    assert code == 0, err
    canvas = driver.find_element(By.ID, "rate-chart")
    driver.execute_script("window.__mark = document.getElementById('rate-chart');")
    wait.until(lambda d: canvas.get_attribute("data-live") == "on")
    before = int(canvas.get_attribute("data-points"))
    traffic = Producer({"bootstrap.servers": bootstrap})
    deadline = time.time() + 30
    while int(canvas.get_attribute("data-points")) < min(before + 2, 180):
        assert time.time() < deadline, f"the chart stayed at {canvas.get_attribute('data-points')} points (from {before})"
        for _ in range(50):
            traffic.produce("traffic", value=b"x" * 100)
        traffic.poll(0)
        keep_alive()
        time.sleep(0.5)
    assert traffic.flush(30) == 0, "undelivered traffic"
    assert driver.execute_script("return document.getElementById('rate-chart') === window.__mark"), "the page was rendered again"
    assert canvas.get_attribute("data-live") == "on", canvas.get_attribute("data-live")
    shot("overview-live")

    # This platform runs without the registry and Connect: their pages say so and how to run them.
    for page, box, flag in [
        ("#/schemas", "registry-not-running", "--registry-listener none"),
        ("#/connect", "connect-not-running", "--connect-listener none"),
    ]:
        goto(page)
        assert flag in text(f"#{box}"), text(f"#{box}")
        shot(box)

    # Topics list shows `orders` with its 2 partitions.
    goto("#/topics")
    row = wait.until(EC.presence_of_element_located((By.XPATH, "//table[@id='topics-table']//tr[td/a[text()='orders']]")))
    assert row.find_elements(By.TAG_NAME, "td")[1].text == "2", row.text
    shot("topics")

    # The topic page: partitions with offsets, and the message browser showing kcat's records.
    goto("#/topics/orders")
    p0 = driver.find_element(By.XPATH, "//table[@id='partitions-table']/tbody/tr[1]").find_elements(By.TAG_NAME, "td")
    assert p0[5].text == "5", f"end offset of partition 0: {p0[5].text}"
    Select(driver.find_element(By.ID, "msg-partition")).select_by_value("0")
    driver.find_element(By.ID, "msg-load").click()
    wait.until(EC.presence_of_element_located((By.ID, "messages-table")))
    keys = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#messages-table td.msg-key")]
    assert keys == ["k1", "k2", "k3", "k4", "k5"], keys
    first_value = text("#messages-table tbody tr:first-child td.msg-value")
    assert first_value == '{"item":"book","qty":1}', first_value
    assert "trace: abc" in text("#messages-table tbody tr:first-child td.msg-headers")
    Select(driver.find_element(By.ID, "msg-format")).select_by_value("json")
    pretty = text("#messages-table tbody tr:first-child td.msg-value")
    assert pretty == '{\n  "item": "book",\n  "qty": 1\n}', pretty
    Select(driver.find_element(By.ID, "msg-format")).select_by_value("hex")
    assert text("#messages-table tbody tr:first-child td.msg-key") == "6b 31"
    # "auto" (reloaded with the server's registry decoding, here without a registry): JSON pretty, text as it is.
    Select(driver.find_element(By.ID, "msg-format")).select_by_value("auto")
    wait.until(lambda d: text("#messages-table tbody tr:first-child td.msg-value") == pretty)
    assert text("#messages-table tbody tr:first-child td.msg-key") == "k1"
    shot("topic")

    # The search scans on the server and streams what it finds, case-insensitive when asked.
    driver.find_element(By.ID, "search-text").send_keys('"QTY":4')
    driver.find_element(By.ID, "search-icase").click()
    driver.find_element(By.ID, "search-go").click()
    wait.until(lambda d: d.find_element(By.ID, "search-status").text.startswith("done"))
    keys = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#search-table td.msg-key")]
    assert keys == ["k4"], keys
    status = text("#search-status")
    assert "1 found in 5 records, searched the whole range" in status, status
    shot("search")

    # A record whose timestamp is beyond what a JavaScript Date holds (|ms| > 8.64e15) shows as the number.
    code, _, err = fjord(
        "topics", "create", "far-future", "--config", "message.timestamp.after.max.ms=9223372036854775807"
    )
    assert code == 0, err
    far = Producer({"bootstrap.servers": bootstrap})
    far.produce("far-future", value=b"far", partition=0, timestamp=9_000_000_000_000_000)
    assert far.flush(30) == 0, "the far-future record was not delivered"
    goto("#/topics/far-future")
    driver.find_element(By.ID, "msg-load").click()
    wait.until(lambda d: "partition 0:" in d.find_element(By.ID, "msg-result").text)
    cells = driver.find_elements(By.CSS_SELECTOR, "#messages-table tbody tr:first-child td")
    assert cells, driver.find_element(By.ID, "msg-result").text
    assert cells[1].text == "9000000000000000", cells[1].text

    # The message browser's read_committed box: a record of an aborted transaction is shown (marked) as a
    # read_uncommitted consumer sees it, and hidden with the box ticked; the transaction markers never.
    code, _, err = fjord("topics", "create", "txns")
    assert code == 0, err
    txn = Producer({"bootstrap.servers": bootstrap, "transactional.id": "browser-txn"})
    txn.init_transactions(30)
    txn.begin_transaction()
    txn.produce("txns", value=b"kept", partition=0)
    txn.commit_transaction(30)
    txn.begin_transaction()
    txn.produce("txns", value=b"thrown away", partition=0)
    assert txn.flush(30) == 0, "undelivered transactional record"
    txn.abort_transaction(30)
    goto("#/topics/txns")
    driver.find_element(By.ID, "msg-load").click()
    wait.until(EC.presence_of_element_located((By.ID, "messages-table")))
    values = lambda: [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#messages-table td.msg-value")]
    assert values() == ["kept", "thrown away"], values()
    marked = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#messages-table tr.aborted td.msg-value")]
    assert marked == ["thrown away"], marked
    driver.find_element(By.ID, "msg-committed").click()
    wait.until(lambda d: "read_committed" in d.find_element(By.ID, "msg-result").text)
    assert values() == ["kept"], values()
    shot("read-committed")

    # The search's read_committed box likewise: the aborted record is found without it and not with it.
    def search(term):
        box = driver.find_element(By.ID, "search-text")
        box.clear()
        box.send_keys(term)
        driver.find_element(By.ID, "search-go").click()
        wait.until(lambda d: d.find_element(By.ID, "search-status").text.startswith("done"))
        hits = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#search-table td.msg-value")]
        return hits, text("#search-status")

    hits, status = search("thrown")
    assert hits == ["thrown away"], (hits, status)
    assert [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#search-table tr.aborted td.msg-value")] == hits
    driver.find_element(By.ID, "search-committed").click()
    hits, status = search("thrown")
    assert hits == [], (hits, status)
    assert status.startswith("done: 0 found"), status
    hits, status = search("kept")
    assert hits == ["kept"], (hits, status)

    # The group page: the live member, its partitions, and lag equal to `fjord groups describe`.
    goto("#/groups/billing")
    assert text("#group-state") == "Stable", text("#group-state")
    assert text("#members-table td.member-client") == "billing-client"
    counts = [int(e.text) for e in driver.find_elements(By.CSS_SELECTOR, "#members-table td.member-count")]
    assert counts == [2], counts
    code, out, err = fjord("groups", "describe", "billing", "--output", "json")
    assert code == 0, err
    cli = json.loads(out)
    assert text("#group-lag") == str(cli["lag"]) == "2", (text("#group-lag"), cli["lag"])
    cli_p0 = [p for p in cli["partitions"] if p["topic"] == "orders" and p["partition"] == 0][0]
    row = driver.find_element(By.XPATH, "//table[@id='offsets-table']/tbody/tr[td[1]='orders' and td[2]='0']")
    assert row.find_element(By.CSS_SELECTOR, "td.lag").text == str(cli_p0["lag"]), row.text
    # The lag over time: the server samples it every 5 s; once two samples of the constant lag 2 are in, the
    # chart has them and the estimate says the group is not catching up (it commits nothing more). The page
    # follows the samples live, without being loaded again.
    deadline = time.time() + 30
    while driver.find_element(By.ID, "catch-up").get_attribute("data-state") == "unknown":
        assert time.time() < deadline, text("#catch-up")
        time.sleep(1)
        keep_alive()
    assert driver.find_element(By.ID, "catch-up").get_attribute("data-state") == "stalled", text("#catch-up")
    assert "Not catching up" in text("#catch-up"), text("#catch-up")
    chart = driver.find_element(By.ID, "lag-chart")
    assert int(chart.get_attribute("data-points")) >= 2, chart.get_attribute("data-points")
    assert chart.size["height"] > 100
    shot("group-lag")
    # Resetting the offsets of a group with a live member is refused, dry run included.
    driver.find_element(By.ID, "reset-dry-run").click()
    err = wait.until(EC.presence_of_element_located((By.ID, "reset-error")))
    assert "has active members" in err.text, err.text
    # So is deleting it, its id typed as confirmation (Kafka's NON_EMPTY_GROUP).
    driver.find_element(By.ID, "group-delete-name").send_keys("billing")
    driver.find_element(By.ID, "group-delete-submit").click()
    err = wait.until(EC.presence_of_element_located((By.ID, "group-delete-error")))
    assert "has active members" in err.text, err.text
    shot("group")
    goto("#/groups")
    assert "billing" in text("#groups-table")

    # Create a topic through the form: a confirmation step, then the CLI sees it.
    def create(name, partitions):
        goto("#/topics")
        driver.find_element(By.ID, "create-name").send_keys(name)
        if partitions is not None:
            driver.find_element(By.ID, "create-partitions").send_keys(str(partitions))
        driver.find_element(By.ID, "create-submit").click()
        wait.until(EC.element_to_be_clickable((By.ID, "create-confirm"))).click()
        return wait.until(
            lambda d: (d.find_elements(By.ID, "form-ok") or d.find_elements(By.ID, "form-error") or [None])[0]
        )

    res = create("from-browser", 3)
    assert res.get_attribute("id") == "form-ok", res.text
    code, out, err = fjord("topics", "describe", "from-browser", "--output", "json")
    assert code == 0, err
    described = json.loads(out)
    doc = described[0] if isinstance(described, list) else described
    assert len(doc["partitions"]) == 3, out
    shot("created")

    # Deleting it needs its exact name typed: a near miss is refused and the topic stays.
    def delete(typed):
        goto("#/topics/from-browser")
        driver.find_element(By.ID, "delete-confirm-name").send_keys(typed)
        driver.find_element(By.ID, "delete-submit").click()
        return wait.until(
            lambda d: (d.find_elements(By.CSS_SELECTOR, "#admin-result .ok") or d.find_elements(By.ID, "form-error") or [None])[0]
        )

    res = delete("from-browse")
    assert "type its exact name" in res.text, res.text
    assert fjord("topics", "describe", "from-browser")[0] == 0
    res = delete("from-browser")
    assert res.text.startswith("Deleted topic from-browser."), res.text
    code, _, err = fjord("topics", "describe", "from-browser")
    assert code != 0 and "does not exist" in err, err

    # A bad name and a bad partition count: the page shows the CLI's own message.
    for name, parts, expect in [
        ("bad name!", None, "illegal, it contains a character other than ASCII alphanumerics"),
        ("zero-parts", 0, "0 is not in 1..=2147483647"),
    ]:
        res = create(name, parts)
        assert res.get_attribute("id") == "form-error", res.text
        args = ["topics", "create", name] + (["--partitions", str(parts)] if parts is not None else [])
        code, _, err = fjord(*args)
        assert code != 0
        cli_msg = err.strip().removeprefix("error: ")
        assert expect in res.text and expect in cli_msg, f"page: {res.text!r} CLI: {cli_msg!r}"
        if parts is None:
            # The broker's refusal, worded by the CLI: the same text, word for word.
            assert res.text == cli_msg, f"page: {res.text!r} CLI: {cli_msg!r}"
    shot("bad-input")

    # A topic config: the broker validates a change first (a bad value shows its message and changes nothing),
    # then it is applied after confirmation and the configs table shows it, as the CLI does.
    def validate_config(key, value):
        goto("#/topics/orders")
        driver.find_element(By.ID, "config-key").send_keys(key)
        driver.find_element(By.ID, "config-value").send_keys(value)
        driver.find_element(By.ID, "config-validate").click()
        return wait.until(
            lambda d: (d.find_elements(By.ID, "config-check") or d.find_elements(By.ID, "config-error") or [None])[0]
        )

    res = validate_config("retention.ms", "soon")
    assert res.get_attribute("id") == "config-error" and "soon" in res.text, res.text
    res = validate_config("retention.ms", "86400000")
    assert res.get_attribute("id") == "config-check", res.text
    described = json.loads(fjord("topics", "describe", "orders", "--output", "json")[1])
    doc = described[0] if isinstance(described, list) else described
    assert "retention.ms" not in doc["configs"], doc["configs"]
    wait.until(EC.element_to_be_clickable((By.ID, "config-confirm"))).click()
    wait.until(EC.presence_of_element_located((By.ID, "config-ok")))
    row = "//table[@id='configs-table']//tr[td[1]='retention.ms']/td[2]"
    wait.until(lambda d: d.find_element(By.XPATH, row).text == "86400000")
    described = json.loads(fjord("topics", "describe", "orders", "--output", "json")[1])
    doc = described[0] if isinstance(described, list) else described
    assert doc["configs"]["retention.ms"]["value"] == "86400000", doc["configs"]
    shot("topic-config")

    # The consumer leaves: the group is empty, so its offsets reset to a timestamp (a date typed in ISO 8601;
    # before every record: the first offsets) after a dry run, and then the group is deleted.
    consumer.close()
    consumer_open = False
    goto("#/groups/billing")
    assert text("#group-state") == "Empty", text("#group-state")
    Select(driver.find_element(By.ID, "reset-to")).select_by_value("timestamp")
    driver.find_element(By.ID, "reset-timestamp").send_keys("1970-01-01T00:00:00Z")
    driver.find_element(By.ID, "reset-dry-run").click()
    wait.until(EC.presence_of_element_located((By.ID, "reset-execute")))
    plan = [[c.text for c in r.find_elements(By.TAG_NAME, "td")] for r in driver.find_elements(By.CSS_SELECTOR, "#reset-table tbody tr")]
    assert plan == [["orders", "0", "3", "0"], ["orders", "1", "–", "0"]], plan
    driver.find_element(By.ID, "reset-execute").click()
    wait.until(EC.presence_of_element_located((By.ID, "reset-ok")))
    code, out, err = fjord("groups", "describe", "billing", "--output", "json")
    assert code == 0, err
    assert json.loads(out)["lag"] == 5, out
    # The page's own table and total lag show the new offsets without a reload.
    committed = [[c.text for c in r.find_elements(By.TAG_NAME, "td")][:3] for r in driver.find_elements(By.CSS_SELECTOR, "#offsets-table tbody tr")]
    assert committed == [["orders", "0", "0"], ["orders", "1", "0"]], committed
    assert text("#group-lag") == "5", text("#group-lag")
    shot("group-reset")

    def delete_group(typed):
        goto("#/groups/billing")
        driver.find_element(By.ID, "group-delete-name").send_keys(typed)
        driver.find_element(By.ID, "group-delete-submit").click()
        return wait.until(
            lambda d: (d.find_elements(By.ID, "group-delete-ok") or d.find_elements(By.ID, "group-delete-error") or [None])[0]
        )

    res = delete_group("billin")
    assert "type its exact id" in res.text, res.text
    res = delete_group("billing")
    assert res.get_attribute("id") == "group-delete-ok" and res.text.startswith("Deleted group billing."), res.text
    code, out, err = fjord("groups", "list", "--output", "json")
    assert code == 0, err
    assert "billing" not in [g["group"] for g in json.loads(out)], out
    if login:
        # The header names the logged-in user; "Log out" ends the session on the server and says so.
        goto("")
        wait.until(EC.presence_of_element_located((By.ID, "logout")))
        assert text("#user") == login.split(":")[0], text("#user")
        assert driver.get_cookie("fjord_session"), driver.get_cookies()
        driver.find_element(By.ID, "logout").click()
        done = wait.until(EC.presence_of_element_located((By.ID, "logged-out")))
        assert done.text.startswith("Logged out: the session has ended"), done.text
        assert not driver.get_cookie("fjord_session"), "the session cookie is cleared"
        shot("logged-out")
    print(f"ok overview loaded in {load_s:.2f}s")
finally:
    driver.quit()
    if consumer_open:
        consumer.close()
