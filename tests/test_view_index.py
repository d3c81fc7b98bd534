"""The index behind `mwtap view` (pure): the engine's verdict, pairs, streams, ACCEPT/READ links,
reconnects, filters, byte offsets that read back each record, gzip and a growing file."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import orjson
import pytest

from analysis import analyze
from analysis.capture import CaptureError
from analysis.view.build import build
from analysis.reader import CaptureSet
from analysis.view.index import FIXED, KINDS, ViewIndex
from analysis.view.queries import Filter, Queries
from analysis.view.source import Sources
from conftest import REPO
from sample_capture import generate


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("view") / "sample.jsonl"
    generate(path)
    return path


def open_view(*paths) -> tuple[ViewIndex, Queries, Sources]:
    sources = Sources([str(p) for p in paths])
    index = build(sources)
    return index, Queries(index, sources.paths, sources.names), sources


def followed(path) -> tuple[ViewIndex, list]:
    """The index as `mwtap view --follow` builds it: a record at a time, placed by `ViewIndex.locate`
    and fed to its `_core.Engine`; and the damage its reader met."""
    index, sources = ViewIndex(), Sources([str(path)])
    capture, records = sources.records(0)
    for rec, file, offset, line in records:
        index.add(rec, file, offset, line)
    index.finish()
    return index, capture.damage


def test_the_core_pass_and_following_give_the_same_index(sample, tmp_path):
    """Built in one pass of the core (core/src/locations.rs) or a record at a time as when following
    (`ViewIndex.locate`): every column, connection, stream, type and violation the same; damaged
    lines reported either way. With records each side could read its own way: a frame number past
    32 bits, a time that is a bool, a connection that only drops, an unknown kind, notifications
    without a subscriptionId whose first event names a dialog (with a quote), none, or a number."""
    damaged = tmp_path / "damaged.jsonl"
    lines = sample.read_bytes().splitlines(keepends=True)
    last = orjson.loads(lines[-1])
    odd = [{"rec": "msg", "t": last["t"] + 1, "conn": last["conn"], "n": 1 << 40, "dir": "c2s", "op": "text",
            "kind": "req", "id": "far", "type": "GetClock", "size": 30, "text": "{}"},
           {"rec": "ping", "t": True, "conn": last["conn"], "n": 3},
           {"rec": "drop", "t": last["t"] + 2, "conn": "only-dropped", "count": 3},
           {"rec": "future", "t": last["t"] + 3, "conn": last["conn"]},
           *({"rec": "msg", "t": last["t"] + 4, "conn": last["conn"], "n": 1 << 20, "dir": "s2c", "op": "text",
              "kind": "notification", "type": "ms.MessagingEventNotification", "events": events, "size": 2,
              "text": "{}"} for events in ([['dialog "x"', "ContentEvent"], ["other"]], [[]], [[7, "d"]]))]
    # Lines orjson refuses: the core reads those with a number past a double (1e400) in a field it
    # does not decode, and refuses those with one in a field it does; the follower's reader agrees.
    past_a_double = [
        b'{"rec":"msg","t":%d,"conn":"%s","n":7,"dir":"c2s","op":"text","kind":"req","id":"x1","type":"GetClock",'
        b'"size":2,"text":"{}","x":1e400,"y":[[-1e400]]}\n' % (int(last["t"]) + 5, last["conn"].encode()),
        b'{"rec":"ping","t":1e400,"conn":"%s"}\n' % last["conn"].encode(),
        b'{"rec":"msg","t":1,"conn":"%s","n":8,"dir":"c2s","size":1e400}\n' % last["conn"].encode(),
        # deeper than orjson writes (254 levels): the follower feeds the line as read, not re-encoded
        b'{"rec":"msg","t":%d,"conn":"%s","n":9,"dir":"c2s","op":"text","kind":"req","id":"x2","type":"GetClock",'
        b'"size":2,"text":"{}","y":%s1e400%s}\n' % (int(last["t"]) + 6, last["conn"].encode(), b"[" * 300, b"]" * 300),
    ]
    damaged.write_bytes(b"".join(lines[:50]) + b"{not json\n" + b"".join(lines[50:])
                        + b"".join(orjson.dumps(rec) + b"\n" for rec in odd) + b"".join(past_a_double))
    built, _, sources = open_view(damaged)
    follow, follow_damage = followed(damaged)
    assert len(built.columns) == len(follow.columns) > 100
    for name in ("peer", "stream", "severity", *(name for name, _ in FIXED)):
        assert (built.columns.view(name) == follow.columns.view(name)).all(), name
    assert built.violations == follow.violations and built.violation_total == follow.violation_total > 0
    facts = ("number", "conn", "t_open", "url", "client", "identity", "closed", "refused", "row", "prev", "next",
             "linked_by", "counts", "streams")
    assert [[getattr(c, f) for f in facts] + [list(c.rows), list(c.msgs)] for c in built.connections] == \
        [[getattr(c, f) for f in facts] + [list(c.rows), list(c.msgs)] for c in follow.connections]
    assert (built.types, built.streams, built.stream_sizes, built.last_t, built._subscribe_types) == \
        (follow.types, follow.streams, follow.stream_sizes, follow.last_t, follow._subscribe_types)
    assert any(c.conn == "only-dropped" and not c.rows for c in built.connections)
    assert ("dialog", 'dialog "x"') in {(kind, key) for _, kind, key in built.streams}
    assert [str(d) for d in sources.damage] == [str(d) for d in follow_damage]
    end = len(lines) + 1 + len(odd)
    assert [(d.path, d.line, d.kind) for d in sources.damage] == \
        [(str(damaged), 51, "invalid JSON"), (str(damaged), end + 2, "invalid JSON"),
         (str(damaged), end + 3, "invalid JSON")]
    # The records holding 1e400 are the last two placed, and their frames read back (`json` reads them).
    offsets, size = built.columns.view("offset"), damaged.stat().st_size
    assert list(offsets[-2:]) == [size - sum(map(len, past_a_double)), size - len(past_a_double[-1])]
    queries = Queries(built, sources.paths, sources.names)
    assert [queries.record(len(built.columns) - k)["id"] for k in (2, 1)] == ["x1", "x2"]


def test_several_files_are_read_back_in_the_order_analysis_reads_them(sample, tmp_path):
    """Two recordings (one of them gzip) merged by time, as analysis.reader.CaptureSet merges them:
    each record's file and offset read back that record."""
    lines = sample.read_bytes().splitlines()
    header = orjson.loads(lines[0])
    other = [orjson.dumps({**header, "recording": "other"})]
    for line in lines[1:]:
        rec = orjson.loads(line)
        other.append(orjson.dumps({**rec, "t": rec["t"] + 0.25, "conn": "other-" + rec["conn"]}))
    gz = tmp_path / "other.jsonl.gz"
    with gzip.open(gz, "wb") as f:
        f.write(b"\n".join(other) + b"\n")
    index, q, sources = open_view(sample, gz)
    expected = list(CaptureSet([str(sample), str(gz)]).records())
    assert len(index.columns) == len(expected) == 2 * (len(lines) - 1)
    assert {index.columns.file[g] for g in range(len(expected))} == {0, 1}
    for g in range(0, len(expected), 3):
        assert q.record(g) == expected[g]
    sources.close()


