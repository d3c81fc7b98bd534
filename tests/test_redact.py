"""analysis.redact: secrets replaced by fingerprint markers, nothing else touched."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from urllib.parse import unquote_to_bytes

from hypothesis import given, settings
from hypothesis import strategies as st

from analysis.redact import (fingerprint, fingerprints, marked_tokens, marker, redact_header_value, redact_headers, redact_text,
                             redact_url, redaction_info)

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhYmMifQ.c2lnbmF0dXJlLWJ5dGVz"


def sha12(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def mark(secret: str) -> str:
    """The documented marker; a JWT's also carries the fingerprint of its `sub` claim."""
    identity = ""
    if secret.startswith("eyJ") and secret.count(".") == 2:
        claims = json.loads(base64.urlsafe_b64decode(secret.split(".")[1] + "=="))
        identity = f" sub:{sha12(claims['sub'])}" if "sub" in claims else ""
    return f"[redacted sha256:{sha12(secret)}{identity}]"


def init_connection(jwt: str) -> dict:
    return {"kind": "req", "id": "0", "type": "InitConnection",
            "headers": [{"type": ".ams.headers.ClientProperties", "os": "LINUX"},
                        {"type": ".ams.headers.ConsumerAuthentication", "jwt": jwt}]}


def test_marker_is_the_documented_fingerprint():
    assert marker("s3cret") == mark("s3cret") == f"[redacted sha256:{fingerprint('s3cret')}]"
    assert fingerprints(f"a {marker('x')} b {marker('y')}") == [fingerprint("x"), fingerprint("y")]
    assert fingerprints("no marker [redacted sha256:xyz]") == []


def test_jwt_marker_carries_the_sub_fingerprint_so_refreshed_tokens_can_be_linked():
    refreshed = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhYmMiLCJpYXQiOjJ9.b3RoZXItc2ln"  # same sub "abc"
    assert marker(JWT) == mark(JWT) and JWT not in marker(JWT)
    assert marked_tokens(marker(JWT) + marker(refreshed)) == [(fingerprint(JWT), sha12("abc")),
                                                               (fingerprint(refreshed), sha12("abc"))]
    assert marked_tokens(marker("opaque")) == [(fingerprint("opaque"), None)]


def test_authorization_keeps_the_scheme_and_cookies_lose_every_value():
    assert redact_header_value("Authorization", f"jwt {JWT}") == f"jwt {mark(JWT)}"
    assert redact_header_value("authorization", "Bearer opaque-123") == f"Bearer {mark('opaque-123')}"
    assert redact_header_value("Authorization", "lonetoken") == mark("lonetoken")
    assert redact_header_value("Cookie", "a=1; sid=xyz; flag") == f"a={mark('1')}; sid={mark('xyz')}; flag"
    assert redact_header_value("Set-Cookie", "sid=xyz; Path=/; HttpOnly") == f"sid={mark('xyz')}; Path=/; HttpOnly"
    assert redact_header_value("X-Custom", f"v={JWT}") == f"v={mark(JWT)}"
    assert redact_header_value("Host", "example.com") == "example.com"
    pairs = [["Host", "h"], ["Authorization", f"JWT {JWT}"], ["Cookie", "a=b"]]
    assert redact_headers(pairs) == [["Host", "h"], ["Authorization", f"JWT {mark(JWT)}"], ["Cookie", f"a={mark('b')}"]]


def test_redacting_twice_changes_nothing_more():
    once = redact_header_value("Authorization", f"jwt {JWT}")
    assert redact_header_value("Authorization", once) == once
    cookie = redact_header_value("Cookie", "a=1")
    assert redact_header_value("Cookie", cookie) == cookie
    text = redact_text(json.dumps(init_connection("opaque")))
    assert redact_text(text) == text


def test_urls_lose_jwts_and_credential_parameters():
    url = f"ws://h:1/ws_api/account/1/messaging/consumer/{JWT}?v=2&access_token=a%2Fb&room=7#frag"
    assert redact_url(url) == (f"ws://h:1/ws_api/account/1/messaging/consumer/{mark(JWT)}"
                               f"?v=2&access_token={mark('a/b')}&room=7#frag")
    for name in ("token", "jwt", "auth", "X-Auth-Token", "sessionId", "api_key"):
        assert redact_url(f"ws://h/p?{name}=v4lue&x=1") == f"ws://h/p?{name}={mark('v4lue')}&x=1"
    assert redact_url("wss://bob:pa%40ss@h:1/p?v=3") == f"wss://bob:{mark('pa@ss')}@h:1/p?v=3"
    assert redact_url(redact_url("wss://bob:pw@h/p")) == redact_url("wss://bob:pw@h/p")  # marked once
    for plain in ("ws://h/p?v=3&room=1", "ws://bob@h/p", "ws://[::1]:9000/p?x=a:b@c"):
        assert redact_url(plain) is plain


