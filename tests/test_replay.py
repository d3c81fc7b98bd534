"""`mwtap replay` and `mwtap diff` end to end: a scripted consumer session recorded through the
recorder, replayed to fresh built-in servers (`mwtap serve` subprocesses) and compared, all on
127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from websockets.asyncio.server import serve

from analysis.capture import CaptureFile, dumps, header_record, host_port, message_record
from analysis.redact import redaction_info
from conftest import BIN, free_port, holds_jwt, wait_port
from recorder.consumer import ConsumerConfig, run_consumer
from recorder.proxy import RecordingProxy
from recorder.replay.plan import load_plan
from recorder.server.app import MessagingServer
from recorder.server.config import ServerConfig

AGENT_REPLY_DELAY = "0.2"
HEADER_CONSUMER = ConsumerConfig(auth="header", messages=2, message_interval=0.1, read_delay=0.1)
INIT_CONSUMER = ConsumerConfig(auth="init", messages=2, message_interval=0.1, read_delay=0.1,
                               keepalive="getclock", keepalive_interval=0.4)
MWTAP = str(BIN / "mwtap")


async def _record(out: Path) -> None:
    # The recorded server skips sequence numbers now and then, so receipts need substitution too.
    config = ServerConfig(agent_reply_delay=float(AGENT_REPLY_DELAY), sequence_fault="skip", sequence_fault_rate=0.3,
                          seed=3)
    async with MessagingServer(config) as server:
        address = f"{server.host}:{server.port}"
        async with RecordingProxy(f"ws://{address}", out) as proxy:
            url = server.url().replace(address, f"127.0.0.1:{proxy.port}")
            for consumer in (HEADER_CONSUMER, INIT_CONSUMER):
                stats = await asyncio.wait_for(run_consumer(url, server.idp_url(), consumer), 30)
                assert stats.completed and stats.error_responses == 0


@pytest.fixture(scope="session")
def recording(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("recorded") / "capture.jsonl"
    asyncio.run(_record(out))
    return out


async def _record_token_refreshes(out: Path) -> None:
    """One consumer whose tokens live 1.5 s: it reconnects after 4401 with a token for the same
    identity (signup with the old token) and resubscribes from the sequence after the last it saw.
    The server skips most sequence numbers, so the replay's numbering differs from the recording's."""
    config = ServerConfig(agent_reply_delay=float(AGENT_REPLY_DELAY), token_lifetime=1.5, sequence_fault="skip",
                          sequence_fault_rate=0.6, seed=5)
    async with MessagingServer(config) as server:
        address = f"{server.host}:{server.port}"
        async with RecordingProxy(f"ws://{address}", out) as proxy:
            url = server.url().replace(address, f"127.0.0.1:{proxy.port}")
            consumer = ConsumerConfig(auth="header", messages=6, message_interval=0.3, read_delay=0.1)
            stats = await asyncio.wait_for(run_consumer(url, server.idp_url(), consumer), 60)
            assert stats.completed and stats.reconnects >= 1 and len(stats.conversation_ids) == 1


@pytest.fixture(scope="session")
def refreshed_recording(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("recorded") / "refreshed.jsonl"
    asyncio.run(_record_token_refreshes(out))
    return out


def token_command(port: int, host: str = "127.0.0.1") -> str:
    """A real command that fetches a token from the target's IDP; given the replay's previous token
    for the identity, it asks for the same identity (as the scripted consumer does)."""
    code = ("import json,os,urllib.request as u;"
            f"r=u.Request('http://{host_port(host, port)}/api/account/mwtap/signup',method='POST',data=b'');"
            "p=os.environ['MWTAP_PREVIOUS_TOKEN'];p and r.add_header('Authorization','jwt '+p);"
            "print(json.load(u.build_opener(u.ProxyHandler({})).open(r,timeout=10))['jwt'])")
    return f"{sys.executable} -c \"{code}\""


def start_server(procs, *args: str) -> int:
    port = free_port()
    proc = procs.start([MWTAP, "serve", "--listen", f"127.0.0.1:{port}", "--agent-reply-delay", AGENT_REPLY_DELAY,
                        *args], "serve")
    wait_port(port, proc=proc)
    return port


def mwtap(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([MWTAP, *map(str, args)], capture_output=True, text=True, timeout=timeout)


def replay(recording: Path, port: int, out: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return mwtap("replay", recording, "--target", f"ws://127.0.0.1:{port}", "-o", out, "--token-command",
                 token_command(port), "--format", "json", *args, timeout=timeout)


def recorded_conversations(recording: Path) -> set[str]:
    ids = set()
    for rec in CaptureFile(str(recording)).records():
        if rec.get("type") == "cm.RequestConversationResponse":
            ids.add(json.loads(rec["text"])["body"]["conversationId"])
    return ids


@pytest.mark.parametrize("timing", ["wait", "original", "fast"])
def test_replay_matches_the_recording_once_substituted(recording, procs, tmp_path, timing):
    port = start_server(procs)
    out = tmp_path / "replay.jsonl"
    done = replay(recording, port, out, "--timing", timing, "--speed", "2")
    assert done.returncode == 0, done.stderr
    assert "2 connection(s)" in done.stderr and f"ws://127.0.0.1:{port}/ws_api/account/" in done.stderr
    result = json.loads(done.stdout)
    assert [c["frames_sent"] for c in result["connections"]] == [c["frames_total"] for c in result["connections"]]
    assert result["tokens_fetched"] == 2  # one fresh identity per recorded identity
    substituted = {s["recorded"] for s in result["substitutions"] if s["kind"] == "string"}
    assert recorded_conversations(recording) <= substituted
    assert any(s["kind"] == "sequence" for s in result["substitutions"])
    header = CaptureFile(str(out))
    records = list(header.records())
    assert header.header["source"] == "replay" and header.header["mitmproxy"] is None
    assert {r["replay_of"] for r in records if r["rec"] == "open"} == {c.id for c in load_plan(str(recording)).connections}
    assert not holds_jwt(out.read_text())  # tokens only as redaction markers

    # The frames compare equal. The analyses differ where the recorded server skipped sequence
    # numbers (the replay target does not), and `fast` (not waiting for answers) sends requests
    # before the InitConnection response, as `original` may on a slow machine: the diff says so.
    compared = mwtap("diff", recording, out, "--format", "json")
    assert compared.returncode == 1, compared.stdout
    differences = json.loads(compared.stdout)["differences"]
    assert {d["kind"] for d in differences} == {"finding"}, differences
    rules = {(d["conn"], d["detail"]["rule"]): (d["detail"]["recorded"], d["detail"]["replayed"]) for d in differences}
    gaps = {conn: counts for (conn, rule), counts in rules.items() if rule == "sequence-gap"}
    assert len(gaps) == 2 and all(recorded > 0 == replayed for recorded, replayed in gaps.values())
    early = {rule for _, rule in rules} - {"sequence-gap"}
    assert (not early) if timing == "wait" else (early <= {"request-before-init"}), rules
    assert timing != "fast" or early == {"request-before-init"}


def test_diff_reports_a_delayed_response(recording, procs, tmp_path):
    port = start_server(procs, "--delay", "cm.ConsumerRequestConversation=1500")
    out = tmp_path / "replay.jsonl"
    assert replay(recording, port, out).returncode == 0
    compared = mwtap("diff", recording, out, "--format", "json")
    assert compared.returncode == 1
    report = json.loads(compared.stdout)
    latency = [d for d in report["differences"] if d["kind"] == "latency"]
    assert [d["detail"]["type"] for d in latency] == ["cm.ConsumerRequestConversation"]
    assert latency[0]["detail"]["replayed_ms"] >= 1400


def test_diff_reports_dropped_responses(recording, procs, tmp_path):
    port = start_server(procs, "--drop-rate", "0.1", "--seed", "5")
    out = tmp_path / "replay.jsonl"
    done = replay(recording, port, out, "--wait-timeout", "1", timeout=90)
    assert done.returncode == 0, done.stderr
    events = [e for c in json.loads(done.stdout)["connections"] for e in c["events"]]
    assert any(e.startswith("no response to request") for e in events)
    compared = mwtap("diff", recording, out)
    assert compared.returncode == 1
    assert "[missing-response]" in compared.stdout


def test_diff_reports_a_wrong_code(recording, procs, tmp_path):
    """The target is mwtap's own mock, playing a copy of the recording whose CSAT answer is a 500."""
    tampered = tmp_path / "tampered.jsonl"
    lines = recording.read_text().splitlines()
    last_ok = max(i for i, line in enumerate(lines) if '\\"body\\":\\"OK\\"' in line and '"resp"' in line)
    lines[last_ok] = lines[last_ok].replace('\\"code\\":200', '\\"code\\":500').replace('"code":200', '"code":500')
    tampered.write_text("\n".join(lines) + "\n")
    port = free_port()
    mock = procs.start([MWTAP, "replay", "--as-server", str(tampered), "--listen", f"127.0.0.1:{port}"], "mock")
    wait_port(port, proc=mock)
    out = tmp_path / "replay.jsonl"
    done = mwtap("replay", recording, "--target", f"ws://127.0.0.1:{port}", "-o", out, "--token", "not-a-real-token",
                 "--wait-timeout", "2")
    assert done.returncode == 0, done.stderr
    compared = mwtap("diff", recording, out)
    assert compared.returncode == 1
    assert "code 200 -> 500" in compared.stdout


