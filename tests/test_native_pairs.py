"""The native Pairs analyzer (core/src/pairs.rs) reading a capture and fed its records one at a time
(`test_native_engine.fed_engine`) gives the same answers exactly (its answers on fixed captures are the
retired Python analyzer's: tests/test_golden.py): the same violations in the same order (those its response
deadlines fire included, messages worded alike), the same `pairs` rows (an int time stays an int), none when
the table is not asked for, the same `requests` counts and the same latency histograms (native stats carry
each histogram's `LogHistogram.state()`, Python's None key written "\\x00none"). On every capture the tests
ship, on generated captures, on hand-built cases for every rule and branch, on a fuzz of request/response
traffic (ids reused and duplicated, responses of every type and code, InitConnection first or not, tokens in
the URL, in the Authorization header or in another header, times as ints and floats, clocks stepping back,
timeouts short and long) and on the damaged captures of tests/test_native_engine.py's fuzz."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from analysis import _core
from analysis.config import Config
from analysis.histogram import LogHistogram
from analysis.synth import CaptureBuilder
from sample_capture import generate
from test_fuzz_engine import fuzz_settings
from test_native_engine import ROOT, SHIPPED, assert_same, capture_files, written
from test_reliability_load import soak_size

SETS = [("pairs",), ("keepalive", "pairs", "rings")]  # alone, and in the engine's order with the other ported ones
NONE_KEY = "\x00none"
AGENT_URL = "wss://127.0.0.1/ws_api/account/1/messaging/brand/[redacted sha256:0123456789ab]?v=2"
CONSUMER_URL = "wss://127.0.0.1/ws_api/account/1/messaging/consumer?v=3"
MARKER = "[redacted sha256:0123456789ab]"
DEFAULT_CASES = 300
SOAK_CASES = soak_size(300, 10_000)


def native_key(type_: str | None) -> str:
    """The key of a request type's histogram in the native stats (core/src/pairs.rs)."""
    if type_ is None:
        return NONE_KEY
    return "\x00" + type_ if type_.startswith("\x00") else type_


def same(paths: list[str], analyzers=("pairs",), config: Config | None = None, tables=("pairs",)) -> dict | str:
    """Both roads' answers are equal, types included (`test_native_engine.assert_same`), histograms
    compared by their state."""
    return assert_same(paths, config, False, analyzers, tables)


def write(builder: CaptureBuilder, path: Path) -> str:
    builder.write(path)
    return str(path)


@pytest.mark.parametrize("analyzers", SETS, ids="+".join)
@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_captures(path, analyzers):
    same([str(path)], analyzers)


def test_generated_captures(tmp_path):
    sample = tmp_path / "sample.jsonl"
    generate(sample, seed=7)
    result = same([str(sample)], ("keepalive", "pairs", "rings"))
    assert result["tables"]["pairs"] and result["stats"]["requests"]["answered"] > 0
    demo = same([str(ROOT / "notebooks/data/demo.jsonl.gz")], ("keepalive", "pairs", "rings"))
    assert demo["stats"]["latency"]


def test_no_rows_unless_asked(tmp_path):
    """`mwtap analyze` does not ask for the pairs table: the core builds no row (and the stats stay)."""
    sample = tmp_path / "sample.jsonl"
    generate(sample, seed=8)
    result = same([str(sample)], tables=())
    assert result["tables"] == {} and result["stats"]["requests"]["total"] > 0


def test_histograms_rebuilt_from_native_state(tmp_path):
    """LogHistogram.from_state gives back the histogram the core kept of each request type's latencies:
    the state and percentiles of Python's own histogram of the `pairs` table's latencies."""
    sample = tmp_path / "sample.jsonl"
    generate(sample, seed=9)
    result = _core.analyze_native([str(sample)], None, ["pairs"], ["pairs"])
    latencies: dict = {}
    for row in result["tables"]["pairs"]:
        if row["latency_ms"] is not None:
            latencies.setdefault(native_key(row["type"]), []).append(row["latency_ms"])
    native = result["stats"]["latency"]
    assert native.keys() == latencies.keys() and len(native) > 1
    for key, values in latencies.items():
        rebuilt, own = LogHistogram.from_state(native[key]), LogHistogram.of(values)
        assert rebuilt.state() == own.state()
        assert [rebuilt.percentile(q) for q in (50, 90, 99)] == [own.percentile(q) for q in (50, 90, 99)]
    values = [-1.0, 0.0, 0.4, 3.0, 3.01, 250.0]
    assert LogHistogram.from_state(LogHistogram.of(values).state()).__dict__ == LogHistogram.of(values).__dict__


def req(id_, type_="GetClock", **body) -> dict:
    return {"kind": "req", "id": id_, "type": type_, "body": body}


