"""Framing: what each message is (request, response, notification or unusable), the framing
rules, and the per-frame table."""

from __future__ import annotations

from analysis.engine import Analyzer
from analysis.frame import KINDS, NOTIFICATION, REQ, RESP, Frame, parse_payload
from analysis.rules import INFO, WARNING

_LIFTED = ("type", "id", "reqId", "code", "subscriptionId")
_JSON_TYPES = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean",
               type(None): "null"}


class Framing(Analyzer):
    """Classifies frames; the engine calls `classify` for every msg record before any other analyzer.

    A value quoted in a message is written with `ascii()`, not `repr()`: repr keeps the characters
    its Python's Unicode database calls printable, so 3.11 and 3.12 would word one capture apart
    (and the native engine, core/src/pyrepr.rs, could match only one of them)."""

    def __init__(self, ctx):
        super().__init__(ctx)
        self.rows = ctx.rows("frames")

    def classify(self, rec: dict) -> Frame:
        kind = rec.get("kind")
        if kind in KINDS:
            frame = Frame(rec, kind)
            if "type" not in rec:
                self._missing_type(rec)
            if kind == REQ and not rec.get("id"):
                self._violation("request-without-id", rec, "request has no id (responses cannot be paired)")
        elif kind is not None:
            self._violation("unknown-kind", rec, f"kind {ascii(kind)} is not req, resp or notification")
            frame = Frame(rec, None)
        else:
            frame = self._without_kind(rec)
        if self.rows is not None:
            self.rows(frame_row(frame))
        return frame

    def _without_kind(self, rec: dict) -> Frame:
        if rec.get("op") == "binary":
            self._violation("binary-frame", rec, f"binary message of {rec.get('size')} bytes (every message is JSON text)")
            return Frame(rec, None, None)
        if "text" not in rec:
            self._violation("invalid-json", rec, "text message is not valid UTF-8")
            return Frame(rec, None, None)
        lifted = [key for key in _LIFTED if key in rec]
        if not lifted:
            return self._unlifted(rec)
        c2s = rec["dir"] == "c2s"
        if c2s:
            category = REQ
            if "id" in rec and "type" in rec:
                self._violation("missing-kind", rec, "request without kind (allowed by the documented examples)",
                                INFO)
            else:
                self._violation("missing-kind", rec, "client message without kind")
                if "type" not in rec:
                    self._missing_type(rec)
                if not rec.get("id"):
                    self._violation("request-without-id", rec, "request has no id (responses cannot be paired)")
        else:
            category = RESP if "reqId" in rec else NOTIFICATION
            self._violation("missing-kind", rec, f"server message without kind (taken as {category})")
            if "type" not in rec:
                self._missing_type(rec)
        return Frame(rec, category)

    def _unlifted(self, rec: dict) -> Frame:
        """A text frame without any index field: parse it to tell invalid JSON from an empty object."""
        if rec.get("truncated"):
            return Frame(rec, None, None)
        payload = parse_payload(rec)
        if payload is None and rec["text"].strip() != "null":
            self._violation("invalid-json", rec, "text message is not JSON")
        elif not isinstance(payload, dict):
            self._violation("invalid-json", rec, f"JSON message is {_JSON_TYPES.get(type(payload), 'a value')}, "
                                                 "not an object")
        elif "kind" in payload:
            self._violation("unknown-kind", rec, f"kind {ascii(payload['kind'])} is not a string")
        else:
            self._violation("missing-kind", rec, "JSON object without kind, type or id")
        return Frame(rec, None, payload)

    def _missing_type(self, rec: dict) -> None:
        severity = None if rec["dir"] == "c2s" else WARNING
        self._violation("missing-type", rec, "message has no type", severity)

    def _violation(self, rule: str, rec: dict, message: str, severity: str | None = None) -> None:
        self.ctx.violation(rule, rec["conn"], rec["t"], rec.get("n"), message, severity)


def frame_row(frame: Frame) -> dict:
    rec = frame.rec
    code = rec.get("code")
    return {
        "conn": rec["conn"], "t": rec["t"], "frame": rec.get("n"), "dir": rec["dir"], "op": rec.get("op"),
        "size": rec.get("size"), "category": frame.category, "kind": rec.get("kind"), "type": rec.get("type"),
        "id": rec.get("id"), "req_id": rec.get("reqId"),
        "code": code if code.__class__ is int else None,
        "subscription_id": rec.get("subscriptionId"), "truncated": bool(rec.get("truncated")),
        "text": rec.get("text"),
    }
