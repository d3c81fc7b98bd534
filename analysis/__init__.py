"""Pure analysis of mwtap captures: no mitmproxy, no network."""

__version__ = "0.1.0"