def test_offsets_read_back_every_record_and_verdict_matches_analyze(sample):
    index, q, _ = open_view(sample)
    lines = [orjson.loads(line) for line in sample.read_bytes().splitlines()[1:]]
    assert len(index.columns) == len(lines)
    for g in range(0, len(lines), 7):
        assert q.record(g) == lines[g]
    summary, _ = analyze([str(sample)])
    assert index.violation_total == summary["violations_total"]
    counts = {}
    for v in index.violations:
        counts.setdefault(v[0], {}).setdefault(v[1], 0)
        counts[v[0]][v[1]] += 1
    assert counts == summary["violation_counts"]


def test_pairs_streams_and_acks(sample):
    index, q, _ = open_view(sample)
    cols = index.columns
    requests = [g for g in range(len(cols)) if KINDS[cols.kind[g]] == "req" and cols.peer[g] >= 0]
    assert requests
    for g in requests:
        resp = cols.peer[g]
        assert cols.peer[resp] == g and KINDS[cols.kind[resp]] == "resp"
        assert q.record(resp)["reqId"] == q.record(g)["id"]
    subscribe = next(g for g in requests if index.types[cols.type[g]] == "cqm.SubscribeExConversations")
    detail = q.frame(cols.peer[subscribe])
    stream = detail["stream_info"]["number"]
    members = q.frames(detail["connection"], 0, 500, Filter(stream=stream))["rows"]
    assert {r["g"] for r in members} >= {subscribe, cols.peer[subscribe]}
    assert all(q.record(r["g"]).get("subscriptionId") == detail["stream_info"]["id"] for r in members
               if r["kind"] == "notification")
    agent = next(g for g in range(len(cols)) if any(e[6] == "ASSIGNED_AGENT" and e[3] == "ContentEvent"
                                                    for e in q.record(g).get("events") or []))
    links = q.frame(agent)["links"]
    accept = q.record(links["accept"])
    assert accept["event"][:2] == ["AcceptStatusEvent", "ACCEPT"]
    assert q.record(links["read"])["event"][1] == "READ"
    assert q.frame(links["accept"])["links"]["message"] == agent


