"""How every output prints a connection id: one short form, the full id behind `--full-ids` (and in JSON)."""

SHORT = 8  # the first 8 characters of a uuid4 tell the connections of one capture apart
LONGEST_SHOWN = 12  # ids up to this long are shown whole (mwtap view's page applies the same rule)


def short_id(conn, full: bool = False) -> str:
    """A connection id as a table shows it ("-" when there is none)."""
    if conn is None:
        return "-"
    conn = str(conn)
    return conn if full or len(conn) <= LONGEST_SHOWN else conn[:SHORT] + "…"
