"""What the tools print of what arrives: control characters escaped, every field bounded."""

from __future__ import annotations

import json

import pytest

from rrr.deploy.tap import render, render_json
from rrr.deploy.terminal import printable


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("plain text", "plain text"),
        ("clear\x1b[2J", "clear\\x1b[2J"),
        ("bell\x07 line\nreturn\r", "bell\\x07 line\\nreturn\\r"),
        ("csi\x9b31m del\x7f", "csi\\x9b31m del\\x7f"),
        ("bidi\u202eevil", "bidi\\u202eevil"),
        ("\u00e9t\u00e9", "\u00e9t\u00e9"),  # printable letters stay as they are
    ],
)
def test_printable_escapes_every_character_a_terminal_would_act_on(raw: str, shown: str) -> None:
    assert printable(raw) == shown


def test_printable_cuts_a_long_field_and_says_how_much_was_cut() -> None:
    assert printable("x" * 250) == "x" * 200 + "...(+50 chars)"
    assert printable("\n" * 150, limit=10) == "\\n" * 5 + "...(+290 chars)"


def test_a_tap_line_has_no_control_character_whatever_the_message_holds() -> None:
    record = {"type": "order_rejected.v1", "subject": "evt.order.0.X", "reason": "\x1b]0;owned\x07" + "r" * 500}
    line = render(record)
    assert line.isprintable()
    assert "reason=\\x1b]0;owned\\x07" in line
    assert line.endswith("...(+316 chars)")


def test_a_tap_json_line_is_ascii_and_decodes_to_the_same_text_cut_at_its_bound() -> None:
    record = {"type": "order_rejected.v1", "subject": "evt.order.0.X", "reason": "\x9b\u202e" + "r" * 2000, "qty": 1}
    line = render_json(record)
    assert line.isascii()
    assert line.isprintable()
    decoded = json.loads(line)
    assert decoded["reason"] == "\x9b\u202e" + "r" * 998 + "...(+1002 chars)"
    assert decoded["qty"] == 1
