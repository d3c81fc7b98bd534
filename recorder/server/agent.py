"""The built-in agent: joins every new conversation and answers the consumer (unless it steps
aside: a bot connected to the brand side was offered the conversation).

Per conversation one task works through the consumer's messages in order: ACCEPT, READ,
COMPOSING, (reply delay), PAUSE, answer. It may close the conversation after N answers or after
a time, when configured. The task ends when the conversation closes or is forgotten.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable

from recorder.server.config import ServerConfig
from recorder.server.conversations import Conversation, ConversationStore

AGENT_ID = str(uuid.uuid5(uuid.NAMESPACE_URL, "mwtap:built-in-agent"))


class Agent:
    def __init__(self, store: ConversationStore, config: ServerConfig):
        self.store = store
        self.config = config
        self.inboxes: dict[str, asyncio.Queue] = {}
        self.tasks: set[asyncio.Task] = set()
        self.step_aside: Callable[[Conversation], bool] | None = None
        """Asked first about every new conversation: True when a bot took it over."""
        store.on_created.append(self._created)
        store.on_change.append(self._heard)
        store.on_closed.append(self._ended)
        store.on_forgotten.append(self._ended)

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in list(self.tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _created(self, conversation: Conversation) -> None:
        if self.step_aside is None or not self.step_aside(conversation):
            self.join(conversation)

    def join(self, conversation: Conversation) -> None:
        inbox: asyncio.Queue = asyncio.Queue()
        self.inboxes[conversation.id] = inbox
        task = asyncio.get_running_loop().create_task(self._serve(conversation, inbox))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _heard(self, conversation: Conversation, change: dict) -> None:
        inbox = self.inboxes.get(conversation.id)
        if inbox is not None and change["originatorId"] == conversation.consumer \
                and change["event"].get("type") == "ContentEvent":
            inbox.put_nowait(change)

    def _ended(self, conversation: Conversation) -> None:
        inbox = self.inboxes.pop(conversation.id, None)
        if inbox is not None:
            inbox.put_nowait(None)

    async def _serve(self, conversation: Conversation, inbox: asyncio.Queue) -> None:
        config = self.config
        await asyncio.sleep(config.agent_join_delay)
        if conversation.state != "OPEN" or self.inboxes.get(conversation.id) is not inbox:
            return
        self.store.add_participant(conversation, AGENT_ID, "ASSIGNED_AGENT")
        if config.agent_greeting:
            self._say(conversation, {"type": "ContentEvent", "contentType": "text/plain",
                                     "message": config.agent_greeting})
        loop = asyncio.get_running_loop()
        deadline = None if config.agent_close_after_seconds is None else loop.time() + config.agent_close_after_seconds
        answered = 0
        while conversation.state == "OPEN":
            try:
                timeout = None if deadline is None else max(0.0, deadline - loop.time())
                change = await asyncio.wait_for(inbox.get(), timeout)
            except TimeoutError:
                self.store.close(conversation, "AGENT")
                return
            if change is None:
                return
            await self._answer(conversation, change)
            answered += 1
            if config.agent_close_after_messages is not None and answered >= config.agent_close_after_messages:
                self.store.close(conversation, "AGENT")

    async def _answer(self, conversation: Conversation, change: dict) -> None:
        delay = self.config.agent_receipt_delay
        steps = [
            (delay, {"type": "AcceptStatusEvent", "status": "ACCEPT", "sequenceList": [change["sequence"]]}),
            (delay, {"type": "AcceptStatusEvent", "status": "READ", "sequenceList": [change["sequence"]]}),
            (0.0, {"type": "ChatStateEvent", "chatState": "COMPOSING"}),
            (self.config.agent_reply_delay, {"type": "ChatStateEvent", "chatState": "PAUSE"}),
            (0.0, {"type": "ContentEvent", "contentType": "text/plain",
                   "message": f"You said: {change['event'].get('message')}"}),
        ]
        for pause, event in steps:
            if pause:
                await asyncio.sleep(pause)
            if conversation.state != "OPEN":
                return
            self._say(conversation, event)

    def _say(self, conversation: Conversation, event: dict) -> None:
        self.store.publish(conversation, AGENT_ID, event)
