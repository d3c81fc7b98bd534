"""Error paths of `mwtap replay` and `mwtap diff`: one-line errors, exit status 2, no traceback,
and a remote target refused before any connection is attempted."""

from __future__ import annotations

import re
import subprocess

from analysis.capture import dumps, header_record, message_record
from analysis.redact import redaction_info
from conftest import BIN
from recorder.replay.target import TargetError, check_target, target_url, with_path_bearer
from test_replay import recording, start_server, token_command  # noqa: F401  (recording: a fixture)

import pytest

MWTAP = str(BIN / "mwtap")
URL = "ws://127.0.0.1:9/ws_api/account/mwtap/messaging/consumer?v=3"


def run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([MWTAP, *map(str, args)], capture_output=True, text=True, timeout=60)


def write_capture(path, authorization: str | None = "jwt [redacted sha256:0123456789ab]", url: str = URL) -> None:
    headers = [["Host", "127.0.0.1:9"]] + ([["Authorization", authorization]] if authorization else [])
    records = [
        header_record(1.0, mwtap_version="0.1.0", mitmproxy_version=None, redaction=redaction_info(True),
                      recording_id="r"),
        {"rec": "open", "t": 1.0, "conn": "c1", "url": url, "request_headers": headers, "status": 101},
        message_record("c1", 1.1, 0, True, True, b'{"kind":"req","id":"1","type":"GetClock"}'),
        {"rec": "close", "t": 1.2, "conn": "c1", "code": 1000, "reason": "", "by": "client"},
    ]
    path.write_bytes(b"".join(dumps(r) for r in records))


def assert_one_line_error(done: subprocess.CompletedProcess, *words: str) -> None:
    assert done.returncode == 2, done
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), done.stderr
    for word in words:
        assert word in lines[0]


def test_missing_capture(tmp_path):
    assert_one_line_error(run("replay", tmp_path / "nope.jsonl", "--target", "ws://127.0.0.1:9", "-o",
                              tmp_path / "out.jsonl", "--token", "x"), "nope.jsonl", "cannot open")


