"""A mitmdump script whose addon only trims each WebSocket flow's message list, as the recorder
does: relay_instructions.py measures with it what hosting any script costs mitmdump."""


class Trim:
    def websocket_message(self, flow) -> None:
        del flow.websocket.messages[:-1]


addons = [Trim()]
