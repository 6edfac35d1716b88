"""Presence per user, aggregated over sessions (tabs, devices) (contract §5).

A session is online until it says offline or sends nothing for ``presence_ttl``.
The user is VIEWING a conversation when some live session has it selected and
focused; ONLINE_UNFOCUSED when some live session has it selected but none of those
is focused; ONLINE_ELSEWHERE when online with other conversations selected; else
OFFLINE. Offline sessions are kept as tombstones for one TTL so that an older,
delayed "online" event for the same session cannot bring it back.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from processors.core.settings import CoreSettings


class Presence(StrEnum):
    OFFLINE = "OFFLINE"
    ONLINE_ELSEWHERE = "ONLINE_ELSEWHERE"
    ONLINE_UNFOCUSED = "ONLINE_UNFOCUSED"
    VIEWING = "VIEWING"


# session entry: (ts, online, selected_conversation_id, focused)

# Prune silent sessions only once a user has more than this many (tabs, devices):
# status() skips expired ones anyway, so pruning is only about bounding memory.
PRUNE_ABOVE_SESSIONS = 4


class UserPresence:
    __slots__ = ("user_id", "sessions")

    def __init__(self, user_id: str) -> None:
        self.user_id = user_id
        self.sessions: dict[str, tuple[int, bool, str | None, bool]] = {}

    def apply(self, event: Mapping[str, Any], cfg: CoreSettings) -> bool:
        """Apply a PresenceEvent; True if it changed the state (older events are ignored)."""
        session_id = event["session_id"]
        ts = event["ts"]
        sessions = self.sessions
        held = sessions.get(session_id)
        if held is not None and ts < held[0]:
            return False
        if event["online"]:
            sessions[session_id] = (ts, True, event["selected_conversation_id"], event["focused"])
        else:
            sessions[session_id] = (ts, False, None, False)
        if len(sessions) > PRUNE_ABOVE_SESSIONS:
            self._prune(ts, cfg)
        return True

    def _prune(self, now: int, cfg: CoreSettings) -> None:
        # Sessions silent for a whole TTL are offline whatever they said last; an event
        # older than that is stale anyway, so their entries can go.
        horizon = now - cfg.presence_ttl_ms
        stale = [sid for sid, s in self.sessions.items() if s[0] < horizon]
        for sid in stale:
            del self.sessions[sid]

    def status(self, conversation_id: str, now: int, cfg: CoreSettings) -> Presence:
        """The user's presence for ``conversation_id`` at ``now``."""
        ttl = cfg.presence_ttl_ms
        online = selected = False
        for ts, is_online, selected_id, focused in self.sessions.values():
            if not is_online or now >= ts + ttl:
                continue
            online = True
            if selected_id == conversation_id:
                if focused:
                    return Presence.VIEWING
                selected = True
        if selected:
            return Presence.ONLINE_UNFOCUSED
        return Presence.ONLINE_ELSEWHERE if online else Presence.OFFLINE

    def has_online_session(self) -> bool:
        """Has some session last said it is online (whatever its age)?

        The worker persists presence when this changes (a user coming online or going
        offline), so a successor after a crash starts from the right side of it.
        """
        return any(session[1] for session in self.sessions.values())

    def is_empty(self) -> bool:
        return not self.sessions

    def to_dict(self) -> dict[str, Any]:
        return {"u": self.user_id, "s": {k: list(v) for k, v in self.sessions.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UserPresence:
        presence = cls(data["u"])
        presence.sessions = {
            k: (int(v[0]), bool(v[1]), v[2], bool(v[3])) for k, v in data.get("s", {}).items()
        }
        return presence
