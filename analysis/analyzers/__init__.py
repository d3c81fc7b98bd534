"""The analyzers the engine runs after framing, in this order (each owns one concern and one table)."""

from analysis.analyzers.connections import Connections
from analysis.analyzers.keepalive import Keepalive
from analysis.analyzers.pairs import Pairs
from analysis.analyzers.rings import Rings
from analysis.analyzers.sequences import Sequences
from analysis.analyzers.streams import Streams

ANALYZERS = (Connections, Keepalive, Pairs, Streams, Sequences, Rings)
