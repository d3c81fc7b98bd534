"""Replaying recorded sessions: as the client against a target server (`client`), or as the
server to a live client (`mock_server`). `plan` reads what to send from a capture, `substitution`
learns and rewrites server-assigned values, `tokens` supplies fresh credentials."""
