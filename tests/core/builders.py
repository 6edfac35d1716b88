"""Small record builders for core tests (JSON form of contract §8; times in ms)."""

from __future__ import annotations

from typing import Any

S = 1000  # one second in ms


def msg(
    mid: str, ts: int, sender: str | None = "alice", conv: str = "c1", **kw: Any
) -> dict[str, Any]:
    return {
        "message_id": mid,
        "conversation_id": conv,
        "sender_id": sender,
        "type": kw.pop("type", "UserMessage" if sender else "SystemMessage"),
        "text": kw.pop("text", f"text of {mid}"),
        "mentions": kw.pop("mentions", []),
        "origin": kw.pop("origin", "web"),
        "ts": ts,
        **kw,
    }


def typing(user: str, ts: int, on: bool = True, conv: str = "c1") -> dict[str, Any]:
    return {"conversation_id": conv, "user_id": user, "typing": on, "ts": ts}


def presence(
    user: str,
    ts: int,
    session: str = "s1",
    online: bool = True,
    selected: str | None = None,
    focused: bool = False,
) -> dict[str, Any]:
    return {
        "user_id": user,
        "session_id": session,
        "online": online,
        "selected_conversation_id": selected,
        "focused": focused,
        "ts": ts,
    }


def conversation(
    conv: str = "c1", *participants: dict[str, Any], ts: int = 0, subject: str | None = "Plans"
) -> dict[str, Any]:
    return {
        "conversation_id": conv,
        "subject": subject,
        "participants": list(participants),
        "ts": ts,
    }


def participant(
    user: str, access: str = "ReadWrite", notify: str = "All", name: str | None = None
) -> dict[str, Any]:
    return {"user_id": user, "access": access, "notify": notify, "name": name or user.title()}


def user(
    uid: str,
    role: str | None = "member",
    email: str | None = None,
    phone: str | None = None,
    push_tokens: list[str] | None = None,
    browser: list[dict[str, str]] | None = None,
    ts: int = 0,
) -> dict[str, Any]:
    return {
        "user_id": uid,
        "name": uid.title(),
        "email": email if email is not None else f"{uid}@example.org",
        "phone": phone,
        "role": role,
        "locale": "en",
        "push_tokens": push_tokens or [],
        "browser_subscriptions": browser or [],
        "ts": ts,
    }


def role(
    name: str = "member",
    email: bool = True,
    sms: bool = False,
    push: bool = False,
    browser: bool = False,
    ts: int = 0,
) -> dict[str, Any]:
    return {"name": name, "email": email, "sms": sms, "push": push, "browser": browser, "ts": ts}