def test_text_payloads():
    text = json.dumps({"kind": "req", "id": "1", "type": "X", "body": {"t": JWT, "u": JWT}})
    assert redact_text(text) == text.replace(JWT, mark(JWT))
    opaque = json.dumps(init_connection("not-a-jwt-but-secret"))
    assert redact_text(opaque) == opaque.replace("not-a-jwt-but-secret", mark("not-a-jwt-but-secret"))
    escaped = json.dumps(init_connection("a/b")).replace("a/b", "a\\/b")  # valid JSON, escaped otherwise
    out = redact_text(escaped)
    assert json.loads(out)["headers"][1]["jwt"] == mark("a/b") and "a\\/b" not in out
    single = json.dumps({**init_connection("x"), "headers": init_connection("solo")["headers"][1]})
    assert mark("solo") in redact_text(single)
    other = json.dumps({"type": "Other", "headers": [{"type": ".ams.headers.ConsumerAuthentication", "jwt": "s3cret"}]})
    assert redact_text(other) == other.replace("s3cret", mark("s3cret"))  # a "jwt" member is a credential anywhere
    plain = '{"kind":"req","id":"1","type":"GetClock"}'
    assert redact_text(plain) is plain
    assert redact_text("InitConnection ConsumerAuthentication {broken") == "InitConnection ConsumerAuthentication {broken"


def test_redaction_info():
    assert redaction_info(True)["enabled"] is True and redaction_info(True)["fingerprint"] == "sha256/12"
    assert redaction_info(False) == {"enabled": False, "fingerprint": "sha256/12", "applied_to": []}


TOKEN = st.text(st.characters(min_codepoint=33, max_codepoint=0x2FF, exclude_characters=";,\"\\&#"),
                min_size=8, max_size=80)


def redacted_everywhere(token: str) -> list[str]:
    return [
        redact_text(json.dumps(init_connection(token), ensure_ascii=False)),
        redact_text(json.dumps(init_connection(token))),
        redact_header_value("Authorization", f"jwt {token}"),
        redact_header_value("Cookie", f"sid={token}"),
        redact_url(f"ws://h/p?token={token}"),
    ]


@settings(max_examples=200, deadline=None)
@given(TOKEN)
def test_no_8_char_piece_of_a_token_survives(token):
    pieces = {token[i:i + 8] for i in range(len(token) - 7)}
    # A piece that the text around the token holds anyway (e.g. "onnectio" of "InitConnection") is no leak.
    for out, around in zip(redacted_everywhere(token), redacted_everywhere("\x01" * 8)):
        assert not [p for p in pieces if p in out and p not in around], out


def test_message_records_keep_no_token_in_index_fields_or_a_truncated_tail():
    from analysis.redact import redacted_message
    payload = json.dumps({"kind": "req", "id": JWT, "type": "Echo", "body": {"conversationId": JWT}}).encode()
    record = redacted_message("c", 1.0, 0, True, True, payload)
    assert record["redacted"] and record["size"] == len(payload)
    assert JWT not in json.dumps(record) and record["id"] == mark(JWT)
    # The cut falls inside the token: the tail must not keep a piece of it.
    cut = payload.index(JWT.encode()) + 20
    truncated = redacted_message("c", 1.0, 0, True, True, payload, max_payload=cut)
    assert truncated["truncated"] and truncated["size"] == len(payload)
    tail = JWT[:20]
    assert all(tail[i:i + 8] not in json.dumps(truncated) for i in range(len(tail) - 7))
    assert truncated["type"] == "Echo"  # index fields come from the whole payload


def test_truncated_text_is_cut_at_a_character_boundary():
    from analysis.capture import message_record
    record = message_record("c", 1.0, 0, True, True, "ééé".encode(), max_payload=3)
    assert record["text"] == "é" and record["truncated"] and "utf8" not in record and record["size"] == 6


