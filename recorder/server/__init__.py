"""The built-in Messaging Window server (`mwtap serve`): a fake LivePerson consumer endpoint
with an IDP, a built-in agent and fault injection, for demos, tests and benchmarks."""

from recorder.server.app import DEFAULT_ACCOUNT, MessagingServer
from recorder.server.config import DEFAULT_PORT, ServerConfig

__all__ = ["DEFAULT_ACCOUNT", "DEFAULT_PORT", "MessagingServer", "ServerConfig"]
