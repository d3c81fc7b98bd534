"""The native Connections analyzer (core/src/connections.rs) reading a capture and fed its records one at a
time (`test_native_engine.fed_engine`) gives the same answers exactly (its answers on fixed captures are the
retired Python analyzer's: tests/test_golden.py): the same token-not-refreshed and fast-reconnect violations
in the same order (`{delay:.3f}`, `{min:g}`), the same `connections` rows (refused upgrades, implicit opens,
connections open at the end, frame, byte and ping counts, tokens from the Authorization header, the URL or
InitConnection, agent or consumer side) and `reconnects` rows (linked by token, JWT sub or host, chains and
attempts, fresh tokens), types included. Alone and before Keepalive and Rings (the engine's order), on every
capture the tests ship, on generated captures, on a fuzz of connection traffic and on the damaged captures
of test_native_engine."""

from __future__ import annotations


import pytest
from hypothesis import given
from hypothesis import strategies as st

from analysis import _core
from analysis.capture import dumps
from analysis.config import Config
from analysis.redact import marker
from analysis.synth import CaptureBuilder
from sample_capture import generate
from test_fuzz_engine import fuzz_settings
from test_native_engine import ROOT, SHIPPED, assert_same, capture_files, written
from test_native_message import jwt
from test_reliability_load import soak_size

TABLES = ("connections", "reconnects", "keepalive", "silences", "pings")
SETS = [("connections",), ("connections", "keepalive", "rings")]
AGENT_URL = "wss://127.0.0.1/ws_api/account/1/messaging/brand/[redacted sha256:0123456789ab]?v=2"
CONSUMER_URL = "wss://127.0.0.1/ws_api/account/1/messaging/consumer?v=3"
DEFAULT_CASES = 400
SOAK_CASES = soak_size(400, 10_000)


def same(paths: list[str], analyzers=("connections",), config: Config | None = None) -> dict | str:
    return assert_same(paths, config, False, analyzers, TABLES)


def write(tmp_path, builder: CaptureBuilder) -> str:
    path = tmp_path / "capture.jsonl"
    builder.write(path)
    return str(path)


@pytest.mark.parametrize("analyzers", SETS, ids="+".join)
@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_captures(path, analyzers):
    same([str(path)], analyzers)


@pytest.mark.parametrize("analyzers", SETS, ids="+".join)
def test_generated_captures(tmp_path, analyzers):
    sample = tmp_path / "sample.jsonl"
    generate(sample, seed=6)
    result = same([str(sample)], analyzers)
    assert result["tables"]["connections"] and result["tables"]["reconnects"]
    same([str(ROOT / "notebooks/data/demo.jsonl.gz")], analyzers)


