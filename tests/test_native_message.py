"""The recorder's per-message work in the native core (`analysis._core.message_line`): the capture
line of one message, built, redacted and encoded in one call.

The Python implementation it replaced is gone; what it wrote is kept in
tests/data/native_message_corpus.jsonl: 983 messages, 443 texts and 291 secrets drawn from the
strategies below, with the line, redacted text and marker the Python implementation gave for each
(generated at commit 2e576a2, where a differential test of 20,000 generated messages found no
difference). Beside that corpus, properties that need no oracle: no token in clear in any
encoding, stable fingerprints, `size` the relayed length, index fields those of the payload.
"""

from __future__ import annotations

import base64
import json
import random
import string
from urllib.parse import quote

from pathlib import Path
from urllib.parse import unquote

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from analysis import _core
from analysis.capture import DEFAULT_MAX_PAYLOAD
from test_fuzz_engine import DEFAULT_EXAMPLES, SOAK_EXAMPLES, fuzz_settings

CORPUS = Path(__file__).parent / "data" / "native_message_corpus.jsonl"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


JWT_HEADER = b64url(b'{"alg":"HS256"}')


def jwt(claims: dict, signature: str = "c2ln") -> str:
    return f"{JWT_HEADER}.{b64url(json.dumps(claims).encode())}.{signature}"


def json_escape(text: str, rng: random.Random, twice: bool = False) -> str:
    """Some characters of `text` written as `\\u00XX` (`\\\\u00XX` when `twice`), hex case mixed."""
    slash = "\\\\" if twice else "\\"
    out = []
    for c in text:
        if rng.random() < 0.3:
            code = f"{ord(c):04x}"
            out.append(slash + "u" + (code.upper() if rng.random() < 0.5 else code))
        else:
            out.append(c)
    return "".join(out)


def percent(text: str, rng: random.Random, twice: bool = False) -> str:
    out = []
    for c in text:
        if rng.random() < 0.3:
            code = f"{ord(c):02x}"
            code = code.upper() if rng.random() < 0.5 else code
            out.append(("%25" if twice else "%") + code)
        else:
            out.append(c)
    return "".join(out)


ENCODINGS = ["plain", "json", "json2", "pct", "pct2", "quote"]


def encoded(token: str, how: str, rng: random.Random) -> str:
    if how == "json":
        return json_escape(token, rng)
    if how == "json2":
        return json_escape(token, rng, twice=True)
    if how == "pct":
        return percent(token, rng)
    if how == "pct2":
        return percent(token, rng, twice=True)
    if how == "quote":
        return quote(quote(token, safe=""), safe="")
    return token


scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2 ** 70), 2 ** 70), st.integers(-5, 5),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8),
    st.sampled_from(["", "CONSUMER", "AGENT", "READ", "ACCEPT", "COMPOSING", "d1", "c1"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                        st.dictionaries(st.text(max_size=5), inner, max_size=3)),
                      max_leaves=6)
ids = st.one_of(st.text(max_size=4), values)
TYPES = ["ms.MessagingEventNotification", ".ams.ms.MessagingEventNotification", "ms.OnlineEventDistribution",
         "cqm.ExConversationChangeNotification", "ms.PublishEvent", ".ams.ms.PublishEvent", "PublishEvent",
         "xPublishEvent", "GetClock", ".GetClock$Response", "cm.ConsumerRequestConversation", "StringResponse"]


@st.composite
def changes(draw):
    change = {}
    for key, strategy in (("dialogId", st.one_of(st.text(max_size=4), values)), ("conversationId", values),
                          ("sequence", st.one_of(st.integers(-3, 2 ** 65), values)),
                          ("event", st.one_of(st.fixed_dictionaries({}, optional={
                              "type": st.one_of(st.sampled_from(["ContentEvent", "AcceptStatusEvent", "ChatStateEvent"]),
                                                values),
                              "status": values, "chatState": values, "sequenceList": values}), values)),
                          ("originatorId", values), ("originatorPId", values),
                          ("originatorMetadata", st.one_of(st.fixed_dictionaries({"role": values}), values)),
                          ("serverTimestamp", st.one_of(st.integers(0, 2 ** 53), st.floats(allow_nan=False,
                                                                                           allow_infinity=False)))):
        if draw(st.booleans()):
            change[key] = draw(strategy)
    return change