@pytest.mark.parametrize("lifetime", ["1", "2"])
def test_token_expiry_mid_replay_reconnects_with_a_fresh_token(recording, procs, tmp_path, lifetime):
    """Tokens shorter-lived than the replay (3 s at --speed 0.3): every 4401 gets a fresh token, a
    reconnect and the subscriptions re-sent once each; a frame waiting for values when the token
    expires waits on after the reconnect (a 2 s token expires in that wait, which once restarted
    for ever), and the replay ends with every recorded frame sent."""
    port = start_server(procs, "--token-lifetime", lifetime)
    out = tmp_path / "replay.jsonl"
    first = load_plan(str(recording)).connections[0]
    restoring = sum(f.restores_state for f in first.frames)
    assert sum(f.restores_state for f in first.frames[:3]) == restoring == 2  # sent in the first 10 ms
    done = replay(recording, port, out, "--conn", first.id, "--timing", "original", "--speed", "0.3", timeout=90)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    (conn,) = result["connections"]
    assert conn["reconnects"] >= 1 and 4401 in conn["close_codes"] and conn["frames_unsent"] == 0
    # Both subscriptions are sent before the first token expires; each reconnect re-sends them once.
    assert conn["frames_sent"] == conn["frames_total"] + restoring * conn["reconnects"]
    assert result["tokens_fetched"] == 1 + conn["reconnects"]
    assert sum("fetched a fresh token" in e for e in conn["events"]) == conn["reconnects"]
    assert not any("no response to the re-sent" in e for e in conn["events"])
    opens = [r for r in CaptureFile(str(out)).records() if r["rec"] == "open"]
    assert len(opens) == 1 + conn["reconnects"] and {r["replay_of"] for r in opens} == {first.id}