def test_reconnect_rules_and_links(tmp_path):
    """4401 then the same token; 4407 then a fresh one of the same JWT sub; a server close, a 1006 and a proxy
    close followed too soon (by token, by sub), a client close (never too soon), host links (never too soon)
    made when a connection without a token ends, one past the reconnect window, a close recorded after the
    next open (within 50 ms: linked, beyond: not), a closed connection found by one key and then by another."""
    b = CaptureBuilder()
    tokens = [jwt({"sub": "u1", "n": n}) for n in range(6)]
    for i, (conn, t_open, token, t_close, code, by) in enumerate([
            ("a1", 0, tokens[0], 10, 4401, "server"), ("a2", 10.25, tokens[0], 20, 4407, "server"),
            ("a3", 21, tokens[1], 30, 1011, "server"), ("a4", 30.5, tokens[1], 40, 1006, "client"),
            ("a5", 40.0625, tokens[2], 50, 1000, "proxy"), ("a6", 50.5, tokens[3], 60, 1000, "client"),
            ("a7", 60.1, tokens[4], None, None, None)]):
        b.open(conn, t_open, token=token, client=f"10.0.{i}.1:1")
        if t_close is not None:
            b.close(conn, t_close, code=code, by=by)
    b.open("h1", 100, token=None, client="127.0.0.9:1")
    b.close("h1", 110, code=1011, by="server")
    b.open("h2", 110.5, token=None, client="127.0.0.9:2")
    b.open("h3", 110.6, token=None, client="127.0.0.9:3")
    b.close("h2", 115, by="client")  # linked to h1 now, by host
    b.close("h3", 116, by="client")  # h2 closed after h3 opened: not linked
    b.open("x1", 200, token="t-x", client="10.9.9.9:1")
    b.close("x1", 201, by="server")
    b.open("x2", 202, token="t-x", client="10.9.9.8:1")  # x1's successor, by token
    b.open("x3", 203, token=None, client="10.9.9.9:2")
    b.close("x3", 204, by="client")  # x1 (its host's last close) already has a successor
    b.open("w1", 300, token=None, client="127.0.0.8:1")
    b.close("w1", 301, by="server")
    b.open("w2", 301 + 601, token=None, client="127.0.0.8:1")  # past the 600 s window when it ends
    b.open("e1", 1000, token="t-e1", client="10.8.0.1:1")
    b.close("e1", 1000.04, by="server")
    b.open("e2", 1000, token="t-e1", client="10.8.0.2:1")  # the close is recorded 40 ms after this open
    b.open("e3", 1100, token="t-e3", client="10.8.0.3:1")
    b.close("e3", 1100.06, by="server")
    b.open("e4", 1100, token="t-e3", client="10.8.0.4:1")  # 60 ms: not this one's predecessor
    result = same([write(tmp_path, b)])
    assert [(v["rule"], v["conn"], v["t"], v["message"]) for v in result["violations"]] == [
        ("token-not-refreshed", "a2", 10.25, f"reconnected with the same token {marker(tokens[0])[17:29]} after "
         "close 4401 (server) of a1; 4401 asks for a fresh token"),
        ("fast-reconnect", "a4", 30.5, "reconnected 0.500 s after close 1011 (server) of a3 (minimum 1 s)"),
        ("fast-reconnect", "a5", 40.0625, "reconnected 0.062 s after close 1006 (client) of a4 (minimum 1 s)"),
        ("fast-reconnect", "a6", 50.5, "reconnected 0.500 s after close 1000 (proxy) of a5 (minimum 1 s)"),
        ("fast-reconnect", "e2", 1000, "reconnected -0.040 s after close 1000 (server) of e1 (minimum 1 s)")]
    reconnects = [(r["conn"], r["prev_conn"], r["chain"], r["attempt"], r["linked_by"], r["fresh_token"])
                  for r in result["tables"]["reconnects"]]
    assert reconnects == [
        ("a2", "a1", "a1", 1, "token", False), ("a3", "a2", "a1", 2, "sub", True),
        ("a4", "a3", "a1", 3, "token", False), ("a5", "a4", "a1", 4, "sub", True),
        ("a6", "a5", "a1", 5, "sub", True), ("a7", "a6", "a1", 6, "sub", True),
        ("h2", "h1", "h1", 1, "host", None), ("x2", "x1", "x1", 1, "token", False),
        ("e2", "e1", "e1", 1, "token", False)]
    quick = same([write(tmp_path, b)], config=Config(min_reconnect_delay_s=0.25))["violations"]
    assert [(v["conn"], v["message"][-16:]) for v in quick[1:]] == [("a5", "(minimum 0.25 s)"),
                                                                    ("e2", "(minimum 0.25 s)")]


def test_connection_rows(tmp_path):
    """Refused upgrades, an implicit open, tokens from the URL (agent path, JWT path segment, v2 consumer path)
    and from InitConnection (a consumer), an agent request making an agent, counts of frames, bytes and pings
    (pongs not counted), a close by an unknown side, int times, connections open at the end linked as they end."""
    b = CaptureBuilder()
    b.record({"rec": "refused", "t": 1, "conn": "r1", "url": CONSUMER_URL, "client": "127.0.0.1:9",
              "status": 403, "error": "forbidden"})
    b.record({"rec": "refused", "t": 1.5, "conn": "r2"})
    b.c2s("implicit", 2, {"kind": "req", "id": "1", "type": "GetClock"})
    b.s2c("implicit", 3, {"kind": "resp", "reqId": "1", "type": "GetClock", "code": 200, "body": {}})
    b.ping("implicit", 4)
    b.ping("implicit", 5, from_client=False)
    b.ping("implicit", 6, pong=True)
    b.close("implicit", 7, code=1000, by="someone")
    b.open("agent", 10, token=None, url=AGENT_URL, client="10.1.1.1:1")
    b.open("jwt-path", 11, token=None, url=f"ws://127.0.0.1/x/{jwt({'sub': 'u1'})}/y")
    b.open("v2", 12, token=None, url=f"ws://127.0.0.1/messaging/consumer/{jwt({'sub': 'u2'})}?v=2")
    b.open("init", 13, token=None)
    init = {"kind": "req", "id": "1", "type": ".ams.InitConnection",
            "headers": [{"type": ".ams.headers.ClientProperties"},
                        {"type": ".ams.headers.ConsumerAuthentication", "jwt": jwt({"sub": "u3"})}]}
    b.c2s("init", 14, init)
    b.c2s("init", 15, {**init, "id": "2"})  # auth already known: not read again
    b.open("bot", 16, token=None)
    b.c2s("bot", 17, {"kind": "req", "id": "1", "type": ".ams.aam.SubscribeAgentsState", "body": {}})
    b.close("bot", 18, code=4401, by="server")
    b.open("bot2", 18, token=None)  # linked by host at its end: after 4401 without any token
    b.close("agent", 20, code=1006, reason="gone", by="client")
    result = same([write(tmp_path, b)], ("connections", "keepalive", "rings"))
    rows = {r["conn"]: r for r in result["tables"]["connections"]}
    assert [(r["state"], r["refused_status"], r["close_reason"]) for r in (rows["r1"], rows["r2"])] == [
        ("refused", 403, "forbidden"), ("refused", None, None)]
    implicit = rows["implicit"]
    assert (implicit["opened_at"], implicit["t"], implicit["duration_s"], implicit["closed_by"]) == (None, 2, 5, None)
    assert [implicit[k] for k in ("frames_c2s", "frames_s2c", "pings_c2s", "pings_s2c")] == [1, 1, 1, 1]
    assert implicit["bytes_c2s"] > 0 and implicit["bytes_s2c"] > implicit["bytes_c2s"]
    assert [(rows[c]["side"], rows[c]["auth"], rows[c]["state"]) for c in ("agent", "jwt-path", "v2", "init", "bot")] == [
        ("agent", "url", "closed"), (None, "url", "open-at-end"), ("consumer", "url", "open-at-end"),
        ("consumer", "init", "open-at-end"), ("agent", None, "closed")]
    assert rows["init"]["sub"] is not None and rows["jwt-path"]["sub"] != rows["v2"]["sub"]
    assert rows["bot2"]["prev_conn"] == "bot" and rows["bot2"]["closed_at"] is None


