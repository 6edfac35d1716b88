"""Chat scenarios for the broker tests: reference data plus timed activity."""

from __future__ import annotations

from typing import Any

Step = tuple[float, str, str, dict[str, Any]]  # (delay before, topic, key, value without ts)


def role(name: str, **channels: bool) -> dict[str, Any]:
    return {"name": name, "email": False, "sms": False, "push": False, "browser": False, **channels}


def user(uid: str, name: str, role_name: str | None, **extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "user_id": uid,
        "name": name,
        "email": f"{uid}@example.test",
        "phone": None,
        "role": role_name,
        "locale": "en",
        "push_tokens": [],
        "browser_subscriptions": [],
    }
    base.update(extra)
    return base


def conversation(cid: str, *participants: tuple[str, str]) -> dict[str, Any]:
    return {
        "conversation_id": cid,
        "subject": f"about {cid}",
        "participants": [
            {"user_id": uid, "access": "ReadWrite", "notify": notify, "name": uid.title()}
            for uid, notify in participants
        ],
    }


def message(
    cid: str, mid: str, sender: str | None, text: str = "hi", **extra: Any
) -> dict[str, Any]:
    return {
        "message_id": mid,
        "conversation_id": cid,
        "sender_id": sender,
        "type": "UserMessage" if sender else "SystemMessage",
        "text": text,
        "mentions": [],
        "origin": "web",
        **extra,
    }


def typing(cid: str, uid: str, on: bool) -> dict[str, Any]:
    return {"conversation_id": cid, "user_id": uid, "typing": on}


def presence(
    uid: str, sid: str, online: bool, selected: str | None, focused: bool
) -> dict[str, Any]:
    return {
        "user_id": uid,
        "session_id": sid,
        "online": online,
        "selected_conversation_id": selected,
        "focused": focused,
    }


def reference_data() -> list[tuple[str, str, dict[str, Any]]]:
    return [
        ("chat.roles", "member", role("member", email=True, push=True)),
        ("chat.roles", "support", role("support", email=True, sms=True)),
        ("chat.users", "ann", user("ann", "Ann", "member")),
        ("chat.users", "bob", user("bob", "Bob", "member", push_tokens=["tok-bob"])),
        ("chat.users", "cy", user("cy", "Cy", "support", phone="+15550000003")),
        ("chat.users", "dee", user("dee", "Dee", "Member")),  # misspelt role
        (
            "chat.conversations",
            "c1",
            conversation("c1", ("ann", "All"), ("bob", "All"), ("cy", "Off")),
        ),
        (
            "chat.conversations",
            "c2",
            conversation("c2", ("bob", "All"), ("cy", "MentionsOnly"), ("dee", "All")),
        ),
    ]


def activity() -> list[Step]:
    """Timed steps for inactivity 1 s and typing TTL 2 s: batches close ~1 s apart."""
    return [
        (0.0, "chat.presence", "bob", presence("bob", "b-tab", True, "c1", True)),
        (0.2, "chat.typing", "c1", typing("c1", "ann", True)),
        (0.3, "chat.messages", "c1", message("c1", "m1", "ann", "hello bob")),
        (0.2, "chat.messages", "c1", message("c1", "m2", "ann", "are you there?")),
        (0.1, "chat.messages", "c1", message("c1", "m2", "ann", "are you there?")),  # duplicate
        (0.1, "chat.messages", "c2", message("c2", "n1", "bob", "cy, a question", mentions=["cy"])),
        (0.1, "chat.messages", "c1", message("c1", "s1", None, "Cy joined")),  # system message
        # c1 closes ~1 s after m2; c2 ~1 s after n1: bob is viewing c1 then
        (2.5, "chat.presence", "bob", presence("bob", "b-tab", True, "c2", False)),
        (0.3, "chat.typing", "c1", typing("c1", "cy", True)),
        (0.4, "chat.typing", "c1", typing("c1", "cy", False)),
        (0.1, "chat.messages", "c1", message("c1", "m3", "cy", "muted but talking")),
        (0.2, "chat.messages", "c2", message("c2", "n2", "dee", "no mention here")),
        (2.5, "chat.presence", "bob", presence("bob", "b-tab", False, None, False)),
        (0.3, "chat.messages", "c3", message("c3", "x1", "ann", "nobody knows c3")),
        (0.2, "chat.messages", "c1", message("c1", "m4", "bob", "back")),
        (0.1, "chat.typing", "c1", typing("c1", "ann", True)),
        (0.5, "chat.typing", "c1", typing("c1", "ann", True)),
        (0.5, "chat.messages", "c1", message("c1", "m5", "ann", "welcome back")),
    ]
