"""Ids stay the contract's digests however they are computed (issue 12: ids are hashed
once per flush and copied per decision; a stored or replayed id must not change)."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from processors.core.ids import channel_decision_ids, decision_id, delivery_id, flush_id
from processors.topics import CHANNELS


def reference(parts: list[str | None], person: bytes) -> str:
    """The contract's encoding, written out: length-prefixed UTF-8 fields, None apart."""
    h = hashlib.blake2b(digest_size=16, person=person)
    for part in parts:
        if part is None:
            h.update(b"\xff\xff\xff\xff")
        else:
            data = part.encode("utf-8", "surrogatepass")
            h.update(len(data).to_bytes(4, "big") + data)
    return h.hexdigest()


ids = st.text(max_size=40)


@given(ids, ids, st.none() | ids, st.none() | st.sampled_from(["email", "sms", "push", "browser"]))
def test_decision_id_is_the_contract_digest(
    fid: str, other: str, rid: str | None, ch: str | None
) -> None:
    # Two flush ids in turn: the per-flush state must not leak from one to the next.
    for f in (fid, other, fid):
        assert decision_id(f, rid, ch) == "d-" + reference([f, rid, ch], b"cn-decision")


@given(ids, st.lists(ids, max_size=5))
def test_flush_id_is_the_contract_digest(conversation: str, messages: list[str]) -> None:
    assert flush_id(conversation, messages) == "f-" + reference(
        [conversation, *messages], b"cn-flush"
    )


@pytest.mark.parametrize(
    ("args", "expected"),
    [  # pinned: ids already stored downstream
        (("f-1", "user-1", "email"), "d-" + reference(["f-1", "user-1", "email"], b"cn-decision")),
        (("f-1", None, None), "d-" + reference(["f-1", None, None], b"cn-decision")),
    ],
)
def test_delivery_id_is_the_send_decision_id(args: tuple[str, str, str], expected: str) -> None:
    assert decision_id(*args) == expected
    if args[1] is not None:
        assert delivery_id(*args) == expected


def test_channel_decision_ids_are_the_decision_ids_of_each_channel() -> None:
    fid = flush_id("c:1", ["m1", "m2"])
    for rid in ("u", "", "ü:x", "a" * 300):
        want = [decision_id(fid, rid, channel) for channel in CHANNELS]
        assert channel_decision_ids(fid, rid, CHANNELS) == want
