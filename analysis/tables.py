"""The columns of every output table (names and types are a contract: see docs/analysis.md)."""

from __future__ import annotations

from analysis.capture import usable_time

INT64 = range(-2**63, 2**63)


def int64(value) -> int | None:
    """An int column's value: an integer (or a float without fraction) that int64 holds, else missing
    (a capture's JSON can hold integers up to 2**64 and floats up to 1e308 in any field)."""
    if value.__class__ is float and value.is_integer():
        value = int(value)
    return value if value.__class__ is int and value in INT64 else None


def epoch_s(value) -> float | None:
    """A time column's value: epoch seconds within the range every table time has (analysis.capture.MAX_TIME)."""
    return value if usable_time(value) else None


# dtype tokens: str, time (tz-aware UTC datetime from epoch seconds), float, int (nullable), bool (nullable)
COLUMNS: dict[str, list[tuple[str, str]]] = {
    "frames": [("conn", "str"), ("t", "time"), ("frame", "int"), ("dir", "str"), ("op", "str"), ("size", "int"),
               ("category", "str"), ("kind", "str"), ("type", "str"), ("id", "str"), ("req_id", "str"),
               ("code", "int"), ("subscription_id", "str"), ("truncated", "bool"), ("text", "str")],
    "pairs": [("conn", "str"), ("t", "time"), ("frame", "int"), ("id", "str"), ("type", "str"),
              ("t_response", "time"), ("response_frame", "int"), ("response_type", "str"), ("code", "int"),
              ("latency_ms", "float"), ("status", "str"), ("late", "bool"), ("error", "bool")],
    "streams": [("conn", "str"), ("t", "time"), ("kind", "str"), ("subscription_id", "str"), ("dialog_id", "str"),
                ("request_type", "str"), ("request_frame", "int"), ("t_confirmed", "time"),
                ("notifications", "int"), ("first_notification_delay_ms", "float"), ("t_first", "time"),
                ("t_last", "time"), ("rate_per_min", "float"), ("t_unsubscribed", "time"),
                ("unsubscribed", "bool"), ("after_unsubscribe", "int")],
    "sequences": [("conn", "str"), ("t", "time"), ("frame", "int"), ("dialog_id", "str"),
                  ("conversation_id", "str"), ("sequence", "int"), ("event_type", "str"), ("status", "str"),
                  ("originator_id", "str"), ("originator_role", "str"), ("own", "bool"), ("history", "bool"),
                  ("accept_ms", "float"), ("read_ms", "float")],
    "keepalive": [("conn", "str"), ("t", "time"), ("client_activities", "int"), ("longest_gap_s", "float"),
                  ("longest_gap_start", "time"), ("gaps_over_limit", "int"), ("silence_before_close_s", "float"),
                  ("closed_by_server_after_silence", "bool"), ("at_capture_end", "bool")],
    "silences": [("conn", "str"), ("t", "time"), ("start", "time"), ("silence_s", "float"), ("over_limit", "bool"),
                 ("ended_by", "str")],
    "pings": [("conn", "str"), ("t", "time"), ("rec", "str"), ("dir", "str")],
    "connections": [("conn", "str"), ("t", "time"), ("url", "str"), ("client", "str"), ("state", "str"),
                    ("refused_status", "int"), ("opened_at", "time"), ("closed_at", "time"), ("duration_s", "float"),
                    ("close_code", "int"), ("close_reason", "str"), ("closed_by", "str"), ("side", "str"), ("auth", "str"),
                    ("token", "str"), ("sub", "str"), ("frames_c2s", "int"), ("frames_s2c", "int"),
                    ("bytes_c2s", "int"), ("bytes_s2c", "int"), ("pings_c2s", "int"), ("pings_s2c", "int"),
                    ("chain", "str"), ("prev_conn", "str")],
    "reconnects": [("conn", "str"), ("t", "time"), ("prev_conn", "str"), ("chain", "str"), ("attempt", "int"),
                   ("linked_by", "str"), ("delay_s", "float"), ("prev_close_code", "int"),
                   ("prev_closed_by", "str"), ("fresh_token", "bool")],
    "violations": [("rule", "str"), ("severity", "str"), ("conn", "str"), ("t", "time"), ("frame", "int"),
                   ("message", "str"), ("at_capture_end", "bool")],
}
