"""Verdicts on what real clients do, and on LivePerson's own published frames.

* Each real-client behaviour of docs/analysis.md ("Real clients: the verdict each behaviour
  gets"), as a scripted client (plain `websockets` code, the real client's frames and timing)
  through a real `mwtap record` in front of a real `mwtap serve` (subprocesses), then
  `mwtap analyze --format json`: the exact verdicts on each client's connection.
* The frames of LivePerson's post-conversation-survey tutorial, in the tutorial's order, as a
  capture: the exact verdicts, the pairs, and what each verdict names.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import urllib.request
from collections import defaultdict

import pytest
from websockets.asyncio.client import connect

from conftest import BIN, DATA, Processes, free_port, wait_port
from page_session import STEP_S, analyse_page

MWTAP = str(BIN / "mwtap")
GET_CLOCK_INTERVAL = 0.2  # LivePerson's browser SDK sends GetClock with id 1 every 10 s; shortened
CLOSE_DELAY_MS = 1500     # the server answers the close request after the client has hung up
SUBSCRIBE = {"kind": "req", "id": "2", "type": "cqm.SubscribeExConversations",
             "body": {"minLastUpdatedTime": 0, "convState": ["OPEN"]}}
REQUEST_CONVERSATION = {"kind": "req", "id": "3", "type": "cm.ConsumerRequestConversation", "body": {}}


def init_connection(token: str, id_=1) -> dict:
    """The InitConnection of a browser client (it cannot set WebSocket headers)."""
    return {"kind": "req", "id": id_, "type": "InitConnection", "body": {},
            "headers": [{"type": ".ams.headers.ClientProperties", "deviceFamily": "DESKTOP", "os": "LINUX"},
                        {"type": ".ams.headers.ConsumerAuthentication", "jwt": token}]}


def pause(seconds: float) -> None:
    """Wait without letting the event loop run: the other scripted clients of this process must not
    stretch a gap a real client keeps (sending does not yield either, while the socket is writable)."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


class Client:
    """A consumer WebSocket that keeps every frame it receives."""

    def __init__(self, ws):
        self.ws = ws
        self.frames: list[dict] = []
        self.seen: set[int] = set()  # responses already returned by `answer`
        self.arrived = asyncio.Event()
        self.reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        async for message in self.ws:
            self.frames.append(json.loads(message))
            self.arrived.set()

    async def send(self, frame: dict) -> None:
        await self.ws.send(json.dumps(frame))

    async def answer(self, req_id, timeout: float = 20.0) -> dict:
        """The response to request `req_id` (the n-th such response when ids are reused)."""
        async def wait():
            while True:
                for frame in self.frames:
                    if frame.get("kind") == "resp" and frame.get("reqId") == str(req_id) and id(frame) not in self.seen:
                        self.seen.add(id(frame))
                        return frame
                self.arrived.clear()
                await self.arrived.wait()
        return await asyncio.wait_for(wait(), timeout)

    async def close(self) -> None:
        await self.ws.close()
        self.reader.cancel()


async def sdk_subscribes_0_6_ms_after_init_connection(open_, subscribe_code: int = 200):
    """LivePerson's browser SDK: InitConnection, then 0.6 ms later its conversation subscription."""
    client, token = await open_(header=None)
    await client.send(init_connection(token))
    pause(0.0006)
    await client.send(SUBSCRIBE)
    assert (await client.answer(1))["code"] == 200
    assert (await client.answer(2))["code"] == subscribe_code
    await client.close()


async def requests_conversation_right_after_init_connection(open_):
    """Another public client: InitConnection and cm.ConsumerRequestConversation back to back."""
    client, token = await open_(header=None)
    await client.send(init_connection(token, "init"))
    await client.send(REQUEST_CONVERSATION)
    assert (await client.answer("init"))["code"] == 200
    assert (await client.answer(3))["code"] == 200
    await client.close()


async def numeric_ids(open_):
    """Ids as JSON numbers, counted from 0."""
    client, _ = await open_()
    await client.send({"kind": "req", "id": 0, "type": "GetClock"})
    await client.send({**SUBSCRIBE, "id": 1})
    assert [(await client.answer(i))["code"] for i in (0, 1)] == [200, 200]
    await client.close()


async def get_clock_always_id_1(open_):
    """LivePerson's browser SDK: every GetClock has id 1, the next sent once the last was answered."""
    client, _ = await open_()
    for _ in range(4):
        await client.send({"kind": "req", "id": 1, "type": "GetClock"})
        assert (await client.answer(1))["code"] == 200
        await asyncio.sleep(GET_CLOCK_INTERVAL)
    await client.close()


