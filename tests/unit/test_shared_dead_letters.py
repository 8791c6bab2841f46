"""Dead letters as the bus writes them: what they keep of a message, and what their signature covers."""

from __future__ import annotations

import pytest
from nats.aio.msg import Msg

from rrr.shared.bus import DLQ_DELIVERIES, DLQ_MSG_ID, DLQ_REASON, DLQ_SERVICE, DLQ_SIGNATURE, DLQ_SUBJECT
from rrr.shared.bus.dead_letters import (
    ATTEMPTS,
    attempts,
    carried_headers,
    dead_letter_signature,
    header_value,
    signature_valid,
)

KEY = b"a-key-of-the-system"
LETTER = {
    DLQ_SUBJECT: "cmd.order.0.EURUSD",
    DLQ_SERVICE: "execution",
    DLQ_REASON: "decode: invalid",
    DLQ_DELIVERIES: "1",
    DLQ_MSG_ID: "o-1",
}


def test_a_letter_signed_with_the_key_verifies_and_with_another_key_does_not() -> None:
    signed = LETTER | {DLQ_SIGNATURE: dead_letter_signature(KEY, LETTER, b"payload")}
    assert signature_valid(KEY, signed, b"payload")
    assert not signature_valid(b"another-key-of-a-system", signed, b"payload")
    assert not signature_valid(KEY, LETTER, b"payload")


@pytest.mark.parametrize("header", [DLQ_SUBJECT, DLQ_SERVICE, DLQ_REASON, DLQ_DELIVERIES, DLQ_MSG_ID])
def test_a_signature_no_longer_verifies_once_any_signed_header_changed(header: str) -> None:
    signed = LETTER | {DLQ_SIGNATURE: dead_letter_signature(KEY, LETTER, b"payload")}
    assert not signature_valid(KEY, signed | {header: "changed"}, b"payload")


def test_a_signature_no_longer_verifies_once_the_payload_changed() -> None:
    signed = LETTER | {DLQ_SIGNATURE: dead_letter_signature(KEY, LETTER, b"payload")}
    assert not signature_valid(KEY, signed, b"payload2")


def test_a_dead_letter_or_retry_carries_no_header_jetstream_acts_on_and_none_of_a_dead_letters_own() -> None:
    headers = {"traceparent": "00-ab", "Nats-Msg-Id": "x", "nats-expected-stream": "S", "Rrr-Dlq-Reason": "forged",
               "rrr-dlq-signature": "forged", "Rrr-Attempts": "1"}  # fmt: skip
    assert carried_headers(headers) == {"traceparent": "00-ab", "Rrr-Attempts": "1"}


def test_a_header_value_keeps_no_control_character_and_is_bounded() -> None:
    assert header_value(" bad\r\nrow\x1b[2J\x00 ") == "bad  row [2J"
    assert header_value("x" * 2000) == "x" * 1000


def test_the_attempt_count_is_believed_only_on_a_retry() -> None:
    forged = Msg(_client=None, subject="cmd.order.0.EURUSD", headers={ATTEMPTS: "99"})  # type: ignore[arg-type]
    retried = Msg(_client=None, subject="retry.execution.cmd.order.0.EURUSD", headers={ATTEMPTS: "3"})  # type: ignore[arg-type]
    assert (attempts(forged), attempts(retried)) == (0, 3)
