"""Where fresh tokens come from: a value, an environment variable, or a command run again
whenever a fresh token is needed. A token is never logged; the replay's capture gets only its
redaction marker."""

from __future__ import annotations

import asyncio
import os
import subprocess

COMMAND_TIMEOUT = 30.0


class TokenError(Exception):
    """A token that cannot be had (one line, never containing the token or the command output)."""


class TokenSource:
    """`await fetch(identity, reason, previous, side)`: a token for the recorded identity
    (`RecordedConnection.identity`) because of `reason` ("initial", "4401" or "4407"); `previous`
    is the token the replay used for that identity until now (None at first); `side` is "agent"
    for a bot's bearer, "consumer" for a consumer's token (None: unknown). The command gets them
    as MWTAP_TOKEN_REASON, MWTAP_RECORDED_TOKEN, MWTAP_PREVIOUS_TOKEN and MWTAP_TOKEN_SIDE."""

    def __init__(self, value: str | None = None, command: str | None = None):
        if (value is None) == (command is None):
            raise ValueError("give a token value or a command")
        self.value = value
        self.command = command
        self.fetched = 0
        self.issued: list[str] = []
        """Every token handed out, for redaction of the replay's capture."""

    @classmethod
    def from_options(cls, token: str | None, token_env: str | None, token_command: str | None) -> TokenSource | None:
        given = [name for name, v in (("--token", token), ("--token-env", token_env),
                                      ("--token-command", token_command)) if v is not None]
        if len(given) > 1:
            raise TokenError(f"give only one of {', '.join(given)}")
        if token_env is not None:
            token = os.environ.get(token_env)
            if not token:
                raise TokenError(f"--token-env {token_env}: the environment variable is not set or empty")
        if token is not None:
            return cls(value=token.strip())
        if token_command is not None:
            return cls(command=token_command)
        return None

    async def fetch(self, identity: str | None, reason: str, previous: str | None = None,
                    side: str | None = None) -> str:
        token = (self.value if self.value is not None
                 else await asyncio.to_thread(self._run, identity, reason, previous, side))
        self.fetched += 1
        if token not in self.issued:
            self.issued.append(token)
        return token

    def _run(self, identity: str | None, reason: str, previous: str | None, side: str | None) -> str:
        env = {**os.environ, "MWTAP_TOKEN_REASON": reason, "MWTAP_RECORDED_TOKEN": identity or "",
               "MWTAP_PREVIOUS_TOKEN": previous or "", "MWTAP_TOKEN_SIDE": side or ""}
        try:
            done = subprocess.run(self.command, shell=True, env=env, stdin=subprocess.DEVNULL,
                                  capture_output=True, timeout=COMMAND_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise TokenError(f"--token-command did not finish within {COMMAND_TIMEOUT:g} s") from None
        if done.returncode != 0:
            raise TokenError(f"--token-command exited with status {done.returncode}")
        token = done.stdout.decode("utf-8", "replace").strip()
        if not token or any(c.isspace() for c in token):
            raise TokenError("--token-command printed no token (expected one line with the token only)")
        return token


class TokenPool:
    """One current token per recorded identity, refreshed on 4401/4407."""

    def __init__(self, source: TokenSource | None):
        self.source = source
        self.current: dict[str | None, str] = {}
        self.refreshes = 0
        self._first: dict[str | None, asyncio.Lock] = {}  # connections of one identity starting together

    async def get(self, identity: str | None, side: str | None = None) -> str:
        if self.source is None:
            raise TokenError("this connection used a token; give --token, --token-env or --token-command")
        async with self._first.setdefault(identity, asyncio.Lock()):
            if identity not in self.current:
                self.current[identity] = await self.source.fetch(identity, "initial", side=side)
        return self.current[identity]

    async def refresh(self, identity: str | None, reason: str, side: str | None = None) -> str:
        if self.source is None:
            raise TokenError("the target asked for a fresh token; give --token, --token-env or --token-command")
        self.refreshes += 1
        self.current[identity] = await self.source.fetch(identity, reason, self.current.get(identity), side)
        return self.current[identity]

    @property
    def secrets(self) -> list[str]:
        return self.source.issued if self.source else []
