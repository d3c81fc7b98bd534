"""`mwtap analyze --jobs N` / `--dask`: the summary is identical (sort orders included) to the
single-process run, on an input whose rules span files: rotated parts of one recording, a reconnect
chain across recordings, deadlines firing after a recording's last record, connections still open
at the end of the input."""

from __future__ import annotations

import subprocess

import orjson
import pytest

import analysis
from analysis import Config
from analysis.parallel import analyze as analyze_parallel
from analysis.parallel.plan import partitions, survey
from analysis.synth import CaptureBuilder
from conftest import BIN
from recorder.dask_workers import DaskWorkers

T = 1_795_600_000.0
HOUR = 3600.0


def consumer_session(b: CaptureBuilder, conn: str, t: float, token: str, *, requests: int = 12,
                     unanswered: bool = False, close: tuple | None = (1000, "bye", "client")) -> float:
    """A consumer: subscribe, GetClocks, one messaging event it never accepts, maybe an unanswered
    request (its deadline fires later) and a close (None: still open when the capture ends)."""
    b.open(conn, t, token=token, client=f"10.1.{len(conn)}.{hash(conn) % 200}:5000")
    b.c2s(conn, t + 0.01, {"kind": "req", "id": "s", "type": "cqm.SubscribeExConversations", "body": {}})
    b.s2c(conn, t + 0.05, {"kind": "resp", "reqId": "s", "code": 200, "type": "GenericSubscribeResponse",
                           "body": {"subscriptionId": f"sub-{conn}"}})
    for i in range(requests):
        b.c2s(conn, t + 0.1 + i, {"kind": "req", "id": str(i), "type": "GetClock"})
        b.s2c(conn, t + 0.13 + i + 0.01 * (i % 3), {"kind": "resp", "reqId": str(i), "code": 200 if i % 5 else 503,
                                                     "type": "GetClockResponse"})
    t += requests + 0.5
    b.s2c(conn, t, {"kind": "notification", "type": "ms.MessagingEventNotification", "body": {"changes": [
        {"sequence": 1, "originatorId": "agent-1", "originatorMetadata": {"id": "agent-1", "role": "ASSIGNED_AGENT"},
         "serverTimestamp": int(t * 1000), "dialogId": f"dialog-{conn}",
         "event": {"type": "ContentEvent", "message": "hi"}}]}})
    if unanswered:
        b.c2s(conn, t + 0.2, {"kind": "req", "id": "lost", "type": "cm.ConsumerRequestConversation"})
    t += 1
    if close:
        b.close(conn, t, *close)
    return t


def write_recording(path, recording: str, t0: float, sessions, part: int = 1) -> None:
    b = CaptureBuilder(t0=t0, recording=recording, part=part)
    for session in sessions:
        session(b)
    b.write(path, gz=str(path).endswith(".gz"))


@pytest.fixture(scope="module")
def multi_file_input(tmp_path_factory):
    d = tmp_path_factory.mktemp("multi")
    files = []

    def recording(name: str, t0: float, *sessions, part: int = 1, recording_id: str | None = None):
        path = d / name
        write_recording(path, recording_id or name, t0, sessions, part)
        files.append(str(path))

    # A: two rotated parts; a connection spans them, a 4401 and a reconnect with the same token.
    recording("a.jsonl", T, lambda b: consumer_session(b, "a1", T, "tok-a", close=(4401, "expired", "server")),
              lambda b: b.open("a2", T + 14, token="tok-a"), recording_id="rec-a")
    recording("a.part2.jsonl", T + 14, lambda b: consumer_session(b, "a3", T + 15, "tok-a3", unanswered=True),
              lambda b: b.c2s("a2", T + 15, {"kind": "req", "id": "1", "type": "GetClock"}),
              lambda b: b.close("a2", T + 16, 1006, None, "client"), part=2, recording_id="rec-a")
    # B: a request whose deadline passes only after B's last record, and a connection left open.
    recording("b.jsonl", T + HOUR, lambda b: consumer_session(b, "b1", T + HOUR, "tok-b", unanswered=True),
              lambda b: consumer_session(b, "b2", T + HOUR + 1, "tok-b2", close=None))
    # C and D: D reconnects a token of C, so both go to one partition. C is gzipped.
    recording("c.jsonl.gz", T + 2 * HOUR, lambda b: consumer_session(b, "c1", T + 2 * HOUR, "tok-c",
                                                                  close=(1011, "restart", "server")))
    recording("d.jsonl", T + 2 * HOUR + 30, lambda b: consumer_session(b, "d1", T + 2 * HOUR + 13.8, "tok-c",
                                                                       unanswered=True, close=None))
    # E: a plain late recording, listed before the others in the input.
    recording("e.jsonl", T + 3 * HOUR, lambda b: consumer_session(b, "e1", T + 3 * HOUR, "tok-e", requests=40))
    files.insert(0, files.pop())
    return files


