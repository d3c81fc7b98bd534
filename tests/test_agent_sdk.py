"""LivePerson's own agent SDK (`node-agent-sdk`, pinned in recorder/demo_bot/package-lock.json and
installed once, with `npm ci`, into the per-user cache by `recorder.demo_bot.install`, as `mwtap
demo` does) running recorder/demo_bot/bot.js, the demo's bot, written against its public API, as
users start theirs (`node bot.js` with its settings in the environment), through
`mwtap record` in reverse mode against `mwtap serve --tls`, with a scripted consumer
(`mwtap consume`) through the same recorder. The domain lookup names the recorder (`--advertise`)
so that the bot's WebSocket goes through it; Node trusts the recorder's CA (NODE_EXTRA_CA_CERTS)."""

from __future__ import annotations

import json
import re
import shutil
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from analysis.capture import CaptureFile
from conftest import BIN, free_port, wait_port
from recorder import demo_bot

MWTAP = str(BIN / "mwtap")
NODE = shutil.which("node")
ACCOUNT = "mwtap"
TIMEOUT = 60.0

pytestmark = pytest.mark.skipif(NODE is None, reason="node is not installed (the bot runs on Node)")


@pytest.fixture(scope="module", autouse=True)
def sdk_installed():
    """The pinned SDK, installed from the lock file unless it is there already."""
    demo_bot.install()


def wait_for(predicate, what: str, timeout: float = TIMEOUT, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: the process exited with {proc.returncode}: {proc.log_path.read_text()}")
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout} s")


def events(proc) -> list[dict]:
    """The JSON lines bot.js printed so far."""
    lines = proc.log_path.read_text().splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


class Stack:
    """`mwtap serve --tls` behind `mwtap record` (reverse mode), the serve naming the recorder."""

    def __init__(self, procs, tmp_path: Path, *serve_args: str):
        self.procs, self.tmp = procs, tmp_path
        self.serve_port, self.port = free_port(), free_port()
        self.cert, self.capture = tmp_path / "serve.pem", tmp_path / "capture.jsonl"
        self.serve = procs.start([MWTAP, "serve", "--listen", f"127.0.0.1:{self.serve_port}", "--tls", str(self.cert),
                                  "--advertise", f"127.0.0.1:{self.port}", *serve_args], "serve")
        wait_port(self.serve_port, proc=self.serve)
        # mitmproxy keeps its CA in $HOME/.mitmproxy: a private one for this test
        self.record = procs.start([MWTAP, "record", "--upstream", f"wss://127.0.0.1:{self.serve_port}",
                                   "--upstream-ca", str(self.cert), "--listen", f"127.0.0.1:{self.port}",
                                   "-o", str(self.capture)], "record", env={"HOME": str(tmp_path)})
        wait_port(self.port, proc=self.record)
        self.ca = tmp_path / ".mitmproxy" / "mitmproxy-ca-cert.pem"
        wait_for(self.ca.exists, "mitmproxy's CA")

    def bot(self, name: str = "bot", **env: str):
        settings = {"LP_ACCOUNT": ACCOUNT, "RECONNECT_DELAY_S": "0.5", "RECONNECT_ATTEMPTS": "3", **env}
        if "LP_TOKEN" not in env:
            settings.update(LP_USER="mwtap-bot", LP_PASS="secret")
        return self.procs.start([NODE, str(demo_bot.BOT)], name,
                                env=demo_bot.bot_env(f"127.0.0.1:{self.port}", self.ca, **settings))

    def conversation(self, messages: int):
        """The bot, once ready, and a consumer (`mwtap consume`) talk until the consumer closes the
        conversation; returns the bot's process and what consume printed."""
        bot = self.bot()
        wait_for(lambda: any(e["event"] == "subscribed-routing" for e in events(bot)), "the bot is ready", proc=bot)
        consume = self.procs.start([MWTAP, "consume", f"ws://127.0.0.1:{self.port}/ws_api/account/{ACCOUNT}/messaging/"
                                    "consumer?v=3", "--messages", str(messages), "--interval", "0.2"], "consume")
        assert consume.wait(TIMEOUT) == 0, consume.log_path.read_text()
        wait_for(lambda: any(e["event"] == "conversation-closed" for e in events(bot)), "the bot sees the close",
                 proc=bot)
        return bot, consume.log_path.read_text()

    def login(self) -> dict:
        """A bearer from serve's login, as a user gets one for the SDK's `token` setting."""
        request = urllib.request.Request(f"https://127.0.0.1:{self.serve_port}/api/account/{ACCOUNT}/login?v=1.3",
                                         data=json.dumps({"username": "token-bot", "password": "secret"}).encode(),
                                         headers={"Content-Type": "application/json"}, method="POST")
        context = ssl.create_default_context(cafile=str(self.cert))
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                             urllib.request.HTTPSHandler(context=context))
        with opener.open(request, timeout=10) as reply:
            return json.load(reply)

    def analysis(self) -> dict:
        """Stops the recorder (connections still open are open at the capture's end) and analyses."""
        assert self.procs.stop(self.record) == 0, self.record.log_path.read_text()
        done = subprocess.run([MWTAP, "analyze", str(self.capture), "--format", "json"], capture_output=True,
                              text=True, timeout=120)
        assert done.returncode in (0, 1), done.stderr
        return json.loads(done.stdout)