def test_violation_frames_reconnects_and_grouping(sample):
    index, q, _ = open_view(sample)
    bad = next(v for v in index.violations if v[0] == "invalid-json")
    assert q.record(bad[4])["text"].startswith('{"kind":"req","type":"ms.PublishEvent"')
    groups = q.violations()
    assert groups[0]["rules"][0]["severity"] == "error"
    assert "invalid-json" in {r["rule"] for r in groups[0]["rules"]}
    assert all(r["explanation"] for g in groups for r in g["rules"])
    consumers = q.consumers()["consumers"]
    assert sum(len(chain) for c in consumers for chain in c["chains"]) == len(index.connections)
    worst = consumers[0]
    assert [len(chain) for chain in worst["chains"]] == [3]  # 4401, then 1006: one chain of three
    first, second, _ = worst["chains"][0]
    close = index.connections[first["number"]].rows[-1]
    assert q.frame(close)["links"]["reconnect"]["connection"] == second["number"]


def test_filters(sample):
    index, q, _ = open_view(sample)
    everything = q.frames(0, 0, 500, Filter())
    clocks = q.frames(0, 0, 500, Filter(type="getclock"))
    assert 0 < clocks["total"] < everything["total"]
    assert all("GetClock" in r["type"] for r in clocks["rows"])
    texts = q.frames(0, 0, 500, Filter(text="ONERROR=alert"))
    assert len(texts["rows"]) == 1 and "onerror" in q.record(texts["rows"][0]["g"])["text"]
    c2s = q.frames(0, 0, 500, Filter(dir="c2s", kind="req"))
    assert all(r["dir"] == "c2s" and r["kind"] == "req" for r in c2s["rows"])
    rule = q.frames(0, 0, 500, Filter(rule="binary-frame"))
    assert [r["preview"] for r in rule["rows"]] == ["(binary, 8 bytes)"]
    t0 = everything["rows"][5]["t"]
    assert all(r["t"] >= t0 for r in q.frames(0, 0, 500, Filter(t0=t0))["rows"])
    g = clocks["rows"][-1]["g"]
    assert q.position(0, g, Filter(type="getclock")) == clocks["total"] - 1
    timeline = q.timeline(0, None, None, 20)
    assert sum(timeline["series"]["c2s"]) + sum(timeline["series"]["s2c"]) == len(index.connections[0].msgs)
    assert timeline["silences"] and timeline["violations"]


def test_gzip_is_decompressed_once_and_removed(sample, tmp_path):
    gz = tmp_path / "sample.jsonl.gz"
    with open(sample, "rb") as src, gzip.open(gz, "wb") as dst:
        shutil.copyfileobj(src, dst)
    index, q, sources = open_view(gz)
    plain = Path(sources.paths[0])
    assert plain != gz and plain.exists() and oct(plain.parent.stat().st_mode & 0o777) == "0o700"
    assert q.record(5) == orjson.loads(sample.read_bytes().splitlines()[6])
    q.close()
    sources.close()
    assert not plain.exists()


def test_not_a_capture(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"hello": 1}\n')
    with pytest.raises(CaptureError, match="bad.jsonl:1"):
        Sources([str(bad)]).records(0)


def test_growing_file_partial_last_line(sample, tmp_path):
    """A line written in two pieces is indexed once, whole, when its newline arrives."""
    growing = tmp_path / "growing.jsonl"
    lines = sample.read_bytes().splitlines(keepends=True)
    growing.write_bytes(b"".join(lines[:40]) + lines[40][:15])
    sources = Sources([str(growing)])
    index = ViewIndex()
    waits = []

    def wait() -> bool:
        waits.append(len(index.columns))
        if len(waits) == 1:
            with growing.open("ab") as f:
                f.write(lines[40][15:] + lines[41])
            return True
        return False

    _, records = sources.records(0, wait)
    for rec, file, offset, line in records:
        index.add(rec, file, offset, line)
    assert waits == [39, 41]
    q = Queries(index, sources.paths, sources.names)
    assert q.record(39) == orjson.loads(lines[40]) and q.record(40) == orjson.loads(lines[41])