@pytest.mark.parametrize("subscribes", [True, False])
def test_a_target_that_refuses_every_fresh_token_ends_the_replay_after_five_reconnects(recording, procs, tmp_path,
                                                                                        subscribes):
    """Every token is unknown to the target, which closes each connection with 4401 at once: the
    replay reconnects five times (a second apart), then gives up and exits 1, whether or not the
    connection had subscriptions to re-send (without any, nothing proved the target works)."""
    port = start_server(procs)
    capture = recording
    if not subscribes:  # the recording's first connection without its subscriptions
        capture = tmp_path / "no-subscriptions.jsonl"
        first = load_plan(str(recording)).connections[0].id
        kept = [line for line in recording.read_bytes().splitlines(keepends=True)
                if b'"conn"' not in line or (first.encode() in line and b"Subscribe" not in line)]
        capture.write_bytes(b"".join(kept))
    first = load_plan(str(capture)).connections[0]
    assert any(f.restores_state for f in first.frames) == subscribes
    started = time.monotonic()
    done = mwtap("replay", capture, "--target", f"ws://127.0.0.1:{port}", "-o", tmp_path / "out.jsonl",
                 "--token-command", "echo not-a-token-the-target-knows", "--format", "json", "--conn", first.id)
    assert done.returncode == 1, done.stderr
    (conn,) = json.loads(done.stdout)["connections"]
    assert conn["reconnects"] == 5 and conn["responses"] == 0 and set(conn["close_codes"]) == {4401}
    assert conn["events"][-1].endswith("(5 reconnect(s) in a row got no recorded request answered)")
    assert 4 <= time.monotonic() - started < 30  # spaced a second apart, and over