def test_client_keys_kept_are_bounded_alike(tmp_path):
    """The last closed connection per client key is forgotten in batches, once 1.25 × CLIENT_KEYS_KEPT keys
    are known (the newest CLIENT_KEYS_KEPT kept, a key closed again counting as new): a reconnect from a
    forgotten host is not linked."""
    header = dumps({"rec": "header", "t": 1.0, "format": "mwtap-capture", "version": 1})
    hosts = _core.CLIENT_KEYS_KEPT + _core.CLIENT_KEYS_KEPT // 4 + 1
    lines = [header]
    for i in range(hosts):
        if i == hosts - 1:  # the first host closes again just before the batch is forgotten
            lines.append(b'{"rec":"open","t":2,"conn":"again","client":"h0:1"}\n{"rec":"close","t":2,"conn":"again"}\n')
        lines.append(b'{"rec":"open","t":2,"conn":"c%d","client":"h%d:1"}\n{"rec":"close","t":2,"conn":"c%d"}\n'
                     % (i, i, i))
    hosts_back = (0, 1, hosts - _core.CLIENT_KEYS_KEPT, hosts - _core.CLIENT_KEYS_KEPT + 1, hosts - 1)
    for i in hosts_back:
        lines.append(b'{"rec":"open","t":3,"conn":"back%d","client":"h%d:2"}\n' % (i, i))
    path = tmp_path / "many-hosts.jsonl"
    path.write_bytes(b"".join(lines))
    result = assert_same([str(path)], None, False, ("connections",), ("reconnects",))
    assert [(r["conn"], r["prev_conn"]) for r in result["tables"]["reconnects"]] == [
        ("again", "c0"), ("back0", "again"), *((f"back{i}", f"c{i}") for i in hosts_back[3:])]


CONNS = st.sampled_from(["a", "b", "c", "d"])
SUBS = st.sampled_from(["u1", "u2"])
# Tokens as the header, the URL or InitConnection carry them: markers (with and without a sub), raw JWTs
# (an unredacted capture), opaque tokens, nothing usable.
token = st.one_of(st.sampled_from(["[redacted sha256:aaaaaaaaaaaa]", "[redacted sha256:bbbbbbbbbbbb sub:111111111111]",
                                   "[redacted sha256:cccccccccccc sub:111111111111]", "opaque-1", "", " "]),
                  st.builds(lambda sub, n: jwt({"sub": sub, "n": n}), SUBS, st.integers(0, 1)),
                  st.just(jwt({"iss": "no-sub"})))
header_value = st.one_of(token.map(lambda t: f"jwt {t}"), token, token.map(lambda t: f"Bearer {t} x"))
header = st.tuples(st.sampled_from(["Authorization"] * 3 + ["authorization", "Host", "X-Token"]), header_value).map(list)
headers = st.sampled_from([None, []]) | st.lists(header, min_size=1, max_size=2) | st.lists(header, min_size=1, max_size=2)
url = st.one_of(st.sampled_from([CONSUMER_URL, AGENT_URL, "ws://127.0.0.1/messaging/brand/", None]),
                token.map(lambda t: f"wss://127.0.0.1/ws_api/account/1/messaging/consumer/{t}?v=2"),
                token.map(lambda t: f"ws://127.0.0.1/a/{t}/b"))