@st.composite
def payload_objects(draw):
    body = draw(st.one_of(*[st.fixed_dictionaries({}, optional={
        "subscriptionId": ids, "dialogId": ids, "conversationId": ids,
        "sequence": st.one_of(st.integers(-2, 2 ** 64), values),
        "changes": st.one_of(st.lists(st.one_of(changes(), values), max_size=3), changes(), values),
        "event": st.one_of(st.fixed_dictionaries({}, optional={
            "type": values, "status": values, "sequenceList": st.one_of(st.lists(values, max_size=4), values)}),
            values)})] * 4, values))
    obj = draw(st.fixed_dictionaries({}, optional={
        "kind": st.one_of(st.sampled_from(["req", "resp", "notification"]), values),
        "id": ids, "reqId": ids, "code": values}))
    if draw(st.integers(0, 9)) < 8:  # mostly the frames the index is for
        obj["type"] = draw(st.sampled_from(TYPES))
        obj["body"] = body
    else:
        obj.update(draw(st.fixed_dictionaries({}, optional={"type": values, "body": st.just(body)})))
    extra = draw(st.dictionaries(st.text(max_size=4), values, max_size=2))
    return {**extra, **obj} if draw(st.booleans()) else {**obj, **extra}


def serialize(obj, rng: random.Random) -> str:
    text = json.dumps(obj, ensure_ascii=rng.random() < 0.5,
                      separators=rng.choice([(",", ":"), (", ", ": ")]), indent=rng.choice([None, None, 1]))
    if rng.random() < 0.2 and text.startswith("{") and len(text) > 2:  # a duplicated key, first copy kept by text
        text = '{"type":"' + rng.choice(TYPES) + '",' + text[1:]
    if rng.random() < 0.1:
        text = rng.choice([" ", "\n", "\t", "\r\n", "\u00a0", "\x1c"]) + text
    return text


@st.composite
def token_texts(draw):
    """Texts that carry tokens, written every way the redaction must find them."""
    return draw(tokened_texts())[0]


@st.composite
def tokened_texts(draw):
    """(text, the token it carries)."""
    rng = random.Random(draw(st.integers(0, 2 ** 32)))
    sub = draw(st.one_of(st.none(), st.text(max_size=6)))
    claims = {"sub": sub} if sub is not None else {"iss": "x"}
    token = jwt(claims, draw(st.sampled_from(["c2ln", "", "a-b_c"])))
    how = draw(st.sampled_from(ENCODINGS))
    written = encoded(token, how, rng)
    key = draw(st.sampled_from(['"jwt"', '"\\u006awt"', '"\\u006Aw\\u0074"', '"jwt"', '"JWT"']))
    opaque = draw(st.text(max_size=10))
    shapes = [
        f"x {written} y",
        '{"kind":"req","type":"InitConnection","body":{},"headers":[{"type":".ams.headers.ConsumerAuthentication",'
        f'{key}:"{written}"}}]}}',
        f'{{{key} :  "{json.dumps(opaque)[1:-1]}", {key}:"{written}"}}',
        f'{{"type":"x","payload":"{json.dumps(json.dumps({"jwt": token}))[1:-1]}"}}',
        f"https://h/p?a={written}&b=1",
        f'{key}:"{written}',
    ]
    return draw(st.sampled_from(shapes)), token


@st.composite
def noise(draw):
    """Escapes and percent signs that are not tokens, markers, odd characters."""
    rng = random.Random(draw(st.integers(0, 2 ** 32)))
    pieces = ["\\u0041", "\\\\u0065yJ", "\\\\\\u0065", "%41", "%2541", "%252", "%zz", "%", "\\u00", "eyJ", "eyJabcd.e.",
              "[redacted sha256:0123456789ab]", '"jwt":""', '"jwt":"[redacted sha256:0123456789ab]"', "\u2028",
              "\x00", "é", "😀", "\ud7ff", '"jwt"\u2003:\u00a0"s"', '"jwt"\x1c:"s\\u00e9\\n"', '"jwt":"a\\ud800"']
    return "".join(rng.choice(pieces + [rng.choice(string.printable)]) for _ in range(rng.randint(1, 12)))