def test_binary_and_non_utf8_payloads_lose_their_jwts():
    from analysis.redact import redacted_message
    for is_text, payload in ((False, b"\x00\x01" + JWT.encode() + b"\xff"), (True, b"\xff " + JWT.encode())):
        record = redacted_message("c", 1.0, 0, True, is_text, payload)
        assert record["redacted"] and record["size"] == len(payload) and "text" not in record
        assert base64.b64decode(record["b64"]) == payload.replace(JWT.encode(), mark(JWT).encode())
    plain = b"\x00\x01 no token here eyJ"
    assert "redacted" not in redacted_message("c", 1.0, 0, True, False, plain)


# -- tokens written in another encoding ------------------------------------------------------------
# A client or a library may JSON-escape any character of a token (`\u0065` for "e", `\/` for "/"),
# percent-encode it in a URL, or send the whole message as a binary frame: the token is still a
# secret, and its marker is the one the plain token gets (same fingerprint).

SECRET_JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4eXoifQ.S1gn4tur3-Byt3s_xyz"


def json_escaped(token: str, which) -> str:
    """`token` with the characters `which(i, c)` selects written as `\\u00XX` escapes."""
    return "".join(f"\\u{ord(c):04x}" if which(i, c) else c for i, c in enumerate(token))


def percent_encoded(token: str, which, twice: bool = False) -> str:
    prefix = "%25" if twice else "%"
    return "".join(f"{prefix}{ord(c):02X}" if which(i, c) else c for i, c in enumerate(token))


MARKER_BYTES_RE = re.compile(rb"\[redacted sha256:[0-9a-f]{12}(?: sub:[0-9a-f]{12})?\]")


def decoded_views(data: bytes) -> list[bytes]:
    """`data` as written and as a reader would decode it: JSON escapes undone (twice, for JSON in a
    JSON string), percent-encoding undone (twice), both, and every base64 run decoded."""
    def unescape(b: bytes) -> bytes:
        b = re.sub(rb"\\+u([0-9a-fA-F]{4})", lambda m: chr(int(m[1], 16)).encode("utf-8", "surrogatepass"), b)
        return re.sub(rb"\\+([\"\\/])", rb"\1", b)

    unescaped = unescape(unescape(data))
    views = [data, unescaped]
    for view in (data, unescaped):
        views.append(unquote_to_bytes(unquote_to_bytes(view)))
    runs = (run[:len(run) - len(run) % 4] for run in re.findall(rb"[A-Za-z0-9+/_-]{12,}", data))
    views.append(b"\n".join(base64.b64decode(run.replace(b"-", b"+").replace(b"_", b"/")) for run in runs))
    return views


def pieces_in(secret: str, data: bytes, around: bytes = b"") -> set[str]:
    """8-character pieces of `secret` found in any decoded view of `data` (none that `around` has,
    none of a marker's own text)."""
    data = MARKER_BYTES_RE.sub(b"\0", data)
    views, ignored = decoded_views(data), decoded_views(around) if around else []
    pieces = {secret[i:i + 8].encode() for i in range(len(secret) - 7)}
    return {p.decode() for p in pieces for view in views if p in view and not any(p in v for v in ignored)}


def test_a_json_escaped_jwt_in_a_payload_gets_the_plain_tokens_marker():
    forms = [json_escaped(SECRET_JWT, lambda i, c: i == 0),  # "\u0065yJ..."
             json_escaped(SECRET_JWT, lambda i, c: c == "."),  # the dots
             json_escaped(SECRET_JWT, lambda i, c: i == len(SECRET_JWT) - 1),  # the signature's end
             json_escaped(SECRET_JWT, lambda i, c: True).upper().replace("\\U", "\\u"),  # every char, hex in capitals
             ]
    for form in forms:
        text = '{"kind":"req","id":"1","type":"Echo","body":{"t":"' + form + '","u":"caf\\u00e9"}}'
        out = redact_text(text)
        assert json.loads(out)["body"] == {"t": mark(SECRET_JWT), "u": "café"}, form
        assert not pieces_in(SECRET_JWT, out.encode()), form
    # A JSON document carried in a JSON string: the escape is escaped once more.
    inner = '{"t":"' + json_escaped(SECRET_JWT, lambda i, c: i % 3 == 0) + '"}'
    outer = json.dumps({"type": "Echo", "body": inner})
    out = redact_text(outer)
    assert json.loads(json.loads(out)["body"]) == {"t": mark(SECRET_JWT)} and not pieces_in(SECRET_JWT, out.encode())