def as_json(summary: dict) -> bytes:
    return orjson.dumps(summary)


def test_the_input_splits_into_partitions_that_keep_related_files_together(multi_file_input):
    surveys = [survey(i, path) for i, path in enumerate(multi_file_input)]
    plan = partitions(surveys, gap=600)
    names = [[path.rsplit("/", 1)[1] for _, path in part.files] for part in plan]
    assert names == [["a.jsonl", "a.part2.jsonl"], ["b.jsonl"], ["c.jsonl.gz", "d.jsonl"], ["e.jsonl"]]
    assert len(partitions(surveys, gap=2 * HOUR)) == 1  # recordings closer than the gap are not split


def test_jobs_give_exactly_the_single_process_summary(multi_file_input):
    config = Config(max_violations=5)  # the cap keeps the worst: the merge must keep the same ones
    single, damage = analysis.analyze(multi_file_input, config)
    rules = {v["rule"] for v in analysis.analyze(multi_file_input)[0]["violations"]}
    assert {"token-not-refreshed", "unanswered-request", "missing-accept", "fast-reconnect"} <= rules
    assert any(c["state"] == "open-at-end" for c in single["connections"])
    for jobs in (2, 3):
        parallel, parallel_damage = analyze_parallel(multi_file_input, config, jobs=jobs)
        assert as_json(parallel) == as_json(single) and parallel_damage == damage


def test_recordings_far_apart_that_share_a_token_are_still_linked(multi_file_input, tmp_path):
    """A consumer reconnecting a day later with the token of a 4401-closed connection of recording A:
    the plan puts them apart by time, the runs show the shared token, and the result stays exact."""
    late = tmp_path / "late.jsonl"
    write_recording(late, "late", T + 24 * HOUR,
                    [lambda b: consumer_session(b, "late1", T + 24 * HOUR, "tok-a3", requests=3)])
    paths = [*multi_file_input, str(late)]
    single, _ = analysis.analyze(paths)
    [link] = [c for c in single["connections"] if c["conn"] == "late1"]
    assert link["prev_conn"] == "a3"
    assert as_json(analyze_parallel(paths, jobs=2)[0]) == as_json(single)


def test_unknown_record_kinds_are_bounded_over_all_files_as_in_one_process(tmp_path):
    """Two recordings far apart, 15 made-up record kinds each: one process names the first 20 and
    counts the rest under one entry; the merge of the partitions must say the same."""
    paths = []
    for i, name in enumerate(("x", "y")):
        path = tmp_path / f"{name}.jsonl"
        b = CaptureBuilder(recording=name)
        b.open(f"{name}1", T + i * 24 * HOUR, token=f"tok-{name}")  # unrelated: two partitions
        for k in range(15):
            b.record({"rec": f"kind-{name}-{k}", "t": T + i * 24 * HOUR + 1})
        b.close(f"{name}1", T + i * 24 * HOUR + 2)
        b.write(path)
        paths.append(str(path))
    single, _ = analysis.analyze(paths)
    assert len(single["capture"]["unknown_records"]) == 21
    assert as_json(analyze_parallel(paths, jobs=2)[0]) == as_json(single)


def test_cli_jobs_1_and_jobs_2_print_the_same_json(multi_file_input):
    outputs = [subprocess.run([str(BIN / "mwtap"), "analyze", "--format", "json", "--jobs", jobs, *multi_file_input],
                              capture_output=True, timeout=120) for jobs in ("1", "2")]
    assert [o.returncode for o in outputs] == [0, 0], outputs[1].stderr
    assert outputs[0].stdout == outputs[1].stdout and b'"token-not-refreshed"' in outputs[0].stdout