@st.composite
def contents(draw):
    rng = random.Random(draw(st.integers(0, 2 ** 32)))
    kind = draw(st.sampled_from(["json"] * 5 + ["token", "token", "noise", "mixed", "mixed", "binary", "latin1", "huge"]))
    if kind == "json":
        return serialize(draw(payload_objects()), rng).encode()
    if kind == "token":
        return draw(token_texts()).encode()
    if kind == "noise":
        return draw(noise()).encode("utf-8", "surrogatepass")
    if kind == "mixed":
        obj = draw(payload_objects())
        obj["token"] = draw(token_texts())
        return serialize(obj, rng).encode()
    if kind == "binary":
        return draw(st.binary(max_size=40))
    if kind == "latin1":
        return b"\xff\xfe" + draw(token_texts()).encode() + draw(st.binary(max_size=6))
    return draw(st.sampled_from([
        b'{"type":"x","id":123456789012345678901234567890,"reqId":-9223372036854775809}',
        b'{"id":1e400}', b'{"id":-0,"reqId":-0.0,"code":1E2}', b'{"id":18446744073709551615,"code":1e-400}',
        b'{"type":"ms.PublishEvent","body":{"sequence":18446744073709551616}}',
        b"[" * 1100 + b"]" * 1100, b'{"a":' * 1025 + b"1" + b"}" * 1025, b'{"a":' * 1023 + b"1" + b"}" * 1023,
        b'{"kind":"req"} x', b'\xef\xbb\xbf{"kind":"req"}', b'{"kind":"req\\ud800"}']))


times = st.one_of(st.floats(allow_nan=False), st.sampled_from([1e16, 1.5, 0.1, 1e-7, -0.0, 1.7e9 + 0.123456]),
                  st.integers(0, 2 ** 40))


@st.composite
def messages(draw):
    content = draw(contents())
    max_payload = draw(st.one_of(*[st.just(DEFAULT_MAX_PAYLOAD)] * 3, st.integers(-3, len(content) + 3)))
    is_text = draw(st.sampled_from([True, True, True, False]))
    return (draw(st.text(max_size=6)), draw(times), draw(st.integers(0, 2 ** 63 - 1)), draw(st.booleans()),
            is_text, content, max_payload, draw(st.sampled_from([True, True, False])))




def t_value(tagged):
    kind, value = tagged
    return value if kind == "i" else float(value)


def corpus():
    with CORPUS.open() as f:
        return [json.loads(line) for line in f]


def test_message_lines_are_the_ones_the_python_recorder_wrote():
    cases = [case for case in corpus() if "message" in case]
    assert len(cases) > 900
    for case in cases:
        conn, t, n, from_client, is_text, content, max_payload, redact = case["message"]
        line = _core.message_line(conn, t_value(t), n, from_client, is_text, base64.b64decode(content),
                                  max_payload, redact)
        assert line == case["line"].encode(), case


def test_redacted_texts_and_markers_are_the_ones_python_gave():
    texts = secrets = 0
    for case in corpus():
        if "redact_text" in case:
            texts += 1
            assert _core.redact_text(case["redact_text"]) == case["expected"], case
            assert _core.replace_jwts(case["redact_text"]) == case["replace_jwts"], case
        elif "marker" in case:
            secrets += 1
            assert _core.marker(case["marker"]) == case["expected"], case
            assert _core.jwt_sub(case["marker"]) == case["sub"], case
    assert texts > 400 and secrets > 250


def test_dict_builders_are_the_line_read_back():
    from analysis.capture import message_record
    from analysis.redact import redacted_message
    content = b'{"kind":"req","id":1,"type":"x","token":"' + jwt({"sub": "s"}).encode() + b'"}'
    for build, redact in ((message_record, False), (redacted_message, True)):
        assert build("c", 1.25, 3, True, True, content, 30) == orjson.loads(
            _core.message_line("c", 1.25, 3, True, True, content, 30, redact))


_ESCAPE = __import__("re").compile(r"\\{1,2}u00([0-9a-fA-F]{2})")


def normalized(text: str) -> str:
    """`text` with every JSON escape and percent-encoding (twice) undone."""
    return unquote(unquote(_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), text)))


