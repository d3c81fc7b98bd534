"""Server-assigned values: which recorded server frame introduced each value a recorded client
later echoed, and what the target assigned in its place during the replay.

A value is learnable when it is a string under an id key or shaped like an identifier
(`analysis.diff.is_identifier`), or the `sequence` of a messaging change (receipts echo it in
`sequenceList`; a resubscription derives `fromSeq`, the last sequence seen + 1, or
`newerThanSequence`, the last sequence seen, from it). Recorded and replayed server frames are matched by `FrameKeys`: a response by the
request it answers (its position in the connection), a notification by its type, its shape (the
payload with every volatile value masked) and its ordinal among notifications of that shape.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterator

import orjson

from analysis.diff import ID_KEYS, is_identifier, shape
from analysis.frame import as_list, is_messaging_notification

ValueKey = tuple
"""("s", string) or ("q", dialog id or None, sequence number): sequences count per dialog."""
SourceRef = tuple[str, int]
"""(recorded connection id, index `n` of the recorded server frame)."""
Path = tuple

_SEQUENCE_LIST_RE = re.compile(r'("sequenceList"\s*:\s*)(\[[^\]]*\]|-?\d+)')
DERIVED_SEQUENCES = {"fromSeq": 1, "newerThanSequence": 0}
"""Fields holding a sequence the client saw, plus this offset."""
_DERIVED_RE = re.compile(r'("(fromSeq|newerThanSequence)"\s*:\s*)(-?\d+)')
_INT_RE = re.compile(r"-?\d+")


class FrameKeys:
    """Match keys of the server frames of one connection (and its reconnects)."""

    def __init__(self) -> None:
        self._requests: dict[str, list[int]] = {}
        self._ordinals: dict[tuple, int] = {}

    def request_sent(self, request_id: str | None, index: int) -> None:
        if request_id is not None:
            self._requests.setdefault(request_id, []).append(index)

    def key(self, rec: dict, payload: Any) -> tuple | None:
        if rec.get("kind") == "resp":
            queue = self._requests.get(rec.get("reqId"))
            return ("resp", queue.pop(0)) if queue else None
        if rec.get("kind") == "notification" and isinstance(payload, dict):
            signature = (rec.get("type"), shape(payload))
            ordinal = self._ordinals[signature] = self._ordinals.get(signature, 0) + 1
            return ("note", *signature, ordinal)
        return None


def learnable(rec: dict, payload: Any) -> dict[Path, ValueKey]:
    """The values of a server frame that a client may echo, by JSON path."""
    found: dict[Path, ValueKey] = {}
    for path, key, value in _walk(payload):
        if isinstance(value, str) and value and (key in ID_KEYS or is_identifier(value)):
            found[path] = ("s", value)
    if is_messaging_notification(rec.get("type")) and isinstance(payload, dict):
        body = payload.get("body")
        changes = [(("body",), body)] if "OnlineEventDistribution" in rec.get("type", "") else \
            [(("body", "changes", i), c) for i, c in enumerate(as_list(body.get("changes")))] \
            if isinstance(body, dict) else []
        for path, change in changes:
            if isinstance(change, dict) and _is_int(change.get("sequence")):
                found[path + ("sequence",)] = ("q", _dialog(change), change["sequence"])
    return found


def echoed(payload: Any, known: dict[ValueKey, SourceRef]) -> dict[ValueKey, SourceRef]:
    """The learnable values a client frame carries, with the server frame each came from."""
    needs: dict[ValueKey, SourceRef] = {}
    dialog = _dialog(payload.get("body")) if isinstance(payload, dict) else None
    for _, key, value in _walk(payload):
        if isinstance(value, str) and ("s", value) in known:
            needs[("s", value)] = known[("s", value)]
        elif key == "sequenceList":
            for number in as_list(value):
                if _is_int(number) and ("q", dialog, number) in known:
                    needs[("q", dialog, number)] = known[("q", dialog, number)]
        elif key in DERIVED_SEQUENCES and _is_int(value):
            seen = ("q", dialog, value - DERIVED_SEQUENCES[key])
            if seen in known:
                needs[seen] = known[seen]
    return needs


def value_at(payload: Any, path: Path) -> Any:
    for step in path:
        if isinstance(step, int):
            if not isinstance(payload, list) or step >= len(payload):
                return None
        elif not isinstance(payload, dict):
            return None
        payload = payload[step] if isinstance(step, int) else payload.get(step)
    return payload


@dataclass
class Substitution:
    conn: str
    n: int
    request_type: str | None
    kind: str
    recorded: Any
    replayed: Any


class SubstitutionStore:
    """What the target assigned for each learned value (latest wins), shared by all connections."""

    def __init__(self) -> None:
        self.values: dict[ValueKey, Any] = {}
        self.matched: set[SourceRef] = set()
        self.given_up: set[SourceRef] = set()
        self.finished: set[str] = set()
        """Recorded connections whose replay ended: values they did not yield will not come."""
        self.made: list[Substitution] = []

    def learn(self, source: SourceRef, recorded: dict[Path, ValueKey], payload: Any) -> None:
        for path, value_key in recorded.items():
            new = value_at(payload, path)
            if new is not None and type(new) is type(value_key[-1]):
                self.values[value_key] = new
        self.matched.add(source)

    def missing(self, sources) -> set[SourceRef]:
        return {s for s in sources if s not in self.matched and s not in self.given_up and s[0] not in self.finished}

    def rewrite(self, text: str, needs: dict[ValueKey, SourceRef], conn: str, n: int,
                request_type: str | None) -> str:
        """`text` with every learned value replaced textually (all other bytes unchanged)."""
        numbers: dict[int, int] = {}
        for value_key in needs:
            kind, old = value_key[0], value_key[-1]
            new = self.values.get(value_key)
            if new is None or new == old:
                continue
            if kind == "s":
                encoded_old, encoded_new = orjson.dumps(old).decode(), orjson.dumps(new).decode()
                if encoded_old not in text:
                    continue
                text = text.replace(encoded_old, encoded_new)
            else:
                numbers[old] = new
            self.made.append(Substitution(conn, n, request_type, "sequence" if kind == "q" else "string", old, new))
        if numbers:
            text = _SEQUENCE_LIST_RE.sub(lambda m: m.group(1) + _INT_RE.sub(
                lambda d: str(numbers.get(int(d.group(0)), d.group(0))), m.group(2)), text)
            text = _DERIVED_RE.sub(lambda m: _derived(m, numbers), text)
        return text


def _derived(match: re.Match, numbers: dict[int, int]) -> str:
    offset = DERIVED_SEQUENCES[match.group(2)]
    seen = int(match.group(3)) - offset
    return match.group(0) if seen not in numbers else f"{match.group(1)}{numbers[seen] + offset}"


def _dialog(body: Any) -> str | None:
    """The dialog a messaging change or a request body is about."""
    dialog = body.get("dialogId") if isinstance(body, dict) else None
    return dialog if isinstance(dialog, str) else None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _walk(value: Any, path: Path = (), key: str | None = None) -> Iterator[tuple[Path, str | None, Any]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _walk(v, path + (k,), k)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _walk(v, path + (i,), key)
        yield path, key, value
    else:
        yield path, key, value
