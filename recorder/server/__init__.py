"""The built-in Messaging Window server (`mwtap serve`): a fake LivePerson consumer endpoint
with an IDP, a built-in agent and fault injection, for demos, tests and benchmarks.

`MessagingServer` is imported on first use, so `recorder.server.config` stays cheap to import
(`mwtap --help` loads the option definitions, not websockets)."""

from recorder.server.config import DEFAULT_PORT, ServerConfig

__all__ = ["DEFAULT_ACCOUNT", "DEFAULT_PORT", "MessagingServer", "ServerConfig"]


def __getattr__(name: str):
    if name in ("MessagingServer", "DEFAULT_ACCOUNT"):
        from recorder.server import app
        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
