#!/usr/bin/env python3
"""The person's side of Assent in a real browser (headless Chromium through
WebDriver), against a running `assent serve` that sends its emails to an SMTP
test server writing a Maildir:

  1. a customer's web page embeds a sign-up form; the person fills it in;
  2. the confirmation email arrives; its link is followed and confirmed;
  3. the preference centre (link from the API, as a newsletter would carry it)
     changes one topic off and another on;
  4. the portal: ask for a sign-in link by email, sign in, change a topic;
  5. one-click unsubscribe from a link's page;
  6. the timeline, read back from the API, shows every change with the right
     source, form and notice version.

A screenshot of every main page is written to --screenshots. Exits non-zero,
naming the step, on the first failure. Run by the Swift test BrowserTests.
"""
import argparse
import email
import email.policy
import functools
import http.server
import json
import mailbox
import os
import re
import shutil
import socket
import sys
import threading
import time
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

parser = argparse.ArgumentParser()
parser.add_argument("--base", required=True, help="Assent's base URL, e.g. http://127.0.0.1:8080")
parser.add_argument("--token", required=True, help="an admin API key")
parser.add_argument("--maildir", required=True, help="the SMTP test server's Maildir")
parser.add_argument("--screenshots", required=True, help="folder for screenshots")
parser.add_argument("--admin-email", help="the console administrator printed by assent serve")
parser.add_argument("--admin-password", help="its one-time password")
args = parser.parse_args()
os.makedirs(args.screenshots, exist_ok=True)
shots = 0


def step(text):
    print(f"== {text}", flush=True)


def check(condition, message):
    if not condition:
        raise AssertionError(message)