def resp(req_id, type_="GetClock$Response", code=200, **extra) -> dict:
    message = {"kind": "resp", "reqId": req_id, "type": type_, "code": code, "body": {}}
    return {**message, **extra}


def test_pairing_cases(tmp_path):
    """Every rule and branch of the pairing: latency by type (None included), a duplicate id queued and
    answered by the response whose type fits, a type mismatch left unpaired, ids reused after their
    answer (reported once), orphans (no reqId, never sent, a second answer), invalid codes of every JSON
    type, error responses, timeouts and late answers, unanswered at a client's close, a server's close
    and the capture's end, KeepAlive never waited for."""
    b = CaptureBuilder()
    b.open("c", 0)
    b.c2s("c", 1, req("1"))
    b.s2c("c", 1.25, resp("1"))
    b.c2s("c", 2, req("2", ".ams.ms.PublishEvent"))
    b.c2s("c", 2, req("2", "cqm.SubscribeExConversations"))  # duplicate id, queued
    b.c2s("c", 3, req("2", "PublishEvent"))
    b.s2c("c", 4, resp("2", "SubscribeExConversationsResponse"))  # answers the queued subscription
    b.s2c("c", 4, resp("2", "GetClockResponse"))  # answers neither: left unpaired
    b.s2c("c", 5, resp("2", "PublishEvent$Response", 500))  # the head
    b.s2c("c", 5, resp("2", None))  # the last one, untyped
    b.c2s("c", 6, req("2", None))  # reused after its answer
    b.c2s("c", 6, {"kind": "req", "id": "3"})  # no type
    b.s2c("c", 6.5, resp("3", "StringResponse", 200))
    b.s2c("c", 7, resp("2", code="200"))
    b.c2s("c", 7, req("2", None))  # reused again: reported once
    b.s2c("c", 7, resp("2", code=None))
    b.s2c("c", 8, {"kind": "resp", "type": "x", "code": 200})  # no reqId
    b.s2c("c", 8, resp("9", code=True))  # never sent
    b.s2c("c", 8, resp("3", code=700))  # a second time
    b.s2c("c", 8, {"kind": "resp", "reqId": "3", "type": "x"})  # no code at all
    b.s2c("c", 8, resp("3", code=2.5e2))
    b.s2c("c", 8, resp("3", code="\u00e9'x"))
    b.c2s("c", 10, req("k", "KeepAlive"))
    b.c2s("c", 11, req("t1"))
    b.c2s("c", 12, req("t2", "GetClock"))
    b.s2c("c", 60, resp("t1"))  # 49 s: late
    b.c2s("c", 61, req("open1", "QueryMessages"))
    b.close("c", 65.5)  # by the client
    b.open("s", 100)
    b.c2s("s", 100, req("x", ".ams.aam.SubscribeAgentsState"))
    b.close("s", 101, by="server")
    b.open("e", 200)
    b.c2s("e", 200, req("y"))
    b.c2s("e", 229.5, req("z"))
    b.c2s("e", 300, req("w"))  # 30 s after this one: the capture ends first
    result = same([write(b, tmp_path / "cases.jsonl")], config=Config(response_timeout_s=30.0))
    rules = [v["rule"] for v in result["violations"]]
    for rule in ("duplicate-request-id", "response-type-mismatch", "reused-request-id", "orphan-response",
                 "invalid-response-code", "unanswered-request"):
        assert rule in rules
    messages = [v["message"] for v in result["violations"]]
    assert "response has code \"\\xe9'x\" is not an HTTP status (100-599)" in messages
    assert "response has code 250.0 is not an HTTP status (100-599)" in messages
    assert ("GetClockResponse (reqId '2') cannot answer request 2 (.ams.ms.PublishEvent), request 4 (PublishEvent), "
            "outstanding with that id; left unpaired") in messages
    assert rules.count("reused-request-id") == 1
    statuses = [(r["id"], r["status"], r["late"]) for r in result["tables"]["pairs"]]
    assert ("t1", "answered", True) in statuses and ("w", "open-at-end", False) in statuses
    assert ("k", "unanswered", False) in statuses  # KeepAlive: counted, never waited for
    assert NONE_KEY in result["stats"]["latency"]