def test_text_filter_reads_in_chunks(sample, monkeypatch):
    """The text filter reads the file a chunk at a time: the same frames whatever the chunk size."""
    from analysis.view import queries
    index, q, _ = open_view(sample)
    wanted = Filter(text="getclock")
    whole = [r["g"] for r in q.frames(0, 0, 500, wanted)["rows"]]
    assert whole and all("getclock" in orjson.dumps(q.record(g)).decode().lower() for g in whole)
    monkeypatch.setattr(queries, "SEARCH_CHUNK", 300)  # about two lines a chunk
    q._filtered.clear()
    assert [r["g"] for r in q.frames(0, 0, 500, wanted)["rows"]] == whole


def test_huge_payload_is_cut_for_the_page(tmp_path, monkeypatch):
    from analysis.view import queries
    from analysis.synth import CaptureBuilder
    b = CaptureBuilder(recording="huge")
    b.open("c", 1.0)
    b.c2s("c", 1.1, {"kind": "req", "id": "1", "type": "GetClock", "body": {"pad": "x" * 5000}})
    path = tmp_path / "huge.jsonl"
    b.write(path)
    monkeypatch.setattr(queries, "PAYLOAD_SHOWN", 1000)
    _, q, _ = open_view(path)
    shown = q.frame(1)["payload"]
    assert len(shown) < 1100 and shown.endswith("characters)") and "of 5,0" in shown


def test_every_rule_is_explained():
    """The violations panel explains every rule the engine can report."""
    from analysis.rules import RULES
    from analysis.explain import EXPLANATIONS
    assert set(EXPLANATIONS) == set(RULES)


def test_records_are_placed_only_while_a_capture_is_read_by_the_core(sample):
    """`Locations` takes what the core reads from capture files: not HAR or flow files (fed a record at
    a time), and not without batches (where the pairs' links would have gone)."""
    from analysis import _core
    from analysis.config import Config
    from analysis.load import streamed
    flows = Path(__file__).parent / "data" / "flows-v7-websocket.mitm"
    with pytest.raises(ValueError, match="capture files"):
        streamed([str(flows)], Config(), (), lambda table, batch: None, locations=_core.Locations(10))
    with pytest.raises(ValueError, match="on_batch"):
        _core.Analysis([str(sample)]).run(locations=_core.Locations(10))
    with pytest.raises(ValueError, match="pair_links"):
        _core.Analysis([str(sample)]).run(tables=["pair_links"])


def test_a_number_past_a_double_in_a_field_the_core_skips(sample, tmp_path):
    """The core reads an open record holding 1e400 in a field it does not decode (orjson refuses the
    line): the view still shows that connection as the analysis sees it."""
    lines = sample.read_bytes().splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if orjson.loads(line).get("rec") == "open")
    odd = tmp_path / "odd.jsonl"
    odd.write_bytes(b"".join(lines[:at]) + lines[at].rstrip(b"}\n") + b',"x":1e400}\n' + b"".join(lines[at + 1:]))
    index, _, sources = open_view(odd)
    opened = orjson.loads(lines[at])
    c = index.by_conn[opened["conn"]]
    assert (c.url, c.client, c.t_open) == (opened.get("url"), opened.get("client"), opened["t"])
    assert len(index.columns) == len(lines) - 1 and not sources.damage


def test_violation_groups_count_as_the_verdict():
    """Each (consumer, rule) group counts its findings at its worst severity and the lower ones apart, as
    the verdict of `mwtap analyze` does (the demo: 9 missing-accept warnings, and one more as info)."""
    demo = REPO / "notebooks" / "data" / "demo.jsonl.gz"
    _, q, _ = open_view(demo)
    viewed = {(g["consumer"], r["rule"]): (r["severity"], r["count"], r["lower"], r["connections"])
              for g in q.violations() for r in g["rules"]}
    summary, _ = analyze(demo)
    verdict = {(f["consumer"], f["rule"]): (f["severity"], f["count"], f["lower"], f["connections"])
               for f in summary["verdict"]["findings"]}
    assert viewed == verdict and ("warning", 9, {"info": 1}, 2) in viewed.values()