def by_side(summary: dict) -> dict[str, list[str]]:
    sides: dict[str, list[str]] = {"agent": [], "consumer": []}
    for c in summary["connections"]:
        sides["agent" if "/messaging/brand/" in c["url"] else "consumer"].append(c["conn"])
    return sides


def test_a_node_agent_sdk_bot_and_a_consumer_complete_a_conversation_through_record_and_serve(procs, tmp_path):
    stack = Stack(procs, tmp_path)
    bot, printed = stack.conversation(3)
    assert "texts        3 sent, 3 agent message(s) received" in printed, printed
    assert "0 timed out" in printed and "(0 with an error code)" in printed, printed
    seen = [e["event"] for e in events(bot)]
    assert seen.count("ring-accepted") == 1 and seen.count("answered") == 3 and "error" not in seen, seen

    summary = stack.analysis()
    sides = by_side(summary)
    assert len(sides["agent"]) == 1 and len(sides["consumer"]) == 1, summary["connections"]
    errors = [v for v in summary["violations"] if v["severity"] == "error"]
    assert errors == [], errors
    requests = summary["requests"]
    assert requests["total"] == requests["answered"] + requests["open_at_end"], requests
    assert requests["open_at_end"] == 0 and requests["answered"] >= 20, requests


@pytest.mark.parametrize("login", ["password", "token"])
def test_serve_expires_the_bots_session_and_the_analysis_judges_the_sdks_reconnect(procs, tmp_path, login):
    """The session lives 2 s (the SDK refreshes every 10 minutes): serve closes the socket with 4401,
    the bot reconnects as the SDK's README shows (`reconnect()`). With username and password the SDK
    logs in again (a fresh bearer: node-agent-sdk#27's fix); with a `token` setting it has nothing
    to refresh and reconnects with the same bearer, which mwtap reports as `token-not-refreshed`."""
    stack = Stack(procs, tmp_path, "--agent-session-lifetime", "2")
    env = {}
    if login == "token":
        account = stack.login()
        env = {"LP_TOKEN": account["bearer"], "LP_USER_ID": account["config"]["userId"]}
    bot = stack.bot(**env)
    wait_for(lambda: sum(e["event"] == "connected" for e in events(bot)) >= 2, "the reconnect", proc=bot)
    summary = stack.analysis()
    agent = by_side(summary)["agent"]
    assert len(agent) >= 2, summary["connections"]
    first = next(c for c in summary["connections"] if c["conn"] == agent[0])
    assert (first["close_code"], first["closed_by"]) == (4401, "server")
    found = [(v["rule"], v["severity"]) for v in summary["violations"] if v["severity"] != "info"]
    reconnects = summary["reconnects"]
    assert reconnects["after_token_close"] >= 1, reconnects
    if login == "password":
        assert found == [], found
        assert reconnects["fresh_token"] == reconnects["after_token_close"] and reconnects["same_token"] == 0
    else:
        # the stale bearer is closed with 4401 at once, maybe on requests the SDK sent on opening
        assert reconnects["same_token"] >= 1, reconnects
        assert env["LP_TOKEN"] not in stack.capture.read_text()  # the bearer in the path is redacted
        assert {finding for finding in found if finding[0] != "unanswered-request"} == {
            ("token-not-refreshed", "error")}, found


def token_command(port: int, cert: Path, issued: Path) -> str:
    """A real command fetching a fresh token from serve the way each side gets one: the bot's bearer
    from the agent login (the recorded bot's username: it is the same agent), a consumer's from signup.
    It also writes each token to `issued`, for the test to look for in the replay's capture."""
    code = ("import json,os,ssl,urllib.request as u;"
            f"b='https://127.0.0.1:{port}/api/account/{ACCOUNT}/';"
            "a=os.environ['MWTAP_TOKEN_SIDE']=='agent';"
            "r=u.Request(b+('login?v=1.3' if a else 'signup'),method='POST',"
            "data=json.dumps({'username':'mwtap-bot','password':'secret'}).encode() if a else b'',"
            "headers={'Content-Type':'application/json'});"
            f"c=ssl.create_default_context(cafile='{cert}');"
            "o=u.build_opener(u.ProxyHandler({}),u.HTTPSHandler(context=c));"
            "t=json.load(o.open(r,timeout=10))['bearer' if a else 'jwt'];"
            f"open('{issued}','a').write(t+'\\n');print(t)")
    return f"{sys.executable} -c \"{code}\""