async def capitalised_jwt_scheme(open_):
    """`Authorization: JWT <token>`, as one sample client writes it."""
    client, _ = await open_(header="JWT")
    await client.send(SUBSCRIBE)
    assert (await client.answer(2))["code"] == 200
    await client.close()


async def token_in_another_header(open_):
    """The token in a header the API does not read (and no InitConnection): the server refuses."""
    client, _ = await open_(header="X-LP-Token")
    await client.send(SUBSCRIBE)
    assert (await client.answer(2))["code"] == 401
    await client.close()


async def closes_conversation_then_hangs_up(open_):
    """Closes its conversation and, at once, its socket, without waiting for the answer."""
    client, _ = await open_()
    await client.send(REQUEST_CONVERSATION)
    conversation = (await client.answer(3))["body"]["conversationId"]
    await client.send({"kind": "req", "id": "4", "type": "cm.UpdateConversationField",
                       "body": {"conversationId": conversation,
                                "conversationField": [{"field": "ConversationStateField",
                                                       "conversationState": "CLOSE"}]}})
    await client.close()


# client -> the verdicts (rule, severity) on its connection, in order, and a text each must contain
CLIENTS = {
    sdk_subscribes_0_6_ms_after_init_connection: [("request-before-init", "warning", "answered it 200")],
    requests_conversation_right_after_init_connection: [("request-before-init", "warning", "answered it 200")],
    numeric_ids: [],
    get_clock_always_id_1: [("reused-request-id", "info", "'1'")],
    capitalised_jwt_scheme: [],
    token_in_another_header: [("request-before-init", "error", "header 'X-LP-Token')")],
    closes_conversation_then_hangs_up: [("unanswered-request", "info", "the client closed the connection")],
}


PIPELINING = (sdk_subscribes_0_6_ms_after_init_connection, requests_conversation_right_after_init_connection)


def signup(port: int, account: str) -> str:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/account/{account}/signup", method="POST", data=b"")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=10) as reply:
        return json.load(reply)["jwt"]


async def run_clients(serve_port: int, record_port: int, scripts) -> None:
    async def play(script):
        account = script.__name__.replace("_", "-")

        async def open_(header: str | None = "jwt"):
            token = await asyncio.to_thread(signup, serve_port, account)
            headers = {}
            if header in ("jwt", "JWT"):
                headers["Authorization"] = f"{header} {token}"
            elif header is not None:
                headers[header] = token
            ws = await connect(f"ws://127.0.0.1:{record_port}/ws_api/account/{account}/messaging/consumer?v=3",
                               proxy=None, additional_headers=headers, ping_interval=None)
            return Client(ws), token

        await script(open_)
    await asyncio.wait_for(asyncio.gather(*(play(script) for script in scripts)), 120)


def record_and_analyse(tmp, serve_options: list[str], scripts) -> tuple[dict, dict[str, list[dict]]]:
    """The scripts at once through `mwtap record` against `mwtap serve`: the analysis summary, and
    each account's violations (a script's account is its name)."""
    procs = Processes(tmp)
    try:
        serve_port, record_port = free_port(), free_port()
        serve = procs.start([MWTAP, "serve", "--listen", f"127.0.0.1:{serve_port}", *serve_options], "serve")
        wait_port(serve_port, proc=serve)
        capture = tmp / "capture.jsonl"
        record = procs.start([MWTAP, "record", "--upstream", f"ws://127.0.0.1:{serve_port}", "--listen",
                              f"127.0.0.1:{record_port}", "-o", str(capture)], "record")
        wait_port(record_port, proc=record)
        asyncio.run(run_clients(serve_port, record_port, scripts))
        assert procs.stop(record) == 0, record.log_path.read_text()
    finally:
        procs.stop_all()
    analysis = subprocess.run([MWTAP, "analyze", str(capture), "--format", "json"], capture_output=True, text=True,
                              timeout=120)
    assert analysis.returncode == 0, analysis.stderr
    summary = json.loads(analysis.stdout)
    account_of = {c["conn"]: c["url"].split("/account/")[1].split("/")[0] for c in summary["connections"]}
    found = defaultdict(list)
    for v in sorted(summary["violations"], key=lambda v: (v["t"], v["frame"] is None, v["frame"])):
        found[account_of[v["conn"]]].append(v)
    return summary, found, capture