def test_a_bad_file_among_many_is_a_one_line_error(multi_file_input, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not a capture\n")
    out = subprocess.run([str(BIN / "mwtap"), "analyze", "--jobs", "2", *multi_file_input, str(bad)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and str(bad) in out.stderr


def test_dask_cluster_gives_the_single_process_summary(multi_file_input, tmp_path):
    import dask
    from distributed import LocalCluster
    single, _ = analysis.analyze(multi_file_input)
    with (dask.config.set({"temporary-directory": str(tmp_path)}),  # its scratch folder, not left in /tmp
          LocalCluster(n_workers=2, processes=True, host="127.0.0.1", dashboard_address=None) as cluster):
        on_dask, _ = analyze_parallel(multi_file_input, workers=DaskWorkers(cluster.scheduler_address))
    assert as_json(on_dask) == as_json(single)


def accept_then_request(b: CaptureBuilder, conn: str, t: float) -> None:
    """A consumer that never accepts an agent's message (the 10 s accept timeout starts first), then
    sends a request that is never answered (the 30 s response timeout)."""
    b.open(conn, t, token=f"tok-{conn}")
    b.s2c(conn, t + 0.1, {"kind": "notification", "type": "ms.MessagingEventNotification", "body": {"changes": [
        {"sequence": 1, "originatorId": "agent-1", "originatorMetadata": {"id": "agent-1", "role": "ASSIGNED_AGENT"},
         "serverTimestamp": int(t * 1000), "dialogId": f"dialog-{conn}",
         "event": {"type": "ContentEvent", "message": "hi"}}]}})
    b.c2s(conn, t + 0.2, {"kind": "req", "id": "lost", "type": "cm.ConsumerRequestConversation"})


def request_without_id_and_close(b: CaptureBuilder, conn: str, t: float) -> None:
    b.c2s(conn, t, {"kind": "req", "type": "GetClock"})
    b.close(conn, t + 1)


def test_deadlines_of_two_delays_fire_in_the_whole_inputs_order(tmp_path, monkeypatch):
    """Recording X uses the response timeout before the accept timeout, Y the other way round: the
    deadlines due at one record fire queue by queue in the order of the whole input (X's), both at a
    record of Y (before that record's own violation) and after Y's last record (at Z's first
    record), while Y's last connection stays open past Y's end. The rules share a severity and the
    list is capped, so the order shows."""
    paths = [str(tmp_path / name) for name in ("x.jsonl", "y.jsonl", "z.jsonl")]
    write_recording(paths[0], "x", T, [lambda b: consumer_session(b, "x1", T, "tok-x", requests=2, unanswered=True)])
    write_recording(paths[1], "y", T + HOUR, [lambda b: accept_then_request(b, "y1", T + HOUR),
                                               lambda b: request_without_id_and_close(b, "y1", T + HOUR + 45),
                                               lambda b: accept_then_request(b, "y2", T + HOUR + 50)])
    write_recording(paths[2], "z", T + 2 * HOUR, [lambda b: consumer_session(b, "z1", T + 2 * HOUR, "tok-z")])
    config = Config(max_violations=7, severity={"missing-accept": "error"})
    single, _ = analysis.analyze(paths, config)
    in_y = [(v["conn"], v["rule"]) for v in single["violations"] if v["conn"] in ("y1", "y2")]
    assert in_y == [("y1", "unanswered-request"), ("y1", "missing-accept"), ("y1", "request-without-id"),
                    ("y2", "unanswered-request"), ("y2", "missing-accept")]
    assert single["violations_omitted"] > 0
    assert [c["state"] for c in single["connections"] if c["conn"] == "y2"] == ["open-at-end"]
    independent = []
    check = analysis.parallel._independent
    monkeypatch.setattr(analysis.parallel, "_independent", lambda *a: independent.append(check(*a)) or independent[-1])
    assert as_json(analyze_parallel(paths, config, jobs=3)[0]) == as_json(single)
    assert independent == [True]  # the partitions were merged, not analysed again in one process


def test_a_last_record_holding_a_number_past_a_double_still_dates_the_file(tmp_path):
    """The planner reads a file's last lines for its latest time; a record the core reads though
    orjson refuses it (1e400 in a field the core does not decode) counts, a damaged line does not
    (1e400 in `t`, a time out of range, a connection that is not a string)."""
    path = tmp_path / "c.jsonl"
    header = {"rec": "header", "t": 1.0, "format": "mwtap-capture", "version": 1, "recording": "r", "part": 1}
    path.write_bytes(orjson.dumps(header) + b"\n" + b'{"rec":"ping","t":5,"conn":"c"}\n'
                     + b'{"rec":"ping","t":9,"conn":"c","x":1e400}\n' + b'{"rec":"ping","t":1e400,"conn":"c"}\n'
                     + b'{"rec":"ping","t":1e300,"conn":"c"}\n' + b'{"rec":"ping","t":99,"conn":5}\n')
    assert survey(0, str(path)).t_last == 9