def test_not_a_capture(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("hello\n")
    assert_one_line_error(run("replay", bad, "--target", "ws://127.0.0.1:9", "-o", tmp_path / "o.jsonl"),
                          "bad.jsonl:1")


def test_capture_with_tokens_needs_a_token_option(tmp_path):
    capture = tmp_path / "cap.jsonl"
    write_capture(capture)
    done = run("replay", capture, "--target", "ws://127.0.0.1:9", "-o", tmp_path / "out.jsonl")
    assert_one_line_error(done, "Authorization header", "--token-command")
    assert not (tmp_path / "out.jsonl").exists()


BOT_URL = "wss://127.0.0.1:9/ws_api/account/mwtap/messaging/brand/[redacted sha256:0123456789ab]?v=2.1"


def test_a_bots_capture_needs_a_token_option_for_the_bearer_in_its_path(tmp_path):
    capture = tmp_path / "bot.jsonl"
    write_capture(capture, authorization=None, url=BOT_URL)
    done = run("replay", capture, "--target", "wss://127.0.0.1:9", "-o", tmp_path / "out.jsonl")
    assert_one_line_error(done, "a bearer in its URL path", "--token-command")


def test_a_target_ca_that_is_not_a_certificate_is_bad_input(tmp_path):
    capture, ca = tmp_path / "bot.jsonl", tmp_path / "ca.pem"
    write_capture(capture, authorization=None, url=BOT_URL)
    ca.write_text("not a certificate\n")
    done = run("replay", capture, "--target", "wss://127.0.0.1:9", "--target-ca", ca, "--token", "x",
               "-o", tmp_path / "out.jsonl")
    assert_one_line_error(done, "--target-ca", str(ca))
    assert not (tmp_path / "out.jsonl").exists()


def test_the_bearer_in_an_agents_path_is_replaced_and_nothing_else():
    fresh = "0f" * 32
    assert with_path_bearer(target_url("wss://127.0.0.1:9", BOT_URL), fresh) == (
        f"wss://127.0.0.1:9/ws_api/account/mwtap/messaging/brand/{fresh}?v=2.1")
    assert with_path_bearer(URL, fresh) == URL  # a v3 consumer's path holds no bearer


def test_remote_target_is_refused_before_connecting(tmp_path):
    capture = tmp_path / "cap.jsonl"
    write_capture(capture, authorization=None)
    done = run("replay", capture, "--target", "ws://192.0.2.1:9", "-o", tmp_path / "out.jsonl")
    assert_one_line_error(done, "192.0.2.1", "--allow-remote")
    assert not (tmp_path / "out.jsonl").exists()
    assert "connection(s)" not in done.stderr  # refused before announcing, let alone connecting


def test_target_checks():
    check_target("ws://127.0.0.1:1", allow_remote=False)
    check_target("ws://127.3.4.5:1", allow_remote=False)
    check_target("ws://[::1]:1", allow_remote=False)
    check_target("ws://localhost:1", allow_remote=False)  # resolves to loopback addresses only
    check_target("ws://192.0.2.1:1", allow_remote=True)
    for bad in ("ws://192.0.2.1:1", "ws://[2001:db8::1]:1", "http://127.0.0.1:1", "ws://127.0.0.1:x"):
        with pytest.raises(TargetError):
            check_target(bad, allow_remote=False)
    assert target_url("ws://127.0.0.1:5", URL) == "ws://127.0.0.1:5/ws_api/account/mwtap/messaging/consumer?v=3"
    assert target_url("ws://127.0.0.1:5/other?v=9", URL) == "ws://127.0.0.1:5/other?v=9"


def test_existing_output_is_never_overwritten(tmp_path):
    capture = tmp_path / "cap.jsonl"
    write_capture(capture, authorization=None)
    out = tmp_path / "out.jsonl"
    out.write_text("keep me\n")
    assert_one_line_error(run("replay", capture, "--target", "ws://127.0.0.1:9", "-o", out), "exists")
    assert out.read_text() == "keep me\n"


def test_unknown_connection(tmp_path):
    capture = tmp_path / "cap.jsonl"
    write_capture(capture, authorization=None)
    assert_one_line_error(run("replay", capture, "--conn", "zz", "--target", "ws://127.0.0.1:9", "-o",
                              tmp_path / "o.jsonl"), "zz")


def test_diff_input_errors(tmp_path):
    capture = tmp_path / "cap.jsonl"
    write_capture(capture)
    assert_one_line_error(run("diff", capture, tmp_path / "missing.jsonl"), "missing.jsonl")
    assert run("diff", capture, capture).returncode == 0
    assert run("diff", capture).returncode == 2


def test_connections_of_one_identity_starting_together_share_one_fresh_token(tmp_path):
    """--parallel starts a consumer's recorded reconnects at once: one token command run, one identity."""
    import asyncio

    from recorder.replay.tokens import TokenPool, TokenSource

    runs = tmp_path / "runs"
    pool = TokenPool(TokenSource(command=f"echo run >> {runs}; echo token-$$"))  # $$: this run's shell

    async def start_together() -> list[str]:
        return await asyncio.gather(*(pool.get("sub:0123456789ab") for _ in range(3)), pool.get("sub:other"))

    tokens = asyncio.run(start_together())
    assert len(set(tokens[:3])) == 1 and tokens[3] != tokens[0]
    assert runs.read_text().count("run") == 2


def test_connections_chosen_with_conn_replay_in_recorded_order(tmp_path):
    """A consumer's reconnect replayed before its first connection asks for a conversation that does
    not exist yet: whatever the order of --conn, the recorded order is kept (and each once)."""
    from recorder.replay.plan import load_plan

    capture = tmp_path / "cap.jsonl"
    records = [header_record(1.0, mwtap_version="0.1.0", mitmproxy_version=None, redaction=redaction_info(True),
                             recording_id="r")]
    for t, conn in ((1.0, "first-conn"), (2.0, "second-conn"), (3.0, "third-conn")):
        records += [{"rec": "open", "t": t, "conn": conn, "url": URL, "request_headers": [], "status": 101},
                    message_record(conn, t + 0.1, 0, True, True, b'{"kind":"req","id":"1","type":"GetClock"}'),
                    {"rec": "close", "t": t + 0.2, "conn": conn, "code": 1000, "reason": "", "by": "client"}]
    capture.write_bytes(b"".join(dumps(r) for r in records))
    plan = load_plan(str(capture)).select(("third", "first", "third-conn"))
    assert [c.id for c in plan.connections] == ["first-conn", "third-conn"]


def test_replay_prints_a_summary_of_substitutions_and_each_one_with_verbose(recording, procs, tmp_path):
    """Against a real `mwtap serve`: the text output counts the substituted values by kind; -v lists
    each (one line per value, under a header)."""
    port = start_server(procs)
    runs = {}
    for name, extra in (("summary", ()), ("verbose", ("-v",))):
        runs[name] = run("replay", recording, "--target", f"ws://127.0.0.1:{port}", "-o", tmp_path / f"{name}.jsonl",
                         "--token-command", token_command(port), *extra)
        assert runs[name].returncode == 0, runs[name].stderr
    count = int(re.search(r"^substitutions: (\d+) \((\d+) sequence, (\d+) string; -v lists each\)$",
                          runs["summary"].stdout, re.M).group(1))
    assert count > 0 and "recorded -> replayed" not in runs["summary"].stdout
    verbose = runs["verbose"].stdout.splitlines()
    header = verbose.index(next(line for line in verbose if line.endswith("recorded -> replayed")))
    assert verbose[header - 1].startswith("substitutions: ") and "-v lists" not in verbose[header - 1]
    assert len(verbose[header + 1:]) == int(verbose[header - 1].split()[1]) > 0


@pytest.mark.parametrize("command, option, marked", [
    ("convert", "--output", "[required]"), ("export", "--parquet", "[required]"), ("record", "--out", "[required]"),
    ("replay", "--target", "required without --as-server"), ("replay", "--out", "required without --as-server"),
])
def test_help_marks_the_options_a_command_requires(command, option, marked):
    options = run(command, "--help").stdout.split("\nOptions:\n")[1]
    entry = re.search(rf"^  (-\w, )?{option} .*?(?=^  -|\Z)", options, re.M | re.S).group(0)
    assert marked.replace(" ", "") in "".join(entry.split()), entry  # however click wrapped it