def test_init_connection_cases(tmp_path):
    """request-before-init: without InitConnection, before its response, answered (warning), refused
    (error, an invalid code too), timed out, unanswered at a close and at the capture's end, a
    no-response type judged at once; the token in another header named; InitConnection refused keeps
    the connection waiting; a token in the URL, an implicit open and an Authorization header exempt it."""
    b = CaptureBuilder()
    b.record({"rec": "open", "t": 0, "conn": "a", "url": CONSUMER_URL,
              "request_headers": [["X-LP-Token", f"jwt {MARKER}"], ["Cookie", MARKER]]})
    b.c2s("a", 1, req("1", ".GetClock"))  # exempt
    b.c2s("a", 1, req("2", "PublishEvent"))  # without InitConnection
    b.c2s("a", 2, req("3", ".ams.InitConnection"))
    b.c2s("a", 2, req("4", "SubscribeExConversations"))  # before the InitConnection response
    b.c2s("a", 2, req("5", "KeepAlive"))  # exempt by default
    b.c2s("a", 2, req("6", "Ping"))  # a no-response type in this config, judged at once
    b.c2s("a", 2, req("7", "QueryMessages"))
    b.c2s("a", 2, req("8", "GetUserProfile"))
    b.s2c("a", 3, resp("2", "PublishEventResponse", 200))
    b.s2c("a", 3, resp("4", "StringResponse", 401))
    b.s2c("a", 3, resp("7", "QueryMessages$Response", code="x"))
    b.s2c("a", 4, resp("3", "StringResponse", 403))  # refused: still waiting
    b.c2s("a", 5, req("9", "PublishEvent"))
    b.c2s("a", 5, req("10", "InitConnection"))
    b.s2c("a", 6, resp("10", "StringResponse", 200))
    b.c2s("a", 7, req("11", "PublishEvent"))  # fine now
    b.c2s("a", 8, req("12", "PublishEvent"))
    b.close("a", 9, by="server")
    for conn, kw in (("url", {"url": "wss://127.0.0.1/ws_api/account/1/messaging/consumer/eyJa.eyJb.c?v=2"}),
                     ("auth", {}), ("agent", {"url": AGENT_URL})):
        b.open(conn, 20, token=None if conn != "auth" else "t", **kw)
        b.c2s(conn, 21, req("1", "PublishEvent"))
    b.c2s("implicit", 22, req("1", "PublishEvent"))
    b.open("late", 30, token=None)
    b.c2s("late", 30, req("1", "PublishEvent"))  # no answer: times out
    b.s2c("late", 45, resp("1", "PublishEventResponse"))  # late: judged at the timeout already
    b.c2s("late", 46, req("2", "PublishEvent"))  # open when the capture ends
    b.c2s("late", 46, req("3", None))
    config = Config(response_timeout_s=12.5, no_response_types=("KeepAlive", "Ping"))
    result = same([write(b, tmp_path / "init.jsonl")], config=config)
    early = [(v["conn"], v["severity"], v["message"]) for v in result["violations"] if v["rule"] == "request-before-init"]
    assert {conn for conn, _, _ in early} == {"a", "late"}
    assert ("a", "warning", "PublishEvent sent without InitConnection on a connection without an Authorization header "
            "(its token was in header 'X-LP-Token'); this server answered it 200, but the API reference allows "
            "rejecting such requests") in early
    assert any(m.endswith("; refused with an invalid code") for _, _, m in early)
    assert any(m.endswith(", and no response after 12.5 s") for _, _, m in early)
    assert any(m.endswith(", still unanswered when the capture ended") for _, _, m in early)
    assert any(m.endswith(", and unanswered when the connection closed") for _, _, m in early)


def test_answered_ids_forgotten_in_batches(tmp_path):
    """reused-request-id remembers ANSWERED_IDS_KEPT ids per connection at least, forgotten in the same
    batches as the closed connections: an id answered long ago is reused unreported, a recent one is reported."""
    b = CaptureBuilder()
    b.open("c", 0)
    total = _core.ANSWERED_IDS_KEPT + _core.ANSWERED_IDS_KEPT // 4 + 1
    for i in range(total):
        b.c2s("c", i, req(str(i)))
        b.s2c("c", i + 0.5, resp(str(i)))
    for reused in ("0", str(total - _core.ANSWERED_IDS_KEPT - 1), str(total - _core.ANSWERED_IDS_KEPT), str(total - 1)):
        b.c2s("c", total, req(reused))
    result = same([write(b, tmp_path / "ids.jsonl")], tables=())
    reported = [v["message"] for v in result["violations"] if v["rule"] == "reused-request-id"]
    assert reported == [f"request id '{i}' reused after it was answered (reported once per id)"
                        for i in (total - _core.ANSWERED_IDS_KEPT, total - 1)]


CONNS = st.sampled_from(["a", "b", "c"])
IDS = st.sampled_from(["1", "2", "3", "1", "2", "3", "\u00e9", "", None])
REQUEST_TYPES = st.sampled_from(["GetClock", ".GetClock", "InitConnection", ".ams.InitConnection", "KeepAlive",
                                 ".ams.ms.PublishEvent", "cqm.SubscribeExConversations", "SubscribeMessagingEvents",
                                 "QueryMessages", "\x00none", None])
