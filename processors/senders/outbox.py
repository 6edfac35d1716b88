"""The ``outbox`` backend: writes exactly what would be sent, to files.

The default when no provider is configured, so the embedded demo shows real output:
``<outbox_dir>/<channel>/<name>.eml`` (email, the full MIME message),
``.txt`` (SMS body) and ``.json`` (push / browser payload), plus one line per
delivery in ``<outbox_dir>/outbox.jsonl`` (index: channel, file, delivery id, time).
Files are named from a hash of the delivery id, so a resend overwrites, never doubles.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from processors.senders.errors import PermanentError
from processors.senders.render import (
    BrowserContent,
    EmailContent,
    PushContent,
    SmsContent,
    to_mime_bytes,
)
from processors.settings import Settings


class OutboxSender:
    name = "outbox"

    def __init__(self, directory: Path, channel: str) -> None:
        self.directory = directory
        self.channel = channel
        self._lock = threading.Lock()  # one index line at a time across threads

    @classmethod
    def from_settings(cls, settings: Settings, channel: str) -> OutboxSender:
        return cls(settings.outbox_dir, channel)

    async def send(self, delivery: Mapping[str, Any], content: Any) -> str:
        return await asyncio.to_thread(self._write, dict(delivery), content)

    async def close(self) -> None:
        return None

    def _write(self, delivery: dict[str, Any], content: Any) -> str:
        delivery_id = str(delivery["delivery_id"])
        stem = hashlib.sha256(delivery_id.encode()).hexdigest()[:20]
        folder = self.directory / self.channel
        folder.mkdir(parents=True, exist_ok=True)
        data: bytes
        if isinstance(content, EmailContent):
            path, data = folder / f"{stem}.eml", to_mime_bytes(content)
        elif isinstance(content, SmsContent):
            header = f"To: {content.to}\nFrom: {content.from_ or '-'}\n"
            header += f"Encoding: {content.encoding}\nSegments: {content.segments}\n\n"
            path, data = folder / f"{stem}.txt", (header + content.body + "\n").encode()
        elif isinstance(content, PushContent | BrowserContent):
            body = json.dumps(dataclasses.asdict(content), ensure_ascii=False, indent=2)
            path, data = folder / f"{stem}.json", body.encode()
        else:
            raise PermanentError(f"outbox cannot write {type(content).__name__}")
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)  # readers never see half a file
        line = {
            "delivery_id": delivery_id,
            "channel": self.channel,
            "file": str(path.relative_to(self.directory)),
            "conversation_id": delivery.get("conversation_id"),
            "recipient_id": delivery.get("recipient_id"),
            "written_at": int(time.time() * 1000),
        }
        with self._lock, (self.directory / "outbox.jsonl").open("a", encoding="utf-8") as index:
            index.write(json.dumps(line) + "\n")
        return f"outbox:{path.name}"
