"""Reply formats people really send (issue 9, item 3): each asserts the exact text posted."""

from __future__ import annotations

import pytest

from processors.reply.parse import decide_reply
from tests.reply.mails import context, mail, multipart

QUOTE = (
    "> Alice: Are we still on for today?\n>\n> Reply to this email to answer in the conversation.\n"
)

GMAIL_TEXT = (
    "Sounds good, see you at 5.\n\n"
    "On Mon, Jan 8, 2024 at 10:02\u202fAM Chat Notifications <\n"
    "notifications@chat.example> wrote:\n\n" + QUOTE
)
GMAIL_HTML = (
    '<div dir="ltr">Sounds good, see you at 5.</div><br><div class="gmail_quote">'
    '<div dir="ltr" class="gmail_attr">On Mon, Jan 8, 2024 at 10:02 AM Chat Notifications '
    '&lt;<a href="mailto:notifications@chat.example">notifications@chat.example</a>&gt; wrote:'
    '<br></div><blockquote class="gmail_quote" style="margin:0px 0px 0px 0.8ex">'
    "<p>Alice: Are we still on for today?</p></blockquote></div>"
)

CASES: list[tuple[str, bytes, str]] = [
    ("gmail-web", multipart(GMAIL_TEXT, GMAIL_HTML), "Sounds good, see you at 5."),
    (
        "gmail-android",
        mail(
            "Yes, on my way\n\nOn Mon, 8 Jan 2024, 10:02 Chat Notifications, "
            "<notifications@chat.example> wrote:\n\n" + QUOTE
        ),
        "Yes, on my way",
    ),
    (
        "outlook-desktop",
        mail(
            "I'll send the numbers tomorrow.\r\n\r\n"
            "From: Chat Notifications <notifications@chat.example>\r\n"
            "Sent: Monday, January 8, 2024 10:02 AM\r\n"
            "To: Bob <bob@example.org>\r\n"
            "Subject: New message in Budget\r\n\r\n"
            "Alice: Are we still on for today?\r\n",
            charset="windows-1252",
            cte="quoted-printable",
        ),
        "I'll send the numbers tomorrow.",
    ),
    (
        "apple-ios",
        multipart(
            "Perfect, thanks!\n\nSent from my iPhone\n\n"
            "> On 8 Jan 2024, at 10:02, Chat Notifications <notifications@chat.example> wrote:\n"
            ">\n" + QUOTE
        ),
        "Perfect, thanks!",
    ),
    (
        "apple-mail",
        mail(
            "Let's move it to Tuesday.\n\n"
            "> On 8 Jan 2024, at 10:02, Chat Notifications <notifications@chat.example> wrote:\n"
            ">\n" + QUOTE,
            cte="quoted-printable",
        ),
        "Let's move it to Tuesday.",
    ),
    (
        "thunderbird",
        mail("Noted.\n\nOn 08/01/2024 10:02, Chat Notifications wrote:\n" + QUOTE),
        "Noted.",
    ),
    (
        "signature",
        mail("Will do.\nTalk soon\n\n-- \nBob Builder\nACME Corp, +1 555 0100\n"),
        "Will do.\nTalk soon",
    ),
    (
        "top-posting",
        mail("Top line one\nline two\n\nOn Mon, Jan 8, 2024 at 10:02 AM Chat wrote:\n" + QUOTE),
        "Top line one\nline two",
    ),
    (
        "reply-below-quote",
        mail(
            "On Mon, Jan 8, 2024 at 10:02 AM Chat Notifications <notifications@chat.example>"
            " wrote:\n" + QUOTE + "\nYes, still on.\nBring the slides.\n"
        ),
        "Yes, still on.\nBring the slides.",
    ),
    (
        "german",
        mail(
            "Passt, bis später.\n\nAm Mo., 8. Jan. 2024 um 10:02 Uhr schrieb Chat "
            "Notifications <notifications@chat.example>:\n\n> Alice: Sind wir noch verabredet?\n"
        ),
        "Passt, bis später.",
    ),
    (
        "french",
        mail(
            "Oui, à tout à l'heure.\n\nLe lun. 8 janv. 2024 à 10:02, Chat Notifications "
            "<notifications@chat.example> a écrit :\n\n> Alice: On se voit toujours ?\n",
            cte="quoted-printable",
        ),
        "Oui, à tout à l'heure.",
    ),
    (
        "spanish",
        mail(
            "Sí, nos vemos.\n\nEl lun, 8 ene 2024 a las 10:02, Chat Notifications "
            "(<notifications@chat.example>) escribió:\n\n> Alice: ¿Seguimos?\n"
        ),
        "Sí, nos vemos.",
    ),
    (
        "dutch",
        mail(
            "Ja, tot straks.\n\nOp ma 8 jan. 2024 om 10:02 schreef Chat Notifications "
            "<notifications@chat.example>:\n\n> Alice: Gaat het nog door?\n"
        ),
        "Ja, tot straks.",
    ),
    (
        "chinese",
        mail(
            "好的，五点见。\n\n2024年1月8日周一 10:02，Chat Notifications "
            "<notifications@chat.example> 写道：\n\n> Alice: 今天还见面吗？\n",
            cte="base64",
        ),
        "好的，五点见。",
    ),
    (
        "html-only",
        mail(
            "<html><body><p>See you <b>at 5</b> &amp; bring snacks.</p>"
            "<blockquote>Alice: Are we still on?</blockquote></body></html>",
            subtype="html",
        ),
        "See you at 5 & bring snacks.",
    ),
    (
        "quoted-printable",
        mail("Caf\u00e9 at 5? \u2615 " + "x" * 80, cte="quoted-printable"),
        "Caf\u00e9 at 5? \u2615 " + "x" * 80,
    ),
    ("base64", mail("Line one\nLine two – ünïcode", cte="base64"), "Line one\nLine two – ünïcode"),
    ("iso-8859-1", mail("Grüße aus Köln, ça va?", charset="iso-8859-1"), "Grüße aus Köln, ça va?"),
    (
        "windows-1252",
        mail(
            "It\u2019s \u201cfine\u201d \u2013 5\u20ac",
            charset="windows-1252",
            cte="quoted-printable",
        ),
        "It\u2019s \u201cfine\u201d \u2013 5\u20ac",
    ),
    (
        "latin1-label-on-cp1252-bytes",
        mail("It\u2019s \u20ac5".encode("cp1252"), charset="iso-8859-1"),
        "It\u2019s \u20ac5",
    ),
    (
        "shift_jis",
        mail("了解しました。5時に会いましょう。", charset="shift_jis", cte="base64"),
        "了解しました。5時に会いましょう。",
    ),
    (
        "attachments-named",
        multipart(
            "Here are the numbers.",
            attachments=[
                ("budget.xlsx", "application/octet-stream", b"PK\x03\x04"),
                ("photo.jpg", "image/jpeg", b"\xff\xd8"),
            ],
        ),
        "Here are the numbers.\n\n[Not posted: 2 attachments (budget.xlsx, photo.jpg)]",
    ),
    (
        "hyphen-list-kept",
        mail(
            "Agenda:\n- budget\n- hiring\n\nOn Mon, Jan 8, 2024 at 10:02 AM Chat wrote:\n" + QUOTE
        ),
        "Agenda:\n- budget\n- hiring",
    ),
]


@pytest.mark.parametrize(("raw", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_reply_format_posts_exact_text(raw: bytes, expected: str) -> None:
    decision = decide_reply(raw, context())
    assert decision.reason == "ACCEPTED", decision
    assert decision.message is not None
    assert decision.message["text"] == expected


def test_long_body_is_cut_with_a_marker() -> None:
    decision = decide_reply(mail("word " * 5000), context(max_text_chars=100))
    assert decision.message is not None
    text = decision.message["text"]
    assert text.endswith("\n\n[… message truncated]")
    assert text == ("word " * 20).strip() + "\n\n[… message truncated]"
