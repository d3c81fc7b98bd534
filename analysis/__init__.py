"""Pure analysis of mwtap captures: no mitmproxy, no network.

    cap = analysis.load("capture.jsonl")      # pandas tables, see docs/analysis.md
    summary, damage = analysis.analyze(paths) # the `mwtap analyze` summary, bounded memory
"""

from analysis.config import Config
from analysis.engine import Engine
from analysis.live import LiveChecker
from analysis.load import Capture, analyze, load
from analysis.rules import RULES, Violation

__version__ = "0.1.0"
__all__ = ["Capture", "Config", "Engine", "LiveChecker", "RULES", "Violation", "analyze", "load"]
