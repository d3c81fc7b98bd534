"""The core's answers on fixed captures, against the answers the retired Python engine gave on them.

Before the Python engine and analyzers were retired (they were the first implementation of every
rule), their answers on these captures were written to tests/data/golden/*.expected.json.gz: every
violation in order, with its wording; every analyzer's table, row by row; the frames table; the
counters and statistics; the damage and unknown record kinds. The inputs are the demo capture and
captures in tests/data/golden: two of tests/sample_capture.py's consumers (misbehaving ones
included, the second pair analysed with other limits and severities), two of
benchmarks/gen_capture.py's (with and without body index fields) and one of odd frames and damage.

The hand-built cases of tests/test_native_*.py were compared with the Python engine too, question by
question; `answers.json` keeps a fingerprint of each answer it gave there, by test, and
`test_native_engine.assert_answered_as_before` checks the core against it (tests driven by
hypothesis ask other questions every run and have none).

A change that makes the core answer otherwise fails here. If the new answer is the right one,
write the files again from the core with `MWTAP_UPDATE_GOLDEN=1 pytest tests/test_golden.py` and
say in the commit which answers changed and why (`git diff` shows nothing of a .gz: compare
`zcat` outputs). A changed fingerprint in `answers.json` is written by hand, from the message of
the failing test, once its new answer is known to be right.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
from pathlib import Path

import pytest

from analysis import _core
from analysis.config import Config
from analysis.histogram import LogHistogram
from analysis.native import ANALYZERS
from conftest import REPO

GOLDEN = REPO / "tests" / "data" / "golden"
TABLES = ["pairs", "streams", "sequences", "keepalive", "silences", "pings", "connections", "reconnects"]


def core_answers(paths: list[str], config: dict) -> dict:
    """What the core answers, in the shape the golden files hold (file paths as their names; JSON's
    types: tuples as lists)."""
    result = _core.analyze_native([str(REPO / path) for path in paths], dataclasses.asdict(Config(**config)),
                                  list(ANALYZERS), [*TABLES, "frames"])
    # The accept times' histogram is there for the merge of `--jobs` (the Python engine had none):
    # it must give the percentiles the messaging stats report.
    accepts = LogHistogram.from_state(result["stats"].pop("accept_ms"))
    messaging = result["stats"]["messaging"]
    assert [accepts.percentile(50), accepts.percentile(90)] == [messaging["accept_p50_ms"], messaging["accept_p90_ms"]]
    result["files"] = [{**f, "path": Path(f["path"]).name} for f in result["files"]]
    result["damage"] = [[Path(path).name, *rest] for path, *rest in result["damage"]]
    return json.loads(json.dumps(result, ensure_ascii=False))


CASES = sorted(path.name.removesuffix(".expected.json.gz") for path in GOLDEN.glob("*.expected.json.gz"))


def test_the_cases_are_there():
    assert CASES == ["demo", "gen-3000", "gen-3000-no-body-index", "odd", "sample-3", "sample-3-and-6-limits"]


def test_every_fingerprinted_test_still_exists():
    """A test renamed or removed would no longer be checked against its fingerprints unnoticed."""
    answers = json.loads((GOLDEN / "answers.json").read_text())
    assert len(answers) > 80
    for test in answers:
        path, name = test.split("::")
        source = (REPO / path).read_text().lower()
        assert f"def {name.split('[')[0]}(" in source, test


@pytest.mark.parametrize("case", CASES)
def test_the_core_answers_as_before(case):
    golden = GOLDEN / f"{case}.expected.json.gz"
    expected = json.loads(gzip.decompress(golden.read_bytes()))
    answers = core_answers(expected["paths"], expected["config"])
    if os.environ.get("MWTAP_UPDATE_GOLDEN"):
        text = json.dumps({**expected, "result": answers}, ensure_ascii=False)
        golden.write_bytes(gzip.compress(text.encode(), 9, mtime=0))
    want = expected["result"]
    assert answers.keys() == want.keys()
    for key in want:  # one part at a time: a failure says which
        assert answers[key] == want[key], key
    assert repr(answers) == repr(want)  # the same types too: 1 == 1.0 == True for ==
    assert want["frames"] > 0 and want["violations"]
