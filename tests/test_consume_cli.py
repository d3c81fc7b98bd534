"""`mwtap consume` and `mwtap token` as a user runs them: real `mwtap serve`, real `mwtap record` in
front of it, one `mwtap consume` per misbehaviour, then `mwtap analyze` of the capture; and README's
try-it and replay commands as written there."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import time
from collections import defaultdict

import pytest

from analysis.redact import jwt_sub
from conftest import BIN, REPO, Processes, free_port, holds_jwt, run_on_terminal, wait_port

MWTAP = str(BIN / "mwtap")
IDLE_TIMEOUT = 3.0
TOKEN_LIFETIME = 5.0
DURATION = 9.0  # past the token lifetime: every consumer meets a 4401
# What each run misbehaves in (its account in the URL tells its connections apart), and the rules
# the analysis must find on its connections only. A consumer reconnects immediately only after a
# close other than 4401/4407: the server's idle close of a consumer that does not keep alive.
RUNS = {
    "good": ([], set()),
    "no-keepalive": (["--behaviour", "no-keepalive", "--interval", str(IDLE_TIMEOUT + 1)], {"keepalive-gap"}),
    "stale-token": (["--behaviour", "stale-token"], {"token-not-refreshed"}),
    "skip-accept": (["--behaviour", "skip-accept"], {"missing-accept"}),
    "reuse-request-id": (["--behaviour", "reuse-request-id"], {"duplicate-request-id"}),
    "reconnect-immediately": (["--behaviour", "no-keepalive,reconnect-immediately", "--interval",
                               str(IDLE_TIMEOUT + 1)], {"fast-reconnect", "keepalive-gap"}),
}


def consumer_url(port: int, account: str = "mwtap") -> str:
    return f"ws://127.0.0.1:{port}/ws_api/account/{account}/messaging/consumer?v=3"


def run(args: list[str], timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([MWTAP, *args], capture_output=True, text=True, timeout=timeout, **kw)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """`mwtap serve` with a short idle timeout and token lifetime."""
    procs = Processes(tmp_path_factory.mktemp("serve"))
    port = free_port()
    try:
        serve = procs.start([MWTAP, "serve", "--listen", f"127.0.0.1:{port}", "--idle-timeout", str(IDLE_TIMEOUT),
                             "--token-lifetime", str(TOKEN_LIFETIME), "--agent-reply-delay", "0.2"], "serve")
        wait_port(port, proc=serve)
        yield port
    finally:
        procs.stop_all()


@pytest.fixture(scope="module")
def recorded(served, tmp_path_factory):
    """Every run of RUNS at once through `mwtap record`; (consume results, analysis JSON)."""
    tmp = tmp_path_factory.mktemp("record")
    procs = Processes(tmp)
    port = free_port()
    capture = tmp / "capture.jsonl"
    try:
        record = procs.start([MWTAP, "record", "--upstream", f"ws://127.0.0.1:{served}", "--listen",
                              f"127.0.0.1:{port}", "-o", str(capture)], "record")
        wait_port(port, proc=record)
        consumers = {account: procs.start([MWTAP, "consume", consumer_url(port, account), "--duration",
                                           str(DURATION), "--keepalive-interval", "1", *args], account)
                     for account, (args, _) in RUNS.items()}
        results = {}
        for account, proc in consumers.items():
            proc.wait(DURATION + 30)
            results[account] = (proc.returncode, proc.log_path.read_text())
        assert procs.stop(record) == 0
    finally:
        procs.stop_all()
    analysis = run(["analyze", str(capture), "--format", "json", "--keepalive-limit", str(IDLE_TIMEOUT),
                    "--accept-timeout", "3"])
    assert analysis.returncode == 0, analysis.stderr
    return results, json.loads(analysis.stdout)


def test_each_misbehaviour_trips_its_rule_and_only_on_its_own_connections(recorded):
    _, summary = recorded
    account_of = {c["conn"]: re.search(r"/account/([^/]+)/", c["url"])[1] for c in summary["connections"]}
    rules = defaultdict(set)
    for v in summary["violations"]:
        if v["severity"] != "info":
            rules[account_of[v["conn"]]].add(v["rule"])
    tripped = set().union(*(expected for _, expected in RUNS.values()))
    for account, (_, expected) in RUNS.items():
        assert rules[account] & tripped == expected, (account, rules[account])


def test_each_run_prints_a_summary_and_exits_0(recorded):
    results, _ = recorded
    for account, (code, output) in results.items():
        assert code == 0, output
        assert re.search(rf"mwtap consume: 1 consumer\(s\) -> ws://127\.0\.0\.1:\d+/ws_api/account/{account}/", output)
        sent, answered = map(int, re.search(r"requests +(\d+) sent, (\d+) answered", output).groups())
        assert sent >= 10 and answered >= sent - 2, output  # a request in flight at a 4401 can miss its answer
        assert re.search(r"closes +.*4401 x\d", output), output
        assert "\r" not in output  # no progress line when stderr is not a terminal
    assert not holds_jwt("".join(output for _, output in results.values()))


def test_cannot_connect_exits_1_naming_what_failed():
    port = free_port()
    result = run(["consume", consumer_url(port), "--consumers", "2"], timeout=30)
    assert result.returncode == 1, result.stderr
    assert f"2 consumer(s) could not connect: POST http://127.0.0.1:{port}/api/account/mwtap/signup: " \
           in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("args, message", [
    (["--behaviour", "skip-accept,late"], "unknown late; choose from no-keepalive, stale-token"),
    (["--token", "x", "--token-command", "y"], "give only one of --token, --token-command"),
])
def test_bad_usage_exits_2(args, message):
    result = run(["consume", consumer_url(1), *args], timeout=30)
    assert result.returncode == 2 and message in result.stderr, result.stderr


def test_help_lists_every_behaviour_with_its_rule():
    text = run(["consume", "--help"]).stdout
    for name, rule in {"no-keepalive": "keepalive-gap", "stale-token": "token-not-refreshed",
                       "skip-accept": "missing-accept", "reuse-request-id": "duplicate-request-id",
                       "reconnect-immediately": "fast-reconnect"}.items():
        assert re.search(rf"^ +{name}\n(?: +.*\n)*? +.*\({rule}\)", text, re.M), (name, text)


def test_progress_is_shown_on_a_terminal(served):
    code, seen = run_on_terminal([MWTAP, "consume", consumer_url(served), "--messages", "2", "--interval", "0.5",
                                  "--keepalive-interval", "1"], timeout=30)
    assert code == 0
    assert re.search(rb"\r\x1b\[Kconsume  \d+ s, 1 connection\(s\), \d+ request\(s\) sent", seen), seen
    assert b"closes       1000 x1" in seen


def test_ctrl_c_wraps_up_and_prints_the_summary(served, procs, tmp_path):
    """SIGINT once the consumer has its token: it wraps up, closes its socket itself and the summary
    is printed, exit 0."""
    fetched = tmp_path / "fetched"
    command = f"{MWTAP} token {shlex.quote(consumer_url(served))} && touch {fetched}"
    proc = procs.start([MWTAP, "consume", consumer_url(served), "--duration", "60", "--token-command", command],
                       "consume")
    deadline = time.monotonic() + 30
    while not fetched.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGINT)
    assert proc.wait(20) == 0
    output = proc.log_path.read_text()
    assert "tokens from --token-command" in output and "1 finished their script" in output, output
    assert re.search(r"closes +1000 x1\n", output) and "Traceback" not in output, output


def test_token_prints_a_token_and_extends_the_previous_identity(served):
    idp = f"http://127.0.0.1:{served}/api/account/mwtap"
    first = run(["token", idp])
    assert first.returncode == 0 and first.stdout.count("\n") == 1
    token = first.stdout.strip()
    again = run(["token", consumer_url(served)], env={**os.environ, "MWTAP_PREVIOUS_TOKEN": token})
    other = run(["token", idp])
    assert jwt_sub(again.stdout.strip()) == jwt_sub(token) != jwt_sub(other.stdout.strip())
    assert again.stdout.strip() != token
    refused = run(["token", f"http://127.0.0.1:{served}/elsewhere"])
    assert refused.returncode == 2 and "names no account" in refused.stderr


def readme_block(heading: str) -> list[str]:
    """The command lines of the first ```sh block after `heading` in README.md."""
    text = (REPO / "README.md").read_text()
    block = re.search(rf"{re.escape(heading)}.*?```sh\n(.*?)```", text, re.S)[1]
    return [line for line in block.splitlines() if line.strip()]


def test_readme_try_it_then_replay_as_pasted(procs, tmp_path):
    """README's commands as written, in a fresh folder; only the ports are swapped for free ones
    (another program may hold 8765 or 8080 on this machine)."""
    ports = {"8765": str(free_port()), "8080": str(free_port())}

    def pasted(line: str) -> str:
        command = line.split("  #")[0].strip()
        for readme_port, port in ports.items():
            command = command.replace(f"127.0.0.1:{readme_port}", f"127.0.0.1:{port}")
        return command

    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    background = []
    for line in readme_block("Try it"):
        command = pasted(line)
        if command.startswith("kill "):
            assert procs.stop(background[int(command.split("%")[1]) - 1]) == 0
        elif command.endswith("&"):
            proc = procs.start(shlex.split(command[:-1]), f"bg{len(background)}", cwd=tmp_path, env=env)
            background.append(proc)
            wait_port(int(re.search(r"--listen 127\.0\.0\.1:(\d+)", command)[1]), proc=proc)
        else:
            done = subprocess.run(command, shell=True, cwd=tmp_path, capture_output=True, text=True, timeout=60,
                                  env=env)
            assert done.returncode == 0, (command, done.stdout, done.stderr)
    replay = next(pasted(line) for line in readme_block("## Replay") if line.startswith("mwtap replay session"))
    done = subprocess.run(replay, shell=True, cwd=tmp_path, capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, (replay, done.stdout, done.stderr)
    sent = re.findall(r"(\d+)/(\d+) frames sent", done.stdout)
    assert sent and all(a == b for a, b in sent), done.stdout
    assert (tmp_path / "replayed.jsonl").exists()
