"""What the PBX looks like now, kept up to date from its events (a wallboard's model)."""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field

from cloudpbx.client._events import (
    ConferenceMemberEvent,
    Event,
    ExtStatusEvent,
    QueueEvent,
    QueueMemberEvent,
    SmsStatusEvent,
    SubscriberEvent,
    extension,
)


@dataclass
class ExtensionView:
    """An extension: its state, whom it talks to (when known), since when (epoch seconds)."""

    extension: str
    status: int
    since: float
    connected_number: str | None = None
    connected_name: str | None = None


@dataclass
class PbxState:
    """Extensions, queues, agents, conference rooms and recent SMS, from `apply(event)`.

    Everything is keyed by the contract's names: extensions by number, queues by name,
    agents by (queue, peer), rooms by name and then channel. The model starts empty: it
    knows what the events since it started said (replay from `last_event_id=0` to seed it
    from the server's history).
    """

    pbx: str | None = None
    extensions: dict[str, ExtensionView] = field(default_factory=dict)
    queues: dict[str, int] = field(default_factory=dict)
    agents: dict[tuple[str, str], QueueMemberEvent] = field(default_factory=dict)
    conferences: dict[str, dict[str, ConferenceMemberEvent]] = field(default_factory=dict)
    sms: OrderedDict[str, SmsStatusEvent] = field(default_factory=OrderedDict)
    last_event_id: int | None = None
    events_seen: int = 0
    sms_kept: int = 10

    def apply(self, event: Event, event_id: int | None = None, now: float | None = None) -> None:
        """Fold one event in (`now` defaults to the clock; pass it for tests)."""
        moment = time.time() if now is None else now
        self.events_seen += 1
        if event_id is not None:
            self.last_event_id = event_id
        match event:
            case SubscriberEvent():
                view = self._extension(extension(event.peer, self.pbx), event.status, moment)
                if event.connect_peer_number is not None:
                    view.connected_number = event.connect_peer_number
                    view.connected_name = event.connect_peer_name
                elif event.status == 0:
                    view.connected_number = view.connected_name = None
            case ExtStatusEvent():
                known = self.extensions.get(event.exten)
                # Connecting (32) is a device state only `subscriber` carries; the hint of a
                # phone placing a call reads In Use (1), which must not hide it.
                connecting = known is not None and known.status == 32 and event.status == 1
                view = self._extension(event.exten, 32 if connecting else event.status, moment)
                if event.status == 0:
                    view.connected_number = view.connected_name = None
            case QueueEvent():
                self.queues[event.queue] = event.calls
            case QueueMemberEvent():
                self.agents[(event.queue, event.peer)] = event
                self.queues.setdefault(event.queue, 0)
            case ConferenceMemberEvent():
                room = self.conferences.setdefault(event.conference, {})
                if event.joined:
                    room[event.channel] = event
                else:
                    room.pop(event.channel, None)
                    if not room:
                        del self.conferences[event.conference]
            case SmsStatusEvent():
                self.sms[event.msg_id] = event
                self.sms.move_to_end(event.msg_id)
                while len(self.sms) > self.sms_kept:
                    self.sms.popitem(last=False)
            case _:
                pass

    def _extension(self, number: str, status: int, moment: float) -> ExtensionView:
        view = self.extensions.get(number)
        if view is None:
            view = self.extensions[number] = ExtensionView(number, status, moment)
        elif view.status != status:
            view.status, view.since = status, moment
        return view