def pipelined(capture, account: str) -> bool:
    """Whether the capture shows the account's second request before the first response: the
    recorder sees the client's frames and the server's answer in the order its own event loop
    gets to them, and on a loaded machine it may get to a quick answer first."""
    records = [json.loads(line) for line in capture.read_text().splitlines()]
    conn = next(r["conn"] for r in records if r.get("rec") == "open" and f"/account/{account}/" in r["url"])
    directions = [r["dir"] for r in records if r.get("rec") == "msg" and r["conn"] == conn]
    return directions[:2] == ["c2s", "c2s"]


RUNS = 6  # at most: a loaded machine's recorder often gets to a quick answer first (see `pipelined`)


@pytest.fixture(scope="module")
def verdicts(tmp_path_factory):
    """The clients of CLIENTS, run together. A pipelining client's verdicts are taken from a run whose
    capture shows its second request before the first answer (a capture that does not shows no
    pipelining to judge): the clients are run again, at most RUNS times, until each did; the other
    clients' verdicts come from the first run."""
    summary, found, pipelining = None, None, {}
    for _ in range(RUNS):
        run_summary, run_found, capture = record_and_analyse(
            tmp_path_factory.mktemp("conformance"), ["--delay", f"cm.UpdateConversationField={CLOSE_DELAY_MS}"],
            CLIENTS)
        if summary is None:
            summary, found = run_summary, run_found
        for script in PIPELINING:
            account = script.__name__.replace("_", "-")
            if account not in pipelining and pipelined(capture, account):
                pipelining[account] = run_found[account]
        if len(pipelining) == len(PIPELINING):
            found.update(pipelining)
            return summary, found
    pytest.fail(f"in {RUNS} runs the recorder never saw some pipelining client's second request before the answer "
                f"to its first (seen for: {sorted(pipelining)})")


def test_sdk_pipelining_refused_by_a_server_that_waits_for_init_connection_is_an_error(tmp_path):
    """The same browser SDK against a server that answers InitConnection 0.3 s late: the
    subscription sent 0.6 ms after it is refused, and the verdict says so."""
    async def refused(open_):
        await sdk_subscribes_0_6_ms_after_init_connection(open_, subscribe_code=401)
    refused.__name__ = "refused-sdk"
    _, found, _ = record_and_analyse(tmp_path, ["--delay", "InitConnection=300"], [refused])
    assert [(v["rule"], v["severity"]) for v in found["refused-sdk"]] == [("request-before-init", "error")]
    assert "refused with 401" in found["refused-sdk"][0]["message"]


@pytest.mark.parametrize("script", list(CLIENTS), ids=lambda script: script.__name__)
def test_real_client_behaviour_gets_the_verdict_a_person_debugging_agrees_with(verdicts, script):
    summary, found = verdicts
    account = script.__name__.replace("_", "-")
    assert sum(account_of == account for account_of in
               (c["url"].split("/account/")[1].split("/")[0] for c in summary["connections"])) == 1
    got = found[account]
    assert [(v["rule"], v["severity"]) for v in got] == [(rule, severity) for rule, severity, _ in CLIENTS[script]]
    for v, (_, _, text) in zip(got, CLIENTS[script]):
        assert text in v["message"], v["message"]


# -- LivePerson's post-conversation-survey tutorial ------------------------------------------------

TUTORIAL = [json.loads(line) for line in (DATA / "post_conversation_survey_tutorial.jsonl").read_text().splitlines()]
def analyse_tutorial():
    # the tutorial connects with `Authorization: jwt $LP_JWT` (wscat -H): the default token header
    return analyse_page(TUTORIAL, ("pairs", "sequences", "streams"))


def test_tutorial_capture_is_the_whole_published_session():
    assert len(TUTORIAL) == 36
    assert all(line["source"].startswith("LivePerson developer center, Messaging Window API — Tutorials, "
                                          "Post Conversation Survey (PCS), Step ") for line in TUTORIAL)
    documented = [json.loads(line) for line in (DATA / "documented_frames.jsonl").read_text().splitlines()]
    verbatim = [d["frame"] for d in documented if "post-conversation-survey-pcs" in d["source"]
                and "trimmed" not in d["source"] and d["frame"].get("id") != "11"]  # id 11: after the session
    assert len(verbatim) == 14 and all(frame in [line["frame"] for line in TUTORIAL] for frame in verbatim)


