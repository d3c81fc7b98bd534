"""The recorder's per-message work in the native core (`analysis._core.message_line`): the capture
line of one message, built, redacted and encoded in one call.

Differential: against the Python implementation it replaced (kept as the oracle while both exist).
"""

from __future__ import annotations

import base64
import json
import random
import string
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from analysis import _core
from analysis.capture import DEFAULT_MAX_PAYLOAD, dumps, message_record
from analysis.redact import redacted_message
from test_fuzz_engine import DEFAULT_EXAMPLES, SOAK_EXAMPLES, fuzz_settings


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
    return draw(st.sampled_from(shapes))


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


def python_line(conn, t, n, from_client, is_text, content, max_payload, redact) -> bytes:
    build = redacted_message if redact else message_record
    return dumps(build(conn, t, n, from_client, is_text, content, max_payload))


def check_same(case) -> None:
    assert _core.message_line(*case) == python_line(*case), case


@fuzz_settings(DEFAULT_EXAMPLES * 10)
@given(messages())
def test_native_line_is_the_python_line(case):
    check_same(case)


@pytest.mark.soak
@fuzz_settings(SOAK_EXAMPLES * 2)
@given(messages())
def test_native_line_is_the_python_line_soak(case):
    check_same(case)


from analysis import redact as python_redact  # noqa: E402
from analysis.frame import lift_body as python_lift_body  # noqa: E402

claims_segments = st.one_of(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_+/=*é",
                                    max_size=30),
                            st.dictionaries(st.sampled_from(["sub", "iss", "x"]), values, max_size=3).map(
                                lambda claims: b64url(json.dumps(claims).encode())))
secrets = st.one_of(st.text(max_size=20), st.builds(lambda head, claims, tail: f"{head}.{claims}{tail}",
                                                    st.sampled_from(["eyJhbGciOiJub25lIn0", "eyJ", "xeyJ", "eyJ\ud800"]),
                                                    claims_segments, st.sampled_from([".s", ".", "", ".a.b", "..é"])))
texts = st.one_of(st.text(max_size=30), token_texts(), noise(),
                  noise().map(lambda t: t.replace("\\u00", "\ud800\\u00")))


@fuzz_settings(DEFAULT_EXAMPLES * 3)
@given(secrets)
def test_native_marker_is_the_python_marker(secret):
    assert _core.jwt_sub(secret) == python_redact.jwt_sub(secret)
    assert _core.fingerprint(secret) == python_redact.fingerprint(secret)
    assert _core.marker(secret) == python_redact.marker(secret)


@fuzz_settings(DEFAULT_EXAMPLES * 3)
@given(texts)
def test_native_redact_text_is_the_python_one(text):
    assert _core.redact_text(text) == python_redact.redact_text(text)
    assert _core.replace_jwts(text) == python_redact._replace_jwts(text)


@fuzz_settings(DEFAULT_EXAMPLES * 3)
@given(st.one_of(st.sampled_from(TYPES), values), payload_objects().map(lambda obj: obj.get("body")))
def test_native_lift_body_is_the_python_one(type_, body):
    import orjson
    body = orjson.loads(json.dumps(body))  # a body as a capture's reader hands it over
    expected = python_lift_body(type_, body)
    native = orjson.loads(_core.lift_body(type_ if isinstance(type_, str) else None, orjson.dumps(body)))
    assert native == expected
