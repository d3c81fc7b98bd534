"""The bot `mwtap demo` runs (bot.js, written against LivePerson's `node-agent-sdk`, pinned by
package-lock.json here), and the one place its SDK is installed: `npm ci` into a per-user cache
folder, once per SDK version. The tests run the same bot."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

HERE = Path(__file__).parent
BOT = HERE / "bot.js"
MANIFESTS = ("package.json", "package-lock.json")
SDK = "node-agent-sdk"
SDK_VERSION = json.loads((HERE / "package.json").read_text())["dependencies"][SDK]
INSTALL_TIMEOUT = 120.0  # a demo does not wait longer for a network that does not answer


class BotUnavailable(Exception):
    """Why the bot cannot run here (one line)."""


def sdk_folder() -> Path:
    """Where the SDK is installed: `$XDG_CACHE_HOME/mwtap/agent-sdk-<version>` (default ~/.cache)."""
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "mwtap" / f"agent-sdk-{SDK_VERSION}"


def node_path() -> Path:
    """The `node_modules` folder bot.js finds the SDK in (NODE_PATH), when it is installed."""
    return sdk_folder() / "node_modules"


def installed() -> bool:
    return (node_path() / SDK / "package.json").is_file()


def node() -> str:
    found = shutil.which("node")
    if found is None:
        raise BotUnavailable("node is not on PATH")
    return found


def install(status=lambda line: None) -> Path:
    """Installs the pinned SDK unless it is there; returns NODE_PATH for bot.js. `status` gets one
    line before a (slow) install. npm installs into a temporary folder beside the final one, renamed
    when complete, so an interrupted install never leaves a half one that looks done."""
    node()
    if installed():
        return node_path()
    npm = shutil.which("npm")
    if npm is None:
        raise BotUnavailable("npm is not on PATH")
    final = sdk_folder()
    final.parent.mkdir(parents=True, exist_ok=True)
    status(f"installing {SDK} {SDK_VERSION} into {final} (npm ci, once) ...")
    work = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    try:
        for name in MANIFESTS:
            shutil.copy(HERE / name, work)
        try:
            done = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel", "error"], cwd=work,
                                  stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=INSTALL_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise BotUnavailable(f"npm ci did not finish within {INSTALL_TIMEOUT:g} s") from None
        if done.returncode != 0:
            problem = next((line for line in done.stderr.splitlines() if line.strip()), "")
            raise BotUnavailable(f"npm ci failed with status {done.returncode}" + (f" ({problem})" if problem else ""))
        if not installed():  # another process may have completed the same install meanwhile
            shutil.rmtree(final, ignore_errors=True)
            os.replace(work, final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return node_path()


def bot_env(csds: str, ca: Path, **settings: str) -> dict[str, str]:
    """bot.js's environment: the SDK's domain lookup at `csds` (HOST:PORT), Node trusting `ca`
    beside its own roots (NODE_EXTRA_CA_CERTS), the SDK from the cache, and `settings` (LP_*, ...)."""
    return {**os.environ, "LP_CSDS": csds, "NODE_EXTRA_CA_CERTS": str(ca), "NODE_PATH": str(node_path()), **settings}
