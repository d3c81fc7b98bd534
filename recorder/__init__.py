"""The live side of mwtap: the mitmproxy recorder, the built-in server, replay, the CLI."""