client = st.sampled_from(["127.0.0.1:5000", "127.0.0.1:5001", "10.0.0.1:1", "[::1]:80", "nocolon", ":5", None])
REQUEST_TYPES = st.sampled_from(["InitConnection", ".ams.InitConnection", "xInitConnection", ".ams.aam.SubscribeAgentsState",
                                 ".ams.routing.UpdateRingState", ".ams.cm.AgentRequestConversation", "GetClock"])
auth_header = st.fixed_dictionaries({"type": st.sampled_from([".ams.headers.ConsumerAuthentication", "x"])},
                                    optional={"jwt": token | st.integers(-2**63, 2**64 - 1)})
init_headers = st.lists(auth_header | st.just("x"), max_size=2) | auth_header | st.none()


def open_record(draw, conn: str, t: float) -> dict:
    rec = {"rec": "open", "t": t, "conn": conn, "url": draw(url), "client": draw(client),
           "request_headers": draw(headers)}
    return {k: v for k, v in rec.items() if v is not None or draw(st.booleans())}


def close_record(draw, conn: str, t: float) -> dict:
    rec = {"rec": "close", "t": t, "conn": conn, "code": draw(st.sampled_from([1000, 1006, 4401, 4407, None])),
           "reason": draw(st.sampled_from(["", "bye", None])),
           "by": draw(st.sampled_from(["client", "server", "proxy", None, "other"]))}
    if draw(st.integers(0, 5)) == 0:
        rec["recorder_stopped"] = True
    return rec


@st.composite
def traffic(draw) -> list[dict]:
    """Records of connection traffic, the clock moving on by int or float steps (now and then back); a
    reconnect is a close and an open of the same id soon after (or just before)."""
    b, t = CaptureBuilder(), 0
    for _ in range(draw(st.integers(0, 40))):
        t += draw(st.integers(-1, 3) | st.floats(-0.1, 3, allow_nan=False) | st.sampled_from([0.0625, 0.05, 700]))
        conn = draw(CONNS)
        what = draw(st.sampled_from(["open", "reconnect", "reconnect", "c2s", "s2c", "ping", "close", "refused"]))
        if what == "open":
            b.record(open_record(draw, conn, t))
        elif what == "reconnect":
            b.record(close_record(draw, conn, t))
            t += draw(st.sampled_from([0, 0.0625, 0.5, 2, 30, -0.03, -0.07]))
            b.record(open_record(draw, conn, t))
        elif what == "c2s":
            b.c2s(conn, t, draw(st.fixed_dictionaries(
                {"kind": st.just("req"), "id": st.just("1"), "type": REQUEST_TYPES, "headers": init_headers})
                | st.just("not json")))
        elif what == "s2c":
            b.s2c(conn, t, {"kind": "notification", "type": "x", "body": draw(st.text(max_size=30))})
        elif what == "ping":
            b.record({"rec": draw(st.sampled_from(["ping", "pong"])), "t": t, "conn": conn,
                      "dir": draw(st.sampled_from(["c2s", "s2c", None]))})
        elif what == "close":
            b.record(close_record(draw, conn, t))
        else:
            b.record({"rec": "refused", "t": t, "conn": conn, "url": draw(url), "client": draw(client),
                      "status": draw(st.sampled_from([403, 502, None])), "error": draw(st.sampled_from(["no", None]))})
    return b.records


CONFIGS = st.builds(Config, min_reconnect_delay_s=st.sampled_from([1.0, 5.0, 5.0, 0.25, 1e-7]),
                    reconnect_window_s=st.sampled_from([600.0, 600.0, 600.0, 3.0, 0.0]))


def check_files(files: list[tuple[str, bytes]], analyzers=SETS[1], config: Config | None = None) -> None:
    with written(files) as paths:
        same(paths, analyzers, config)


def check_traffic(records: list[dict], config: Config, analyzers) -> None:
    check_files([("traffic.jsonl", b"".join(dumps(r) for r in records))], analyzers, config)


ANALYZER_SETS = st.sampled_from(SETS)


@fuzz_settings(DEFAULT_CASES)
@given(traffic(), CONFIGS, ANALYZER_SETS)
def test_fuzz_traffic(records, config, analyzers):
    check_traffic(records, config, analyzers)


@fuzz_settings(DEFAULT_CASES // 2)
@given(capture_files())
def test_fuzz_damaged_captures(files):
    check_files(files)


@pytest.mark.soak
@fuzz_settings(SOAK_CASES)
@given(traffic(), CONFIGS, ANALYZER_SETS)
def test_fuzz_traffic_soak(records, config, analyzers):
    check_traffic(records, config, analyzers)


@pytest.mark.soak
@fuzz_settings(SOAK_CASES)
@given(capture_files())
def test_fuzz_damaged_captures_soak(files):
    check_files(files)