@st.composite
def token_messages(draw):
    text, token = draw(tokened_texts())
    prefix = draw(st.sampled_from([b"", b"\xff\xfe", b'{"kind":"req","body":{"x":"']))
    content = prefix + text.encode() + draw(st.sampled_from([b"", b"\x80", b'"}}']))
    max_payload = draw(st.one_of(st.just(DEFAULT_MAX_PAYLOAD), st.integers(0, len(content))))
    return content, token, draw(st.booleans()), max_payload


@fuzz_settings(DEFAULT_EXAMPLES * 3)
@given(token_messages())
def test_no_token_in_clear_in_any_encoding(case):
    content, token, is_text, max_payload = case
    line = _core.message_line("c", 1.0, 0, True, is_text, content, max_payload, True)
    rec = orjson.loads(line)
    payload = rec["text"] if "text" in rec else base64.b64decode(rec["b64"]).decode("latin-1")
    claims = token.split(".")[1]
    for seen in (line.decode(), payload, normalized(payload), normalized(normalized(payload))):
        assert claims not in seen
    assert rec["redacted"] is True
    assert rec["size"] == len(content)
    if "truncated" not in rec:  # the token's marker, or a "jwt" member's (its value as JSON decodes it)
        assert "[redacted sha256:" in payload


@fuzz_settings(DEFAULT_EXAMPLES)
@given(st.one_of(st.none(), st.text(max_size=8)), st.sampled_from(ENCODINGS), st.sampled_from(ENCODINGS),
       st.integers(0, 2 ** 32))
def test_fingerprint_is_the_tokens_however_written(sub, first, second, seed):
    import hashlib
    rng = random.Random(seed)
    token = jwt({"sub": sub} if sub is not None else {"iss": "i"})
    digest = hashlib.sha256(token.encode()).hexdigest()[:12]
    identity = f" sub:{hashlib.sha256(sub.encode()).hexdigest()[:12]}" if sub is not None else ""
    want = f"[redacted sha256:{digest}{identity}]"
    text = f"{encoded(token, first, rng)} and {encoded(token, second, rng)}"
    assert _core.redact_text(text) == f"{want} and {want}"
    assert _core.fingerprint(token) == digest


@fuzz_settings(DEFAULT_EXAMPLES * 3)
@given(messages())
def test_line_keeps_size_and_payload(case):
    conn, t, n, from_client, is_text, content, max_payload, redact = case
    line = _core.message_line(*case)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    rec = orjson.loads(line)
    assert (rec["rec"], rec["conn"], rec["n"], rec["size"]) == ("msg", conn, n, len(content))
    assert rec["dir"] == ("c2s" if from_client else "s2c")
    if not rec.get("redacted"):
        kept = content[:max_payload] if len(content) > max_payload else content
        assert rec.get("truncated", False) == (len(content) > max_payload)
        if "b64" in rec:
            assert base64.b64decode(rec["b64"]) == kept
        else:
            assert kept.startswith(rec["text"].encode()) and len(kept) - len(rec["text"].encode()) < 4
    else:
        assert redact


def is_int(value) -> bool:
    return value.__class__ is int and -(2 ** 63) <= value < 2 ** 64


@fuzz_settings(DEFAULT_EXAMPLES * 3)
@given(payload_objects(), st.booleans())
def test_index_fields_are_the_payloads(obj, ascii_only):
    content = json.dumps(obj, ensure_ascii=ascii_only).encode()
    rec = orjson.loads(_core.message_line("c", 1.0, 0, False, True, content, DEFAULT_MAX_PAYLOAD, False))
    for key in ("kind", "type"):
        assert rec.get(key) == (obj.get(key) if isinstance(obj.get(key), str) else None)
    for key in ("id", "reqId"):  # a number as its JSON text; beyond 64 bits orjson reads a float
        value = obj.get(key)
        want = (value if isinstance(value, str) else str(value) if is_int(value)
                else orjson.dumps(float(value)).decode() if isinstance(value, (int, float)) and value is not True
                and value is not False else None)
        assert rec.get(key) == want
    body = obj.get("body") if isinstance(obj.get("body"), dict) else {}
    for key in ("subscriptionId", "dialogId", "conversationId"):
        assert rec.get(key) == (body.get(key) if isinstance(body.get(key), str) else None)
    sequence = body.get("sequence")
    assert rec.get("sequence") == (sequence if is_int(sequence) else None)
    type_ = obj.get("type") if isinstance(obj.get("type"), str) else ""
    if "MessagingEventNotification" in type_:
        changes = body.get("changes")
        changes = changes if isinstance(changes, list) else [] if changes is None else [changes]
        assert len(rec["events"]) == sum(isinstance(c, dict) for c in changes)
    if (type_ == "PublishEvent" or type_.endswith(".PublishEvent")) and isinstance(obj.get("body"), dict):
        event = body.get("event") if isinstance(body.get("event"), dict) else {}
        assert rec["event"][:2] == [v if not isinstance(v, (dict, list)) else None
                                    for v in (event.get("type"), event.get("status"))]