def test_a_recorded_bot_replays_against_serve_with_a_fresh_bearer_in_its_path(procs, tmp_path):
    """The bot and a consumer recorded as above, replayed together at their recorded offsets
    (--parallel --timing original: the bot is ONLINE before the consumer asks for a conversation) to
    a fresh `mwtap serve --tls` (wss, trusted by --target-ca): every frame sent, every request
    answered without error on both sides (the ring and the conversation ids substituted), the bot's
    path bearer (redacted in the recording) replaced by a fresh one from the agent login, which the
    replay's capture holds only redacted."""
    stack = Stack(procs, tmp_path)
    stack.conversation(2)
    assert procs.stop(stack.record) == 0

    port, cert = free_port(), tmp_path / "target.pem"
    serve = procs.start([MWTAP, "serve", "--listen", f"127.0.0.1:{port}", "--tls", str(cert)], "target")
    wait_port(port, proc=serve)
    out, issued = tmp_path / "replay.jsonl", tmp_path / "issued"
    done = subprocess.run([MWTAP, "replay", str(stack.capture), "--target", f"wss://127.0.0.1:{port}",
                           "--target-ca", str(cert), "--parallel", "--timing", "original",
                           "--token-command", token_command(port, cert, issued),
                           "-o", str(out), "--format", "json"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "bearer in the URL path" in done.stderr, done.stderr
    result = json.loads(done.stdout)
    assert len(result["connections"]) == 2 and result["tokens_fetched"] == 2, result
    for conn in result["connections"]:
        assert conn["replayed"] and conn["frames_sent"] == conn["frames_total"] > 0, conn
        assert not [e for e in conn["events"] if "no response" in e], conn["events"]

    replayed = subprocess.run([MWTAP, "analyze", str(out), "--format", "json"], capture_output=True, text=True,
                              timeout=120)
    summary = json.loads(replayed.stdout)
    sides = by_side(summary)
    assert len(sides["agent"]) == 1 and len(sides["consumer"]) == 1, summary["connections"]
    marker = re.compile(r"/messaging/brand/(\[redacted sha256:\w+\])\?")
    replayed_bearer = marker.search(next(c["url"] for c in summary["connections"] if c["conn"] in sides["agent"]))
    recorded_bearer = marker.search(next(r["url"] for r in CaptureFile(str(stack.capture)).records()
                                         if r["rec"] == "open" and "/brand/" in r["url"]))
    assert replayed_bearer and recorded_bearer and replayed_bearer.group(1) != recorded_bearer.group(1)
    requests = summary["requests"]
    assert requests["total"] == requests["answered"] > 10 and requests["open_at_end"] == 0, requests
    assert requests["error_responses"] == 0 and summary["latency"][".ams.routing.UpdateRingState"]["count"] == 1
    tokens = issued.read_text().split()
    assert len(tokens) == 2 and not [t for t in tokens if t in out.read_text()]  # only their markers


def test_a_replayed_bot_whose_session_expires_reconnects_online_and_subscribed(procs, tmp_path):
    """The target expires agent sessions after 1 s while the recorded bot stayed 3 s (sending
    GetClock): the replay fetches a fresh bearer (MWTAP_TOKEN_SIDE agent, reason 4401), reconnects
    and re-sends what made the bot take rings: its ONLINE state and its subscriptions."""
    stack = Stack(procs, tmp_path)
    bot = stack.bot(KEEPALIVE_S="0.3")
    wait_for(lambda: any(e["event"] == "subscribed-routing" for e in events(bot)), "the bot is ready", proc=bot)
    time.sleep(3)  # the length of the recorded connection
    assert procs.stop(stack.record) == 0

    port, cert = free_port(), tmp_path / "target.pem"
    serve = procs.start([MWTAP, "serve", "--listen", f"127.0.0.1:{port}", "--tls", str(cert),
                         "--agent-session-lifetime", "1"], "target")
    wait_port(port, proc=serve)
    out, issued = tmp_path / "replay.jsonl", tmp_path / "issued"
    done = subprocess.run([MWTAP, "replay", str(stack.capture), "--target", f"wss://127.0.0.1:{port}",
                           "--target-ca", str(cert), "--timing", "original",
                           "--token-command", token_command(port, cert, issued),
                           "-o", str(out), "--format", "json"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    [conn] = json.loads(done.stdout)["connections"]
    assert conn["reconnects"] >= 1 and conn["frames_unsent"] == 0, conn
    assert len(issued.read_text().split()) == 1 + conn["reconnects"]
    sent: dict[str, list[str]] = {}
    for rec in CaptureFile(str(out)).records():
        if rec["rec"] == "msg" and rec["dir"] == "c2s" and rec.get("type"):
            sent.setdefault(rec["conn"], []).append(rec["type"])
    first, again = list(sent.values())[:2]
    restored = {".ams.routing.SetAgentState", ".ams.routing.SubscribeRoutingTasks",
                ".ams.aam.SubscribeExConversations"}
    assert restored <= set(first) and restored <= set(again[:len(restored)]), (first, again)