def test_a_percent_encoded_jwt_under_any_query_parameter_or_in_the_path_is_replaced():
    forms = [percent_encoded(SECRET_JWT, lambda i, c: c == "."),  # %2E for the dots
             percent_encoded(SECRET_JWT, lambda i, c: c == ".").replace("%2E", "%2e"),
             percent_encoded(SECRET_JWT, lambda i, c: i % 2 == 0),
             percent_encoded(SECRET_JWT, lambda i, c: c == ".", twice=True)]  # %252E: encoded twice
    for form in forms:
        assert redact_url(f"wss://h/p?v=3&ref={form}&room=7") == f"wss://h/p?v=3&ref={mark(SECRET_JWT)}&room=7", form
        assert redact_url(f"wss://h/a/{form}/b") == f"wss://h/a/{mark(SECRET_JWT)}/b", form
        text = json.dumps({"type": "Link", "url": f"https://h/x?next={form}"})
        assert json.loads(redact_text(text))["url"] == f"https://h/x?next={mark(SECRET_JWT)}", form
        assert redact_header_value("Referer", f"https://h/?r={form}") == f"https://h/?r={mark(SECRET_JWT)}"
    # Escapes and percent signs without a token leave the text as it was (the same object).
    for text in ('{"type":"X","body":{"m":"50% off, caf\\u00e9 \\u2603 %41%42"}}', "100%", "a\\u0041b", "%2E%2E"):
        assert redact_text(text) is text
    url = "ws://h/p?q=caf%C3%A9&next=%2Fhome%3Fa%3Db"
    assert redact_url(url) is url


def test_an_opaque_jwt_member_is_replaced_whatever_a_json_parser_would_keep():
    secret = "opaque-Dup-9Kq2Lm7Xv"
    auth = '{"type":".ams.headers.ConsumerAuthentication","jwt":"' + secret + '"}'
    texts = [  # a duplicated "headers": a parser keeps the last one, the server may read the first
        '{"kind":"req","id":"0","type":"InitConnection","headers":[' + auth + '],"headers":[]}',
        # a duplicated "jwt" or "type", whitespace around the colon, an escaped key
        '{"kind":"req","id":"0","type":"InitConnection","headers":[{"type":".ams.headers.ConsumerAuthentication",'
        '"jwt" : "' + secret + '","jwt":"x"}]}',
        '{"kind":"req","id":"0","type":"InitConnection","headers":[' + auth + '],"type":"Other"}',
        '{"kind":"req","id":"0","type":"InitConnection","headers":[{"j\\u0077t":"' + secret + '"}]}',
        # not JSON at all
        'InitConnection {"jwt":"' + secret + '" ...',
    ]
    for text in texts:
        out = redact_text(text)
        assert mark(secret) in out and not pieces_in(secret, out.encode()), text
    escaped = '{"type":"InitConnection","headers":[{"jwt":"a\\/b\\u002dc\\"d"}]}'  # a/b-c"d
    assert redact_text(escaped) == '{"type":"InitConnection","headers":[{"jwt":"' + mark('a/b-c"d') + '"}]}'
    assert redact_text(redact_text(escaped)) == redact_text(escaped)  # a marker is not marked again


def test_an_init_connection_in_a_binary_frame_loses_its_token():
    from analysis.redact import redacted_message
    secret = "opaque-Bin-4Rt8Wq1Zp"
    init = json.dumps(init_connection(secret)).encode()
    for payload in (init, b"\xff\x00" + init):  # UTF-8, and bytes that are not
        record = redacted_message("c", 1.0, 0, True, False, payload)
        assert record["redacted"] and record["size"] == len(payload)
        assert base64.b64decode(record["b64"]) == payload.replace(secret.encode(), mark(secret).encode())
    escaped = json.dumps({"t": json_escaped(SECRET_JWT, lambda i, c: i == 0)}).replace("\\\\", "\\").encode()
    record = redacted_message("c", 1.0, 0, True, False, escaped)
    assert base64.b64decode(record["b64"]) == b'{"t": "' + mark(SECRET_JWT).encode() + b'"}'