@pytest.mark.soak
@fuzz_settings(SOAK_EXAMPLES)
@given(token_messages())
def test_no_token_in_clear_in_any_encoding_soak(case):
    test_no_token_in_clear_in_any_encoding.hypothesis.inner_test(case)


def test_writer_takes_native_lines_like_records(tmp_path):
    """The recorder hands the writer its encoded lines (`write_line`): same header, rotation, counts and
    bytes as records written through `write`."""
    from recorder.writer import CaptureWriter, part_path
    header = lambda part: {"rec": "header", "t": 0.0, "format": "mwtap-capture", "version": 1,  # noqa: E731
                           "recording": "r1", "part": part}
    path = tmp_path / "c.jsonl"
    writer = CaptureWriter(path, header, rotate_bytes=10_000)
    sent = []
    for n in range(200):
        line = _core.message_line("c", 1.5, n, True, True, b'{"kind":"req","id":%d,"p":"%s"}' % (n, b"y" * 80),
                                  DEFAULT_MAX_PAYLOAD, True)
        sent.append(line)
        writer.write_line(line)
        if n % 50 == 0:
            writer.write({"rec": "ping", "t": 1.0, "conn": "c", "dir": "c2s", "payload": ""})
    writer.close()
    writer.write_line(sent[0])
    assert writer.written == 204 and writer.dropped == 1
    assert writer.paths == [part_path(path, n) for n in range(1, len(writer.paths) + 1)] and len(writer.paths) >= 3
    got = []
    for part, file in enumerate(writer.paths, 1):
        lines = file.read_bytes().splitlines(keepends=True)
        assert orjson.loads(lines[0]) == header(part)
        got += [line for line in lines[1:] if b'"msg"' in line]
    assert got == sent


def test_messages_encoded_into_the_writers_buffer_make_the_same_parts(tmp_path):
    """The recorder's way (`writer.lines.message`, then `write_out` when it says the buffer is full)
    writes the same parts, byte for byte, rotated at the same lines, as `write_line` of each message's
    `message_line`, records written through `write` in between."""
    from recorder.writer import CaptureWriter
    header = lambda part: {"rec": "header", "t": 0.0, "format": "mwtap-capture", "version": 1,  # noqa: E731
                           "recording": "r1", "part": part}
    writers = {}
    for way in ("lines", "message"):
        (tmp_path / way).mkdir()
        writers[way] = CaptureWriter(tmp_path / way / "c.jsonl", header, rotate_bytes=10_000)
    for n in range(300):
        fields = ("c", 1.5 + n, n, n % 2 == 0, True, b'{"kind":"req","id":%d,"p":"%s"}' % (n, b"y" * (n % 97)),
                  DEFAULT_MAX_PAYLOAD, True)
        writers["lines"].write_line(_core.message_line(*fields))
        if writers["message"].lines.message(*fields):
            writers["message"].write_out()
        if n % 40 == 0:
            for writer in writers.values():
                writer.write({"rec": "ping", "t": 1.0, "conn": "c", "dir": "c2s", "payload": ""})
    for writer in writers.values():
        writer.close()
    by_lines, by_message = writers["lines"], writers["message"]
    assert len(by_message.paths) >= 4 and by_message.written == by_lines.written == 308
    assert [p.read_bytes() for p in by_message.paths] == [p.read_bytes() for p in by_lines.paths]
    # closed: a message still handed over is dropped and counted, and no part is opened for it
    by_message.rotate_bytes = 1
    if by_message.lines.message(*fields):
        by_message.write_out()
    assert by_message.dropped == 1 and not by_message.pending and len(by_message.paths) == len(by_lines.paths)
