"""The `mwtap` command. Each subcommand lives in its own module and is imported only when used,
so `mwtap analyze` never loads mitmproxy."""

from __future__ import annotations

import importlib
import os

import click

from analysis.capture import CaptureError

# numpy (which pyarrow and matplotlib import) starts OpenBLAS's thread pool, whose threads spin for a
# while: 0.05–0.1 s of CPU for nothing per command on 2 cores. mwtap does no linear algebra; a user's own
# setting stands.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

COMMANDS = {
    "record": "recorder.cli.record:record",
    "serve": "recorder.cli.serve:serve",
    "consume": "recorder.cli.consume:consume",
    "token": "recorder.cli.consume:token",
    "demo": "recorder.cli.demo:demo",
    "analyze": "recorder.cli.analyze:analyze",
    "report": "recorder.cli.report:report",
    "replay": "recorder.cli.replay:replay",
    "diff": "recorder.cli.diff:diff",
    "convert": "recorder.cli.convert:convert",
    "export": "recorder.cli.export:export",
    "view": "recorder.cli.view:view",
}


FOUND_EXIT = 1
"""Exit status when the check found something: findings at --fail-on, differences, a replay that could
not send everything, consumers that could not connect. 0 is success, 2 bad usage or bad input."""


class BadInput(click.ClickException):
    """Bad usage or bad input (a file that cannot be read or written, an address that cannot be used):
    one line "Error: ...", exit status 2. Every command fails through this (or click's own usage errors,
    also 2); exit status 1 is kept for FOUND_EXIT."""
    exit_code = 2


def refuse_to_overwrite(paths, force: bool, *, remove: bool = False) -> None:
    """The one overwrite rule of every command that writes files: an existing output is refused
    (BadInput naming it) unless `force`. With `remove`, a forced output is deleted now, for writers
    that create their files exclusively (a link is removed, never followed); the others truncate
    it when they write, so a run that fails before keeps the old file."""
    for path in paths:
        if os.path.isdir(path) and not os.path.islink(path):
            raise BadInput(f"{path}: is a directory")
        if not os.path.lexists(path):
            continue
        if not force:
            raise BadInput(f"{path}: exists; give --force to overwrite it")
        if remove:
            try:
                os.unlink(path)
            except OSError as e:
                raise BadInput(f"{path}: cannot overwrite ({e.strerror})") from None


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(COMMANDS))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return super().get_command(ctx, name)
        module, attr = COMMANDS[name].split(":")
        return getattr(importlib.import_module(module), attr)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except CaptureError as e:
            raise BadInput(str(e)) from None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mwtap")
def main() -> None:
    """Record, analyze and replay LivePerson Messaging Window API WebSocket traffic."""