def api(method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(args.base + path, data=data, method=method,
                                     headers={"Authorization": f"Bearer {args.token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request) as response:
            raw = response.read()
            return response.status, (json.loads(raw) if response.headers.get_content_type().endswith("json") else raw.decode())
    except urllib.error.HTTPError as error:
        raise AssertionError(f"{method} {path}: {error.code} {error.read().decode()}")


seen_mail = set()


def wait_for_mail(pattern, timeout=30):
    """The first new message whose plain text matches `pattern`; returns (text, match)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if os.path.isdir(os.path.join(args.maildir, "new")):
            box = mailbox.Maildir(args.maildir, factory=None, create=False)
            for key in box.keys():
                if key in seen_mail:
                    continue
                message = email.message_from_bytes(box.get_bytes(key), policy=email.policy.default)
                part = message.get_body(preferencelist=("plain",))
                text = part.get_content() if part else ""
                match = re.search(pattern, text)
                if match:
                    seen_mail.add(key)
                    return text, match
        time.sleep(0.2)
    raise AssertionError(f"no email matching {pattern!r} arrived within {timeout} s")


def shot(driver, name):
    global shots
    shots += 1
    path = os.path.join(args.screenshots, f"{shots:02d}-{name}.png")
    driver.save_screenshot(path)
    print(f"   screenshot {path}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def browser():
    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1100,1400", "--lang=en-GB"):
        options.add_argument(flag)
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    driver_path = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    return webdriver.Chrome(service=Service(driver_path), options=options)


def submit(driver, button):
    """Clicks a button or link and waits until the next page has loaded. The
    old page is marked on its window object; a new page has a fresh one."""
    driver.execute_script("window.assentOldPage = true")
    button.click()

    def next_page_loaded(d):
        try:
            return d.execute_script("return window.assentOldPage !== true && document.readyState === 'complete'")
        except WebDriverException:
            return False  # in the middle of navigating
    WebDriverWait(driver, 15).until(next_page_loaded)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *arguments):
        pass


def body_text(driver):
    return driver.find_element(By.TAG_NAME, "body").text


def main():
    step("topics and a double opt-in form, embeddable on the customer's site")
    for key, title, category, doi in (("events", "Events", "Events", True), ("news", "Newsletter", "News", True),
                                      ("training", "HR training", "Training", False), ("webinars", "Webinars", "Events", False)):
        api("POST", "/api/v1/topics", {"key": key, "title": title, "category": category, "requiresDoubleOptIn": doi,
                                        "notice": f"We will email you about {title.lower()}. Unsubscribe at any time."})
    site_port = free_port()
    site_origin = f"http://127.0.0.1:{site_port}"
    api("POST", "/api/v1/forms", {"id": "newsletter", "title": "Stay in touch", "topics": ["events", "news"], "askName": True,
                                  "introduction": "Choose what you would like to hear about.", "allowedOrigins": [site_origin]})
    _, snippet = api("GET", "/api/v1/forms/newsletter/embed")
    site = os.path.join(args.screenshots, "..", "customer-site")
    os.makedirs(site, exist_ok=True)
    with open(os.path.join(site, "index.html"), "w") as page:
        page.write(f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Example Ltd</title></head>"
                   f"<body><h1>Example Ltd</h1><p>Our news, events and training.</p>{snippet}</body></html>")
    handler = functools.partial(QuietHandler, directory=site)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", site_port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    driver = browser()
    try:
        step("sign up through the form embedded in the customer's page")
        driver.get(site_origin + "/index.html")
        driver.find_element(By.ID, "assent-email").send_keys("jo@example.com")
        driver.find_element(By.ID, "assent-name").send_keys("Jo Bloggs")
        driver.find_element(By.ID, "assent-topic-events").click()
        driver.find_element(By.ID, "assent-topic-news").click()
        check(driver.find_element(By.ID, "assent-notice-events").text.startswith("We will email you about events."), "the notice is shown")
        shot(driver, "embedded-form")
        submit(driver, driver.find_element(By.CSS_SELECTOR, "form.assent-form button[type=submit]"))
        check("check your inbox" in body_text(driver), f"thank-you page: {body_text(driver)!r}")
        check(driver.current_url.startswith(args.base + "/f/newsletter"), f"posted to Assent: {driver.current_url}")
        shot(driver, "form-thanks")

        step("confirm by the emailed link")
        text, match = wait_for_mail(r"(https?://\S+/confirm/\S+)")
        check("Events" in text and "Newsletter" in text, "the email lists both topics")
        driver.get(match.group(1))
        shot(driver, "confirm")
        submit(driver, driver.find_element(By.CSS_SELECTOR, "form button[type=submit]"))
        check("You are now subscribed to" in body_text(driver), f"confirmed: {body_text(driver)!r}")
        shot(driver, "confirmed")

        _, found = api("GET", "/api/v1/contacts?email=jo%40example.com")
        contact = found["items"][0]["id"]
        _, links = api("GET", f"/api/v1/contacts/{contact}/links?topic=training")

        step("the preference centre: newsletter off, training on")
        driver.get(links["preferenceCentreUrl"])
        check(driver.find_element(By.ID, "topic-news").is_selected(), "the newsletter shows as subscribed")
        check(not driver.find_element(By.ID, "topic-training").is_selected(), "training shows as not subscribed")
        shot(driver, "preference-centre")
        driver.find_element(By.ID, "topic-news").click()
        driver.find_element(By.ID, "topic-training").click()
        submit(driver, driver.find_element(By.CSS_SELECTOR, "button[value=save]"))
        check("Your preferences are saved." in body_text(driver), f"saved: {body_text(driver)!r}")
        check(not driver.find_element(By.ID, "topic-news").is_selected(), "the newsletter is now off")
        shot(driver, "preference-centre-saved")

        step("the portal: an emailed sign-in link, then newsletter back on")
        driver.get(args.base + "/portal")
        shot(driver, "portal")
        driver.find_element(By.ID, "portal-email").send_keys("jo@example.com")
        submit(driver, driver.find_element(By.CSS_SELECTOR, "form button[type=submit]"))
        check("Check your inbox" in body_text(driver), "link requested")
        _, match = wait_for_mail(r"(https?://\S+/portal/signin/\S+)")
        driver.get(match.group(1))
        shot(driver, "portal-sign-in")
        submit(driver, driver.find_element(By.CSS_SELECTOR, "form button[type=submit]"))
        check(driver.current_url.endswith("/portal/home"), f"signed in: {driver.current_url}")
        history = driver.find_element(By.CSS_SELECTOR, "ol.history").text
        check("You unsubscribed from Newsletter, in your preference centre." in history, f"history in plain words: {history!r}")
        check("You confirmed your subscription to Events, with the link in our email." in history, "confirmation in the history")
        shot(driver, "portal-home")
        driver.find_element(By.ID, "topic-news").click()
        submit(driver, driver.find_element(By.CSS_SELECTOR, "button[value=save]"))
        check("Your preferences are saved." in body_text(driver), f"portal save: {driver.current_url} {body_text(driver)!r}")
        shot(driver, "portal-saved")

        step("the hosted form page")
        driver.get(args.base + "/f/newsletter")
        check(driver.find_element(By.CSS_SELECTOR, "label[for=assent-email]").text == "Email address", "labelled email field")
        shot(driver, "hosted-form")

        step("one-click unsubscribe from training")
        driver.get(links["unsubscribeUrl"])
        check("HR training" in body_text(driver), "the page names the topic")
        shot(driver, "unsubscribe")
        submit(driver, driver.find_element(By.CSS_SELECTOR, "form button[type=submit]"))
        check("You are unsubscribed" in body_text(driver), f"unsubscribed: {body_text(driver)!r}")
        shot(driver, "unsubscribed")
    finally:
        driver.quit()
        server.shutdown()

    step("the timeline records every path with its source, form and notice version")
    _, timeline = api("GET", f"/api/v1/contacts/{contact}/timeline")
    got = [(e["topic"], e["action"], e["source"]) for e in reversed(timeline["items"])]
    expected = [("events", "requested", "form"), ("news", "requested", "form"),
                ("events", "confirmed", "email_link"), ("news", "confirmed", "email_link"),
                ("news", "withdrawn", "preference_centre"), ("training", "granted", "preference_centre"),
                ("news", "granted", "portal"), ("training", "withdrawn", "one_click_unsubscribe")]
    check(got == expected, f"timeline {got}")
    for event in timeline["items"]:
        check(event["noticeVersion"] == 1, f"notice version of {event['topic']} {event['action']}")
        check(event["actor"]["kind"] == "subject", "the person acted")
        if event["source"] == "form":
            check(event["evidence"].get("formId") == "newsletter" and event["evidence"].get("formVersion") == 1, "form evidence")
            check(event["evidence"].get("userAgent", "").find("Chrome") >= 0, "the browser's user agent is evidence")
    for topic, allowed in (("events", True), ("news", True), ("training", False)):
        _, result = api("GET", f"/api/v1/check?email=jo%40example.com&topic={topic}")
        check(result["allowed"] == allowed, f"check {topic}: {result}")
    if args.admin_email:
        console()
    print(f"OK: {shots} screenshots in {args.screenshots}", flush=True)


def sign_in(driver, email, password):
    driver.get(args.base + "/console/signin")
    driver.find_element(By.ID, "email").send_keys(email)
    driver.find_element(By.ID, "password").send_keys(password)
    submit(driver, driver.find_element(By.CSS_SELECTOR, "main form button[type=submit]"))


def first_sign_in(driver, email, one_time, chosen, screenshot=None):
    """Signs in with a one-time password and chooses one's own, as the console asks."""
    sign_in(driver, email, one_time)
    check(driver.current_url.endswith("/console/password"), f"{email} must change the one-time password: {driver.current_url}")
    if screenshot:
        shot(driver, screenshot)
    driver.find_element(By.ID, "current").send_keys(one_time)
    driver.find_element(By.ID, "new").send_keys(chosen)
    submit(driver, driver.find_element(By.CSS_SELECTOR, "main form button[type=submit]"))
    check(driver.current_url.endswith("/console"), f"{email} signed in: {driver.current_url}")


def find_contact(driver, query, email):
    driver.find_element(By.ID, "q").send_keys(query)
    submit(driver, driver.find_element(By.CSS_SELECTOR, "form[role=search] button"))
    submit(driver, driver.find_element(By.LINK_TEXT, email))


def sign_out(driver):
    submit(driver, driver.find_element(By.CSS_SELECTOR, "form.signout button"))


def console():
    """The staff side: the first administrator signs in with the printed
    one-time password, chooses a password and adds an agent and an auditor;
    the agent records a verbal opt-in for two topics with a note; the auditor
    sees it with its evidence and has no way to change anything."""
    driver = browser()
    try:
        step("console: the first administrator signs in and chooses a password")
        first_sign_in(driver, args.admin_email, args.admin_password, "a long admin password", screenshot="console-password")

        passwords = {}
        for role, email in (("agent", "agent@example.com"), ("auditor", "auditor@example.com")):
            driver.get(args.base + "/console/users")
            driver.find_element(By.ID, "email").send_keys(email)
            driver.find_element(By.ID, "name").send_keys(role.capitalize() + " Person")
            driver.find_element(By.CSS_SELECTOR, f"#role option[value={role}]").click()
            submit(driver, driver.find_element(By.XPATH, "//button[text()='Add user']"))
            passwords[email] = driver.find_element(By.CSS_SELECTOR, "code.secret").text
        driver.get(args.base + "/console/users")
        shot(driver, "console-users")
        driver.get(args.base + "/console/topics")
        shot(driver, "console-topics")
        sign_out(driver)

        step("console: an agent finds Jo and records a verbal opt-in for two topics")
        first_sign_in(driver, "agent@example.com", passwords["agent@example.com"], "a long agent password")
        driver.find_element(By.ID, "q").send_keys("jo@example")
        submit(driver, driver.find_element(By.CSS_SELECTOR, "form[role=search] button"))
        shot(driver, "console-search")
        submit(driver, driver.find_element(By.LINK_TEXT, "jo@example.com"))
        submit(driver, driver.find_element(By.LINK_TEXT, "Record an instruction"))
        driver.find_element(By.CSS_SELECTOR, "#change-training option[value=yes]").click()
        driver.find_element(By.CSS_SELECTOR, "#change-webinars option[value=yes]").click()
        driver.find_element(By.ID, "note").send_keys("Jo phoned: wants HR training emails again, and webinar invitations.")
        shot(driver, "console-record")
        submit(driver, driver.find_element(By.XPATH, "//button[text()='Record']"))
        check("Recorded 2 change(s)." in body_text(driver), f"recorded: {body_text(driver)[:300]!r}")
        badges = [b.text for b in driver.find_elements(By.CSS_SELECTOR, "table.timeline .badge")]
        check(badges[:2] == ["Verbal/phone", "Verbal/phone"], f"the newest two events carry the Verbal badge: {badges}")
        check("Jo phoned" not in body_text(driver), "an agent does not see evidence")
        shot(driver, "console-contact")
        sign_out(driver)

        step("console: an auditor sees the instruction with its evidence and cannot change anything")
        first_sign_in(driver, "auditor@example.com", passwords["auditor@example.com"], "a long auditor password")
        find_contact(driver, "jo@example.com", "jo@example.com")
        contact_url = driver.current_url
        check(not driver.find_elements(By.LINK_TEXT, "Record an instruction"), "no way to record for an auditor")
        submit(driver, driver.find_element(By.LINK_TEXT, "Show evidence"))
        check("Jo phoned: wants HR training emails again" in body_text(driver), "the auditor reads the note")
        shot(driver, "console-evidence")
        driver.get(contact_url + "/record")
        check("Not allowed" in body_text(driver), f"the record page refuses an auditor: {body_text(driver)[:200]!r}")
        driver.get(args.base + "/console/audit")
        log = body_text(driver)
        check("record_instruction" in log and "view_evidence" in log, "the audit log shows the instruction and the evidence view")
        shot(driver, "console-audit")
    finally:
        driver.quit()

    step("console: the ledger holds the agent's instruction as source staff, channel phone, with the note")
    _, found = api("GET", "/api/v1/contacts?email=jo%40example.com")
    _, timeline = api("GET", f"/api/v1/contacts/{found['items'][0]['id']}/timeline")
    newest = timeline["items"][:2]
    check(sorted((e["topic"], e["action"]) for e in newest) == [("training", "granted"), ("webinars", "granted")], f"staff events {newest}")
    check(all(e["source"] == "staff" and e["channel"] == "phone" and e["actor"]["kind"] == "staff" for e in newest), "staff, phone")
    check(all(e["evidence"]["note"].startswith("Jo phoned") for e in newest), "the note is the evidence")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as failure:
        print(f"FAILED: {failure}", file=sys.stderr, flush=True)
        sys.exit(1)
