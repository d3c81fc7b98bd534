"""How every output prints a connection id: one short form, the full id behind `--full-ids` (and in JSON)."""

import re
from typing import Container

SHORT = 8  # the first 8 characters of a uuid4 tell the connections of one capture apart
LONGEST_SHOWN = 12  # ids up to this long are shown whole (mwtap view's page applies the same rule)


def short_id(conn, full: bool = False) -> str:
    """A connection id as a table shows it ("-" when there is none)."""
    if conn is None:
        return "-"
    conn = str(conn)
    return conn if full or len(conn) <= LONGEST_SHOWN else conn[:SHORT] + "…"


_LONG_TOKEN = re.compile(r"[0-9A-Za-z_-]{%d,}" % (LONGEST_SHOWN + 1))  # uuids, flow ids, hex


def short_ids_in(text, conns: Container[str], full: bool = False):
    """A violation's message with each id of `conns` it names (a reconnect's names the connection
    before it) in its short form, whatever punctuation follows it; other ids, such as dialogs', are
    left whole. (An id of other characters than letters, digits, `-` and `_` is left whole too.)"""
    if full or not isinstance(text, str):
        return text
    return _LONG_TOKEN.sub(lambda m: short_id(m[0]) if m[0] in conns else m[0], text)