RESPONSE_TYPES = st.sampled_from(["GetClock$Response", "PublishEventResponse", "SubscribeExConversationsResponse",
                                  "GenericSubscribeResponse", "StringResponse", "ReqBody$StringResp", "x", None])
CODES = st.sampled_from([200] * 8 + [201, 400, 401, 500] * 2 + [99, 600, None, "200", 200.0, True, "absent"])
HEADERS = st.sampled_from([[], [["Authorization", f"jwt {MARKER}"]], [["X-Token", MARKER]],
                           [["X-Token", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"]], [["Cookie", MARKER]], None])
URLS = st.sampled_from([CONSUMER_URL, AGENT_URL, "wss://127.0.0.1/ws_api/account/1/messaging/consumer/tok?v=2", None])


@st.composite
def traffic(draw) -> list[dict]:
    """Records of request/response traffic (and ring offers, whose deadlines share the timers), the clock
    moving on by int or float steps (now and then back)."""
    b, t, sent = CaptureBuilder(), 0, []
    opens = [("open", conn) for conn in ("a", "b", "c") if draw(st.booleans())]  # others open implicitly
    for what, conn in opens + [(None, None)] * draw(st.integers(0, 60)):
        if what is None:
            t += draw(st.integers(-1, 2) | st.floats(-0.5, 2, allow_nan=False) | st.sampled_from([0.05] * 5 + [31]))
            conn, what = draw(CONNS), draw(st.sampled_from(["open"] * 2 + ["req"] * 4 + ["resp"] * 4 + ["close", "ring"]))
        if what == "open":
            rec = {"rec": "open", "t": t, "conn": conn, "url": draw(URLS), "request_headers": draw(HEADERS)}
            b.record({k: v for k, v in rec.items() if v is not None})
        elif what == "req":
            message = {"kind": "req", "type": draw(REQUEST_TYPES), "id": draw(IDS)}
            sent.append((conn, message["id"]))
            b.c2s(conn, t, {k: v for k, v in message.items() if v is not None or draw(st.booleans())})
        elif what == "resp":
            req_id = draw(IDS)
            if sent and draw(st.booleans()):  # an answer to one of the last requests
                conn, req_id = draw(st.sampled_from(sent[-3:]))
            message = {"kind": "resp", "type": draw(RESPONSE_TYPES), "reqId": req_id, "code": draw(CODES)}
            if message["code"] == "absent":
                del message["code"]
            b.s2c(conn, t, {k: v for k, v in message.items() if v is not None or draw(st.booleans())})
        elif what == "ring":  # a deadline of Rings, often of the same delay as the response timeout
            ring = {"ringId": draw(st.sampled_from(["r1", "r2"])), "ringState": "WAITING",
                    "ringExpiration": draw(st.sampled_from([None, 30000, 5000, 500]))}
            b.s2c(conn, t, {"kind": "notification", "type": ".ams.routing.RoutingTaskNotification",
                            "body": {"changes": [{"type": "UPSERT", "result": {"ringsDetails": [ring]}}]}})
        else:
            b.record({"rec": "close", "t": t, "conn": conn, "code": 1000, "reason": None,
                      "by": draw(st.sampled_from(["client", "server", None])), "recorder_stopped": draw(st.booleans())})
    return b.records


def check_traffic(records: list[dict], config: Config) -> None:
    builder = CaptureBuilder()
    builder.records = records
    with tempfile.TemporaryDirectory() as tmp:
        for analyzers in SETS:
            same([write(builder, Path(tmp) / "traffic.jsonl")], analyzers, config)


def check_damaged(files: list[tuple[str, bytes]]) -> None:
    with written(files) as paths:
        same(paths, ("keepalive", "pairs", "rings"))


CONFIGS = st.sampled_from([Config(), Config(response_timeout_s=5.0), Config(response_timeout_s=0.5),
                           Config(response_timeout_s=12.5, no_response_types=("KeepAlive", "GetClock"),
                                  init_exempt_types=("InitConnection",))])


@fuzz_settings(DEFAULT_CASES)
@given(traffic(), CONFIGS)
def test_fuzz_traffic(records, config):
    check_traffic(records, config)


@fuzz_settings(DEFAULT_CASES // 2)
@given(capture_files())
def test_fuzz_damaged_captures(files):
    check_damaged(files)


@pytest.mark.soak
@fuzz_settings(SOAK_CASES)
@given(traffic(), CONFIGS)
def test_fuzz_traffic_soak(records, config):
    check_traffic(records, config)


@pytest.mark.soak
@fuzz_settings(SOAK_CASES)
@given(capture_files())
def test_fuzz_damaged_captures_soak(files):
    check_damaged(files)