def token_capture(path: Path, frames: list[tuple[float, bool, bytes]]) -> None:
    """A one-connection capture whose client sent a (redacted) token in its header: `frames` are
    (t, from the client, payload); the client closes 1 s after the last."""
    url = "ws://127.0.0.1:9/ws_api/account/mwtap/messaging/consumer?v=3"
    path.write_bytes(b"".join(dumps(r) for r in [
        header_record(1.0, mwtap_version="0.1.0", mitmproxy_version=None, redaction=redaction_info(True),
                      recording_id="r"),
        {"rec": "open", "t": 1.0, "conn": "c1", "url": url, "status": 101,
         "request_headers": [["Authorization", "jwt [redacted sha256:0123456789ab]"]]},
        *(message_record("c1", t, n, c2s, True, payload) for n, (t, c2s, payload) in enumerate(frames)),
        {"rec": "close", "t": frames[-1][0] + 1, "conn": "c1", "code": 1000, "reason": "", "by": "client"}]))


def replay_to(handler, capture: Path, out: Path, *args: str) -> subprocess.CompletedProcess:
    """`mwtap replay` of `capture` to a websockets server on 127.0.0.1 that runs `handler` for each
    connection (in a thread of this process, stopped after the replay)."""
    async def start():
        return await serve(handler, "127.0.0.1", 0)
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        port = server.sockets[0].getsockname()[1]
        return mwtap("replay", capture, "--target", f"ws://127.0.0.1:{port}", "-o", out,
                     "--token-command", "echo a-token", "--format", "json", *args)
    finally:
        loop.call_soon_threadsafe(server.close)
        asyncio.run_coroutine_threadsafe(server.wait_closed(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def response(request: dict, code: int = 200) -> str:
    return json.dumps({"kind": "resp", "reqId": request["id"], "code": code, "type": "GenericResponse", "body": {}})


SUBSCRIBE_CONVERSATIONS = b'{"kind":"req","id":"1","type":"cqm.SubscribeExConversations","body":{}}'
SUBSCRIBE_EVENTS = b'{"kind":"req","id":"2","type":"ms.SubscribeMessagingEvents","body":{"dialogId":"d"}}'


def test_answers_to_re_sent_subscriptions_do_not_keep_a_closing_target_reconnected(tmp_path):
    """A target that answers every request (with 401) and then closes with 4401: the re-sent
    subscription is answered after each reconnect, yet no recorded request is, so the replay gives
    up after five reconnects, long before the recorded client's next request 7 s later (an answer
    to the re-sent frame once started the count again: a reconnect a second for the whole pause)."""
    capture = tmp_path / "recorded.jsonl"
    token_capture(capture, [(1.1, True, SUBSCRIBE_CONVERSATIONS),
                            (1.11, False, b'{"kind":"resp","reqId":"1","code":200,"type":"GenericSubscribeResponse",'
                                          b'"body":{"subscriptionId":"s"}}'),
                            (8.1, True, b'{"kind":"req","id":"3","type":"GetClock"}')])
    connections = []

    async def refuse(ws):
        connections.append(ws)
        async for message in ws:
            await ws.send(response(json.loads(message), 401))
            await ws.close(4401, "token expired")
            return

    done = replay_to(refuse, capture, tmp_path / "out.jsonl", "--timing", "original")
    assert done.returncode == 1, done.stderr
    (conn,) = json.loads(done.stdout)["connections"]
    assert conn["reconnects"] == 5 and len(connections) == 6 and conn["frames_unsent"] == 1
    assert conn["responses"] == 6 and set(conn["close_codes"]) == {4401}


def test_a_re_sent_subscription_left_unanswered_does_not_keep_the_others_from_being_re_sent(tmp_path):
    """The target answers both subscriptions and closes with 4401 before the next request is due;
    after the reconnect it ignores the re-sent conversations subscription: the replay says so after
    --wait-timeout, still re-sends the messaging-events subscription, then goes on."""
    capture = tmp_path / "recorded.jsonl"
    token_capture(capture, [(1.1, True, SUBSCRIBE_CONVERSATIONS), (1.2, True, SUBSCRIBE_EVENTS),
                            (2.5, True, b'{"kind":"req","id":"3","type":"GetClock"}')])
    received: list[list[str]] = []

    async def expire_then_ignore_one(ws):
        received.append([])
        async for message in ws:
            request = json.loads(message)
            received[-1].append(request["type"])
            if len(received) == 1 and request["type"] == "ms.SubscribeMessagingEvents":
                await ws.send(response(request))
                await ws.close(4401, "token expired")
                return
            elif len(received) == 1 or request["type"] != "cqm.SubscribeExConversations":
                await ws.send(response(request))

    done = replay_to(expire_then_ignore_one, capture, tmp_path / "out.jsonl", "--timing", "original",
                     "--wait-timeout", "0.5")
    assert done.returncode == 0, done.stderr
    (conn,) = json.loads(done.stdout)["connections"]
    assert conn["reconnects"] == 1 and conn["frames_unsent"] == 0
    assert received == [["cqm.SubscribeExConversations", "ms.SubscribeMessagingEvents"],
                        ["cqm.SubscribeExConversations", "ms.SubscribeMessagingEvents", "GetClock"]]
    assert "no response to the re-sent cqm.SubscribeExConversations within 0.5 s" in conn["events"]


def test_a_request_the_target_closed_on_after_the_last_frame_is_reported(tmp_path):
    """The target closes with 4401 on the last request instead of answering it: the replay has
    sent everything, and says which request went unanswered and why (it said nothing)."""
    capture = tmp_path / "recorded.jsonl"
    token_capture(capture, [(1.1, True, SUBSCRIBE_CONVERSATIONS),
                            (1.11, False, b'{"kind":"resp","reqId":"1","code":200,"type":"GenericSubscribeResponse",'
                                          b'"body":{"subscriptionId":"s"}}'),
                            (1.2, True, b'{"kind":"req","id":"3","type":"GetClock"}'),
                            (1.21, False, b'{"kind":"resp","reqId":"3","code":200,"type":"GenericResponse",'
                                          b'"body":{}}')])

    async def close_on_the_clock(ws):
        async for message in ws:
            request = json.loads(message)
            if request["type"] == "GetClock":
                await ws.close(4401, "token expired")
                return
            await ws.send(response(request))

    done = replay_to(close_on_the_clock, capture, tmp_path / "out.jsonl")
    assert done.returncode == 0, done.stderr
    (conn,) = json.loads(done.stdout)["connections"]
    assert conn["frames_unsent"] == 0 and conn["responses"] == 1 and conn["close_codes"] == [4401]
    assert conn["events"] == ["no response to request GetClock (id 3): the target closed the connection with 4401 "
                              "after the last frame"]


def test_a_consumer_that_refreshed_its_token_stays_one_identity_and_resubscribes_in_step(refreshed_recording, procs, tmp_path):
    plan = load_plan(str(refreshed_recording))
    assert len({c.header_token.fingerprint for c in plan.connections}) == len(plan.connections) > 1
    assert len({c.identity for c in plan.connections}) == 1  # one JWT sub

    port = start_server(procs)  # tokens that outlive the replay: no 4401 this time
    out = tmp_path / "replay.jsonl"
    done = replay(refreshed_recording, port, out)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["tokens_fetched"] == 1
    # Resubscribing from "last sequence seen + 1" follows the replayed numbering.
    assert any(s["request_type"] == "ms.SubscribeMessagingEvents" and s["kind"] == "sequence"
               for s in result["substitutions"])
    compared = json.loads(mwtap("diff", refreshed_recording, out, "--format", "json").stdout)
    # The replayed server knows the consumer of every connection, so every request is answered as
    # recorded (a new identity per token got 404 for the conversation from the first reconnect on).
    # What remains is what the recorded 4401s cut short (the replay's connections run on: more
    # notifications, an agent message the recorded frames never ACCEPT), and the sequences the
    # recorded server skipped.
    assert {d["kind"] for d in compared["differences"]} <= {"close-code", "notifications", "finding"}
    assert {d["detail"]["rule"] for d in compared["differences"] if d["kind"] == "finding"} <= \
        {"sequence-gap", "missing-accept"}
    recorded_4401 = [c.id for c in plan.connections if (c.close or {}).get("code") == 4401]
    assert [d["conn"] for d in compared["differences"] if d["kind"] == "close-code"] == recorded_4401


def test_ctrl_c_stops_cleanly_and_keeps_the_capture(recording, procs, tmp_path):
    port = start_server(procs)
    out = tmp_path / "replay.jsonl"
    proc = subprocess.Popen([MWTAP, "replay", str(recording), "--target", f"ws://127.0.0.1:{port}", "-o", str(out),
                             "--token-command", token_command(port), "--timing", "original", "--speed", "0.05"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and (not out.exists() or '"rec":"msg"' not in out.read_text()):
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    records = list(CaptureFile(str(out)).records())
    assert records[-1]["rec"] == "close" and records[-1]["reason"] == "replay interrupted"


def test_two_consumers_against_one_mock_each_get_their_recorded_identity(recording, procs):
    """A signup gets the next recorded consumer: each client recognises its own echoed messages (a
    shared identity made the second one ACCEPT its own texts as the agent's)."""
    port = free_port()
    mock = procs.start([MWTAP, "replay", "--as-server", str(recording), "--listen", f"127.0.0.1:{port}"], "mock")
    wait_port(port, proc=mock)
    ws_url = f"ws://127.0.0.1:{port}/ws_api/account/mwtap/messaging/consumer?v=3"
    consumers = []
    for consumer in (HEADER_CONSUMER, INIT_CONSUMER):
        stats = asyncio.run(asyncio.wait_for(
            run_consumer(ws_url, f"http://127.0.0.1:{port}/api/account/mwtap", consumer), 30))
        assert stats.completed and stats.close_codes == [1000] and stats.error_responses == 0
        assert stats.agent_messages == stats.accepts_sent == 3
        consumers.append(stats.consumer_id)
    assert len(set(consumers)) == 2
    assert procs.stop(mock) == 0


def test_scripted_consumer_completes_against_a_mock_of_the_recording(recording, procs, tmp_path):
    plan = load_plan(str(recording))
    for conn, consumer in zip(plan.connections, (HEADER_CONSUMER, INIT_CONSUMER)):
        port = free_port()
        out = tmp_path / f"live-{conn.id}.jsonl"
        mock = procs.start([MWTAP, "replay", "--as-server", str(recording), "--conn", conn.id,
                            "--listen", f"127.0.0.1:{port}", "-o", str(out)], f"mock-{conn.id}")
        wait_port(port, proc=mock)
        ws_url = f"ws://127.0.0.1:{port}/ws_api/account/mwtap/messaging/consumer?v=3"
        stats = asyncio.run(asyncio.wait_for(
            run_consumer(ws_url, f"http://127.0.0.1:{port}/api/account/mwtap", consumer), 30))
        assert stats.completed and stats.close_codes == [1000]
        assert stats.error_responses == 0 and stats.request_timeouts == 0
        assert stats.agent_messages == 3 and stats.conversations_closed == 1
        assert procs.stop(mock) == 0

        # The live client's session, as the mock saw it: a capture like any other.
        records = list(CaptureFile(str(out)).records())
        (opened,) = [r for r in records if r["rec"] == "open"]
        assert opened["replay_of"] == conn.id and opened["status"] == 101
        sent = [r for r in records if r["rec"] == "msg" and r["dir"] == "c2s"]
        received = [r for r in records if r["rec"] == "msg" and r["dir"] == "s2c"]
        assert len(sent) == stats.requests_sent and len(received) == stats.responses + stats.notifications
        assert [(r["code"], r["by"]) for r in records if r["rec"] == "close"] == [(1000, "client")]
        assert not holds_jwt(out.read_text())  # the mock's tokens only as redaction markers
        compared = json.loads(mwtap("diff", recording, out, "--format", "json").stdout)
        assert compared["requests_compared"] >= conn.requests - 2  # keep-alive GetClocks follow the live clock
        assert not [d for d in compared["differences"] if d["kind"].startswith("response")]