def test_a_bearer_in_the_url_path_of_a_brand_or_consumer_connection_is_replaced():
    bearer = "agentBearer-7Hd2%2Fk9"
    for side in ("brand", "consumer"):
        url = f"wss://h:1/ws_api/account/123/messaging/{side}/{bearer}?v=2.1"
        assert redact_url(url) == f"wss://h:1/ws_api/account/123/messaging/{side}/{mark('agentBearer-7Hd2/k9')}?v=2.1"
        assert redact_url(redact_url(url)) == redact_url(url)
    for plain in ("wss://h/ws_api/account/123/messaging/consumer?v=3", "wss://h/ws_api/account/123/messaging/brand/"):
        assert redact_url(plain) is plain


B64URL = st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
JWTS = st.builds(lambda h, p, s: f"eyJ{h}.{p}.{s}", st.text(B64URL, min_size=8, max_size=30),
                 st.text(B64URL, min_size=8, max_size=60), st.text(B64URL, max_size=40))
JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=12),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                           max_leaves=8)
PLACE = "TOKEN-GOES-HERE"


@st.composite
def jwt_in_random_json(draw) -> tuple[str, str, str]:
    """(token, a JSON text holding it, the text without it): plain, JSON-escaped (also escaped twice, for JSON in a
    string) or percent-encoded (once or twice) in any of its characters, as a value, in a URL or
    after a scheme word, anywhere in a random document."""
    token = draw(JWTS)
    chosen = draw(st.lists(st.booleans(), min_size=len(token), max_size=len(token)))
    which = lambda i, c: chosen[i]  # noqa: E731
    encoding = draw(st.sampled_from(["plain", "json", "json twice", "percent", "percent twice"]))
    form = {"plain": token, "json": json_escaped(token, which),
            "json twice": json_escaped(token, which).replace("\\", "\\\\"),
            "percent": percent_encoded(token, which), "percent twice": percent_encoded(token, which, twice=True)}[encoding]
    value = draw(st.sampled_from([PLACE, f"Bearer {PLACE}", f"https://h/p?x=1&ref={PLACE}&y=2", f"/a/{PLACE}/b"]))
    document = draw(st.dictionaries(st.text(max_size=6), JSON_VALUES, max_size=4))
    document[draw(st.text(max_size=6))] = value
    text = json.dumps(document, ensure_ascii=draw(st.booleans()))
    return token, text.replace(PLACE, form), text.replace(PLACE, "")


@settings(max_examples=300, deadline=None)
@given(jwt_in_random_json())
def test_a_jwt_in_any_encoding_in_random_json_is_never_found_in_any_encoding(case):
    from analysis.redact import redacted_message
    token, text, around = case
    outputs = [redact_text(text).encode(),
               base64.b64decode(redacted_message("c", 1.0, 0, True, False, text.encode())["b64"])]
    for out in outputs:
        assert not pieces_in(token, out, around=around.encode()), out
        assert redact_text(token).encode() in out  # the plain token's marker: the same fingerprint


@st.composite
def opaque_jwt_member_in_random_json(draw) -> tuple[str, str, str]:
    """(token, a JSON text whose "jwt" member holds it, the text with an empty one): any characters, escaped or not, the member
    possibly hidden from a parser by a duplicated "headers" or "jwt" key."""
    token = draw(st.text(st.characters(min_codepoint=32, max_codepoint=0x2FF), min_size=8, max_size=40))
    value = json.dumps(token, ensure_ascii=draw(st.booleans()))
    if draw(st.booleans()):
        value = value.replace("/", "\\/")
    auth = '{"type":".ams.headers.ConsumerAuthentication","jwt":' + PLACE + "}"
    rest = json.dumps(draw(st.dictionaries(st.text(max_size=6), JSON_VALUES, max_size=3)))[1:-1]
    tail = draw(st.sampled_from(['', ',"headers":[]', ',"headers":[{"jwt":"x"}]', ',"type":"Other"']))
    text = '{"kind":"req","id":"0","type":"InitConnection","headers":[' + auth + "]" + ("," + rest if rest else "") + tail + "}"
    return token, text.replace(PLACE, value), text.replace(PLACE, '""')


@settings(max_examples=300, deadline=None)
@given(opaque_jwt_member_in_random_json())
def test_an_opaque_jwt_member_in_random_json_is_never_found_in_any_encoding(case):
    from analysis.redact import redacted_message
    token, text, around = case
    text_out = redact_text(text)
    binary_out = base64.b64decode(redacted_message("c", 1.0, 0, True, False, text.encode())["b64"])
    for out in (text_out.encode(), binary_out):
        assert not pieces_in(token, out, around=around.encode()), out
    assert mark(token) in text_out