def test_tutorial_verdicts():
    """Every verdict is what the published frames show. They reuse request id 2 for five requests;
    the response to the first subscription carries reqId 22 (an orphan), so that subscription
    stays outstanding until the generic subscribe response of step 10, the oldest request it can
    answer; the step-12 publish (id 22) is answered with reqId 2, which only the step-10
    subscription still waits under: a mismatch, left unpaired. The agent's ACCEPT at the sequence
    the consumer's publish was answered with (4) does not make the agent the consumer, so its two
    unacknowledged messages are `missing-accept`: info, since the MAIN dialog closed (step 9) before
    their deadline, after which an ACCEPT would be a publish to a closed dialog."""
    found, _ = analyse_tutorial()
    assert [(v.rule, v.severity, v.frame) for v in found] == [
        ("orphan-response", "warning", 6),
        ("sequence-gap", "info", 9),                # a consumer's gap may be a message for agents only
        ("sequence-gap", "info", 15),
        ("duplicate-request-id", "error", 16),
        ("duplicate-request-id", "error", 19),
        ("duplicate-request-id", "error", 22),
        ("unknown-subscription", "info", 24),       # the survey's events name dialog PwT_…, not the subscribed one
        ("response-type-mismatch", "warning", 26),
        ("missing-accept", "info", 7),
        ("reused-request-id", "info", 28),
        ("missing-accept", "info", 9),
        ("unknown-subscription", "warning", 35),    # the last notification is of another subscription
        ("unanswered-request", "info", 22),
        ("unanswered-request", "info", 25),
        ("missing-accept", "info", None),
        ("missing-accept", "info", None),
        ("missing-accept", "info", None),
    ]
    duplicates = [v.message for v in found if v.rule == "duplicate-request-id"]
    assert all("while request 5 (ms.SubscribeMessagingEvents) is still unanswered" in m for m in duplicates)
    mismatch = next(v.message for v in found if v.rule == "response-type-mismatch")
    assert "ms.PublishEventResponse (reqId '2') cannot answer request 22 (ms.SubscribeMessagingEvents)" in mismatch


def test_tutorial_pairs_each_response_with_the_request_its_type_answers():
    _, rows = analyse_tutorial()
    pairs = [(p["frame"], p["type"], p["response_frame"], p["response_type"], p["status"]) for p in rows["pairs"]]
    assert pairs == [
        (0, "cqm.SubscribeExConversations", 1, "cqm.SubscribeExConversationsResponse", "answered"),
        (3, "cm.ConsumerRequestConversation", 4, "cm.RequestConversationResponse", "answered"),
        (None, None, 6, ".ams.GenericSubscribeResponse", "orphan"),
        (11, "ms.PublishEvent", 12, "ms.PublishEventResponse", "answered"),
        (16, "ms.PublishEvent", 17, "ms.PublishEventResponse", "answered"),
        (19, "cm.UpdateConversationField", 20, "StringResponse", "answered"),
        (5, "ms.SubscribeMessagingEvents", 23, "GenericSubscribeResponse", "answered"),
        (None, None, 26, "ms.PublishEventResponse", "orphan"),
        (28, "ms.PublishEvent", 29, "ms.PublishEventResponse", "answered"),
        (22, "ms.SubscribeMessagingEvents", None, None, "unanswered"),
        (25, "ms.PublishEvent", None, None, "unanswered"),
    ]
    # every answered request but the subscription that lost its response waited one step
    latencies = {p["frame"]: p["latency_ms"] for p in rows["pairs"] if p["status"] == "answered"}
    assert {frame: ms for frame, ms in latencies.items() if frame != 5} == dict.fromkeys((0, 3, 11, 16, 19, 28), 500.0)


def test_tutorial_own_events_follow_the_explicit_role():
    _, rows = analyse_tutorial()
    own = {(e["frame"], e["sequence"]): e["own"] for e in rows["sequences"] if e["sequence"] is not None}
    assert own[(13, 3)] is True and own[(14, 4)] is False and own[(15, 7)] is False  # the agent's ACCEPT and READ
    assert own[(27, 2)] is True and own[(31, 4)] is False


def test_tutorial_survey_events_before_the_subscribe_response_belong_to_the_subscription():
    _, rows = analyse_tutorial()
    main = next(s for s in rows["streams"] if s["dialog_id"] == "__YOUR_CONVERSATION_ID__")
    assert (main["request_frame"], main["notifications"], main["t_confirmed"]) == (5, 8, 1 + STEP_S * 23)
    survey = next(s for s in rows["streams"] if s["dialog_id"] == "__YOUR_POST_SURVEY_DIALOG_ID__")
    assert (survey["request_frame"], survey["notifications"], survey["t_confirmed"]) == (22, 6, None)
