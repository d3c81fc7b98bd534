"""The core reading a capture itself (core/: reader.rs, record.rs, engine.rs, framing.rs) and the
core fed the Python reader's records one at a time give the same answers exactly: the same records
read, the same damage (kinds, lines, listing bounds), unknown kinds, headers, engine counters,
Framing violations in order and the same per-frame table, types included (an int `t` stays an
int). On every capture the tests ship, on generated captures, and on a fuzz of generated and
damaged captures (invalid JSON, truncated lines, wrong field types, times out of range, unknown
kinds, gzip cut mid-stream, wrong headers, several files of one or more recordings). What the
rules find is asserted in tests/test_rules.py and beside each analyzer's tests here."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from analysis import _core
from analysis.capture import CaptureError, dumps
from analysis.config import Config
from analysis.engine import as_line
from analysis.histogram import LogHistogram
from analysis.reader import CaptureSet
from analysis.synth import CaptureBuilder
from sample_capture import generate
from test_fuzz_engine import fuzz_settings, record
from test_fuzz_reader import line
from test_reliability_load import soak_size

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted([*ROOT.glob("tests/data/*.jsonl"), *ROOT.glob("notebooks/data/*.jsonl.gz")])
DEFAULT_CASES = 2_000
SOAK_CASES = soak_size(2_000, 10_000)


def fed_engine(paths: list[str], config: Config, frames_table: bool = True, analyzers=(), tables=()) -> dict:
    """The same analysis by the other road: the Python reader's records (analysis/reader.py, which HAR
    and flow imports and the view go through) fed one at a time to the core's line-at-a-time
    engine as JSON (`_core.Engine`, which `analysis.Engine` wraps for `record --live`, the imports
    and `view --follow`), shaped as `_core.analyze_native` returns them. It checks the readers, the
    projection and the line-at-a-time interface against the core's own reading; what the rules
    answer is checked by tests/test_rules.py and tests/test_golden.py (the retired Python
    engine's answers)."""
    captures = CaptureSet(paths)
    engine = _core.Engine(dataclasses.asdict(config), list(analyzers), [*tables, *(["frames"] if frames_table else [])])
    violations = []
    for rec in captures.records():
        violations.extend(engine.feed(as_line(rec)) or ())
    out = engine.finish()
    out["violations"] = violations + out["violations"]
    out["files"] = [{"path": f.path, "header": f.header, "lines": f.lines, "bytes_read": f.bytes_read}
                    for f in captures.files]
    out["damage"] = [(d.path, d.line, d.problem, d.kind, d.more) for d in captures.damage]
    out["unknown_records"] = captures.unknown_records
    return out


# The retired Python engine's answer to each question the tests below asked of it, in the order
# asked (a fingerprint each: `fingerprint_of`), by test: tests/test_golden.py says more.
ANSWERED_BEFORE = json.loads((ROOT / "tests" / "data" / "golden" / "answers.json").read_text())
_questions: dict[str, int] = {}


def fingerprint_of(result: dict | str, paths: list[str]) -> str:
    """An answer's fingerprint, the files it read named by their names (tests write them to
    temporary folders), its strings as `ascii` writes them (`repr` differs between Pythons)."""
    if isinstance(result, str):
        text = result
        for path in paths:
            text = text.replace(path, Path(path).name)
        text = ascii(text)
    else:
        result = {**result, "stats": {k: v for k, v in result["stats"].items() if k != "accept_ms"}}  # new since
        result["files"] = [{**f, "path": Path(f["path"]).name} for f in result["files"]]
        result["damage"] = [(Path(d[0]).name, *d[1:]) for d in result["damage"]]
        text = ascii(result)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def assert_answered_as_before(result: dict | str, paths: list[str]) -> None:
    """The core answers as the retired Python engine did to the same question of the same test.
    Tests driven by hypothesis (other cases every run) and tests written since have no such answer."""
    test = os.environ["PYTEST_CURRENT_TEST"].rsplit(" ", 1)[0].lower()
    before = ANSWERED_BEFORE.get(test)
    if before is None:
        return
    asked = _questions[test] = _questions.get(test, -1) + 1
    answer = fingerprint_of(result, paths)
    assert asked < len(before) and answer == before[asked], f"question {asked}: answered {answer}, not as before"


def outcome(run, *args) -> dict | str:
    try:
        return run(*args)
    except CaptureError as e:
        return f"CaptureError: {e}"


def assert_same(paths: list[str], config: Config | None = None, frames_table: bool = True, analyzers=(),
                tables=()) -> dict | str:
    """Both roads' answers are equal, types included; `analyzers`: the core's analyzers by name
    (Framing alone when none)."""
    config = config or Config()
    fed = outcome(fed_engine, paths, config, frames_table, analyzers, tables)
    native = outcome(_core.analyze_native, paths, dataclasses.asdict(config), list(analyzers),
                     [*tables, *(["frames"] if frames_table else [])])
    for result in (native, fed):
        if isinstance(result, dict) and "accept_ms" in result["stats"]:
            # Sequences' accept times, for the merge of `--jobs`: they give the percentiles it reports.
            accepts = LogHistogram.from_state(result["stats"]["accept_ms"])
            messaging = result["stats"]["messaging"]
            assert [accepts.percentile(50), accepts.percentile(90)] == [messaging["accept_p50_ms"],
                                                                        messaging["accept_p90_ms"]]
    assert native == fed
    assert repr(native) == repr(fed)  # the same types too: 1 == 1.0 == True for ==
    assert_answered_as_before(native, paths)
    return native


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_captures(path):
    result = assert_same([str(path)])
    assert isinstance(result, str) or result["frames"] > 0


def test_generated_captures_and_severity_overrides(tmp_path):
    sample = tmp_path / "sample.jsonl"
    generate(sample, seed=3)
    result = assert_same([str(sample)], Config(severity={"missing-kind": "error", "missing-type": "info"}))
    assert result["violations"] and result["frames_table"]["text"]
    demo = ROOT / "notebooks/data/demo.jsonl.gz"
    assert_same([str(demo)], frames_table=False)
    # Parts of one recording in part order, another recording merged by time.
    builder = CaptureBuilder(recording="other")
    builder.open("c-other", 5.0)
    builder.c2s("c-other", 6.0, {"kind": "req", "type": "GetClock"})
    builder.s2c("c-other", 7.0, {"type": "x"})
    other = tmp_path / "other.jsonl.gz"
    builder.write(other, gz=True)
    assert assert_same([str(other), str(sample)])["frames"] > 3
    # The benchmarks' generator, with and without the body index fields, its records in the order it
    # builds them (as it wrote them when the retired engine answered on them).
    for extra in ([], ["--no-body-index"]):
        generated = tmp_path / f"gen{len(extra)}.jsonl"
        subprocess.run([sys.executable, str(ROOT / "benchmarks/gen_capture.py"), str(generated), "--frames", "3000",
                        "--clients", "20", "--as-built", *extra], check=True)
        assert assert_same([str(generated)])["frames"] >= 3000


def test_frame_row_gives_the_frames_tables_row(tmp_path):
    """`_core.frame_row(line)` (the report's second pass) gives a msg line's row of the frames table,
    categories and types included; None for a line that is no usable msg record, or damage."""
    sample = tmp_path / "sample.jsonl"
    generate(sample, seed=5)
    odd = [{"rec": "msg", "t": 9, "conn": "odd", "n": i, "dir": "s2c", **fields} for i, fields in enumerate([
        {"text": "{"}, {"op": "binary", "size": 3}, {"text": '{"type":"x"}', "type": "x"}, {"kind": 5, "text": "{}"},
        {"text": "{}", "reqId": "1", "code": 1.5}, {"text": "[1]", "truncated": True}])]
    with sample.open("ab") as f:
        f.write(b"".join(dumps(rec) for rec in odd))
    table = _core.analyze_native([str(sample)])["frames_table"]
    expected = [dict(zip(table, values)) for values in zip(*table.values())]
    lines = [text for text in sample.read_bytes().splitlines() if b'"rec":"msg"' in text]
    rows = [_core.frame_row(text) for text in lines]
    assert rows.count(None) == 1  # `"kind": 5`, damage the reader leaves out
    rows.remove(None)
    assert len(rows) == len(expected) > 100 and rows == expected and repr(rows) == repr(expected)
    assert {row["category"] for row in rows} == {"req", "resp", "notification", None}
    for text in (b'{"rec":"open","t":1,"conn":"c"}', b'{"rec":"msg","t":1,"conn":"c","dir":"up"}',
                 b'{"rec":"msg","t":1,"conn":5,"dir":"c2s"}', b"{broken", b"[]"):
        assert _core.frame_row(text) is None, text


def test_not_a_capture_raises_the_same_error(tmp_path):
    cases = {"empty.jsonl": b"", "text.jsonl": b"hello\n", "list.jsonl": b"[1]\n",
             "other.jsonl": b'{"rec":"header","format":"x"}\n',
             "newer.jsonl": b'{"rec":"header","format":"mwtap-capture","version":7}\n',
             "bad-version.jsonl": b'{"rec":"header","format":"mwtap-capture","version":"1"}\n'}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        assert assert_same([str(tmp_path / name)]).startswith("CaptureError: ")
    assert assert_same([str(tmp_path / "missing.jsonl")]).endswith("cannot open (No such file or directory)")
    assert assert_same([str(tmp_path)]).endswith("is a directory, not a capture file")


def test_damage_listing_bounds(tmp_path):
    """More lines than listed per kind, more kinds than told apart."""
    header = dumps({"rec": "header", "t": 1.0, "format": "mwtap-capture", "version": 1})
    lines = [b"{broken\n"] * 30 + [b'{"rec":"open","t":1,"conn":"c","status":"%d"}\n' % i for i in range(5)]
    lines += [b'{"rec":"msg","t":%de9,"conn":"c","dir":"c2s"}\n' % (10 + i) for i in range(25)]
    lines += [b'{"rec":"%s","t":2}\n' % (b"kind-%d" % i) for i in range(30)]
    lines += [b'{"rec":"msg","t":3,"conn":"c","dir":"c2s","%s":[1]}\n' % k.encode()
              for k in ("n", "op", "size", "text", "b64", "kind", "type", "id", "reqId", "subscriptionId")]
    lines += [b'{"rec":"future","t":1e10}\n', b'{"rec":"open","t":1,"conn":"c"}\n', b'{"rec":"msg","t":2,"conn":"c"']
    many = tmp_path / "many.jsonl"
    many.write_bytes(header + b"".join(lines))
    result = assert_same([str(many)])
    assert any(d[4] == 10 for d in result["damage"]) and "(other kinds)" in result["unknown_records"]
    kinds = tmp_path / "kinds.jsonl"  # 60 kinds of damage: the last ones counted as "other problems"
    kinds.write_bytes(header + b"".join(b'{"rec":"msg","t":%d.5e10}\n' % i for i in range(60)))
    assert assert_same([str(kinds)])["damage"][-1][3] != "other problems"  # listed lines keep their own kind


def test_gzip_cut_and_concatenated(tmp_path):
    sample = tmp_path / "sample.jsonl"
    generate(sample, seed=4)
    data = sample.read_bytes()
    half = data.index(b"\n", len(data) // 2) + 1
    whole = tmp_path / "two-members.jsonl.gz"
    whole.write_bytes(gzip.compress(data[:half]) + gzip.compress(data[half:]))
    assert assert_same([str(whole)])["damage"] == []
    compressed = gzip.compress(data)
    for cut in (len(compressed) // 3, len(compressed) - 4, len(compressed) - 9):
        cut_file = tmp_path / f"cut-{cut}.jsonl.gz"
        cut_file.write_bytes(compressed[:cut])
        result = assert_same([str(cut_file)])
        assert [d[2] for d in result["damage"]] == ["compressed stream damaged (ends early)"]


def test_quoted_values_in_messages(tmp_path):
    """`kind {ascii(kind)}`: quotes, backslashes, control and non-ASCII characters as Python writes them,
    the same on every Python (U+31350 is printable to 3.12's repr, not to 3.11's)."""
    header = dumps({"rec": "header", "t": 1.0, "format": "mwtap-capture", "version": 1})
    kinds = ["it's", 'say "hi"', "both ' and \"", "back\\slash", "tab\tnl\ncr\r\x00\x1f\x7f", "é\xa0\xad",
             "\u200b\u2028\u0378 日本", "\U000e0001\U0001f600\U0010ffff\U00031350", ""]
    payload_kinds = [1, 2.5, 1e16, None, True, [1, "a'b"], {"x": {"y": [False, "ü"]}}, 18446744073709551616]
    recs = [{"rec": "msg", "t": 2, "conn": "c", "n": i, "dir": "c2s", "text": "{}", "kind": k}
            for i, k in enumerate(kinds)]
    recs += [{"rec": "msg", "t": 3.5, "conn": "c", "dir": "s2c", "text": json.dumps({"kind": k})} for k in payload_kinds]
    for text in ("null", " null ", "\u00a0null", "[1]", '"s"', "1.5", "true", "{", "", "{}"):
        recs.append({"rec": "msg", "t": 4, "conn": "c", "dir": "s2c", "text": text})
    path = tmp_path / "kinds.jsonl"
    path.write_bytes(header + b"".join(dumps(r) for r in recs))
    messages = [v["message"] for v in assert_same([str(path)])["violations"]]
    assert "kind '\\u200b\\u2028\\u0378 \\u65e5\\u672c' is not req, resp or notification" in messages
    assert "kind {'x': {'y': [False, '\\xfc']}} is not a string" in messages


@pytest.mark.parametrize("extra", [0, 1])
def test_closed_connections_kept_are_bounded_alike(tmp_path, extra):
    """Closed ids are forgotten in batches, once there are 1.25 × _core.CLOSED_CONNS_KEPT of them (the newest
    _core.CLOSED_CONNS_KEPT kept): a message on a forgotten one opens it implicitly, on a remembered one it
    counts as a record after close."""
    header = dumps({"rec": "header", "t": 1.0, "format": "mwtap-capture", "version": 1})
    conns = _core.CLOSED_CONNS_KEPT + _core.CLOSED_CONNS_KEPT // 4 + extra
    lines = [header]
    for i in range(conns):
        lines.append(b'{"rec":"open","t":2,"conn":"c%d"}\n{"rec":"close","t":2,"conn":"c%d"}\n' % (i, i))
    for i in (0, conns - _core.CLOSED_CONNS_KEPT - 1, conns - _core.CLOSED_CONNS_KEPT, conns - 1):
        lines.append(b'{"rec":"msg","t":3,"conn":"c%d","dir":"c2s","kind":"req","type":"x","id":"1"}\n' % i)
    path = tmp_path / "many-conns.jsonl"
    path.write_bytes(b"".join(lines))
    result = assert_same([str(path)], frames_table=False)
    assert (result["frames"], result["records_after_close"]) == ((0, 4) if extra == 0 else (2, 2))


HEADERS = [dumps({"rec": "header", "t": 1.0, "format": "mwtap-capture", "version": 1, "recording": r, "part": p})
           for r in ("r1", "r2") for p in (1, 2)]
BAD_HEADERS = [b"", b"x\n", b"[]\n", b'{"rec":"open"}\n', b'{"rec":"header","format":"mwtap-capture","version":2}\n',
               b'{"rec":"header","format":"mwtap-capture","version":true}\n']
# Lines where a JSON parser other than orjson would easily answer otherwise: lone surrogates and bad
# UTF-8 in fields the reader skips or keeps raw, nesting around orjson's limit of 1024, duplicate keys.
TRICKY = [b'{"rec":"msg","t":1,"conn":"c1","dir":"c2s","x":"\\ud800"}', b'{"rec":"msg","t":1,"x":"\xff"}',
          b'{"rec":"msg","t":1,"conn":"c1","dir":"c2s","text":"\\udc00"}',
          b'{"rec":"msg","t":1,"conn":"c1","dir":"c2s","text":"\\ud83d\\ude00"}',
          b'{"rec":"msg","t":1,"conn":"c1","dir":"c2s","text":"\xc3\xa9\\"\\\\["}',
          b'{"rec":"open","t":1,"conn":"c1","request_headers":%s}' % (b"[" * 1023 + b"]" * 1023),
          b'{"rec":"open","t":1,"conn":"c1","request_headers":%s}' % (b"[" * 1024 + b"]" * 1024),
          b'{"rec":"msg","t":2,"t":"x","conn":"c1","conn":"c2","dir":"s2c","kind":"req","kind":null}',
          b'{"rec":"drop","t":1,"count":18446744073709551615}', b'{"rec":"msg","t":1,"conn":"c1","dir":"c2s","n":1e2}']
capture_line = st.one_of(record.map(lambda r: json.dumps(r).encode()), line, st.sampled_from(TRICKY))


@st.composite
def capture_files(draw) -> list[tuple[str, bytes]]:
    """One to three files: a header (now and then a wrong one), records and damaged lines, perhaps the
    last line cut, perhaps gzip (perhaps cut mid-stream)."""
    files = []
    for i in range(draw(st.integers(1, 3))):
        header = draw(st.sampled_from(HEADERS) | st.sampled_from(BAD_HEADERS)) if draw(st.integers(0, 30)) == 0 \
            else draw(st.sampled_from(HEADERS))
        data = header + b"".join(ln.replace(b"\n", b" ") + b"\n" for ln in draw(st.lists(capture_line, max_size=30)))
        if draw(st.booleans()):
            data = data[:-1]
        name = f"f{i}.jsonl"
        if draw(st.integers(0, 3)) == 0:
            name += ".gz"
            data = gzip.compress(data)
            if draw(st.booleans()):
                data = data[:draw(st.integers(1, len(data) - 1))]
        files.append((name, data))
    return files


@contextmanager
def written(files: list[tuple[str, bytes]]) -> Iterator[list[str]]:
    """The fuzz's files, (name, bytes) each, written to a temporary folder: their paths."""
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for name, data in files:
            path = Path(tmp) / name
            path.write_bytes(data)
            paths.append(str(path))
        yield paths


def check_same(files: list[tuple[str, bytes]]) -> None:
    with written(files) as paths:
        assert_same(paths)


@fuzz_settings(DEFAULT_CASES)
@given(capture_files())
def test_fuzz_read_by_the_core_equals_fed_to_it(files):
    check_same(files)


@pytest.mark.soak
@fuzz_settings(SOAK_CASES)
@given(capture_files())
def test_fuzz_read_by_the_core_equals_fed_to_it_soak(files):
    check_same(files)
