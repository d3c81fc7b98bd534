"""The index of whole captures in one pass of the protocol core: its engine analyses the records as
`mwtap analyze` does while its `Locations` notes where each record's line is and which request and
response answer each other (core/src/locations.rs); what the engine found (violations, reconnects,
connection rows) then comes back as rows and is attached to the frames. (`mwtap view --follow`
feeds the index one record at a time instead: `ViewIndex.add`.)"""

from __future__ import annotations

from analysis import _core
from analysis.config import Config
from analysis.load import streamed
from analysis.view.index import MAX_TYPES, ViewIndex
from analysis.view.source import Sources

_ROWS = ("violations", "reconnects", "connections")  # the engine's tables attached as rows (pairs: in the core)


def build(sources: Sources, config: Config | None = None, jobs: int | None = None) -> ViewIndex:
    """The index of every file of `sources`, read on `jobs` cores (`analysis.native.open_captures`)."""
    index = ViewIndex(config)
    sources.check()  # a file that is not a capture fails naming it as the user did (not its decompressed copy)
    rows: dict[str, list] = {table: [] for table in _ROWS}
    locations = _core.Locations(MAX_TYPES)
    _, damage = streamed(sources.paths, index.config, _ROWS, lambda table, batch: rows[table].extend(batch),
                         jobs=jobs, dicts=list(_ROWS), locations=locations)
    index.place(locations.take())
    for table, found in rows.items():
        attach = index.adder(table)
        for row in found:
            attach(row)
    sources.damage.extend(sources.named(d) for d in damage)
    return index
