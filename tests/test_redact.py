"""analysis.redact: secrets replaced by fingerprint markers, nothing else touched."""

from __future__ import annotations

import base64
import hashlib
import json

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
    other = json.dumps({"type": "Other", "headers": [{"type": ".ams.headers.ConsumerAuthentication", "jwt": "keep"}]})
    assert redact_text(other) is other
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
