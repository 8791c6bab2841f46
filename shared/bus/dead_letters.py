"""Dead letters and retries: where a message goes that its consumer could not process.

A message the handler refused is handed to ``retry.<service>.<subject>`` (the retry stream, consumed by the
same service only) with its attempt count, at most a bounded number of times; after that, or at once when
it cannot be decoded or arrived on a subject not its own, it is stored on ``dlq.<subject>`` with the
reason, for ``rrr-dlq`` to show and hand back after a fix.

A dead letter is signed with the system's key (``--dlq-key``): an HMAC over its subject, service, reason,
delivery count, original message id and payload. ``rrr-dlq`` republishes only letters whose signature it
can verify with the same key, so a letter that anyone else published to ``dlq.>`` is never handed to a
service. The headers JetStream acts on (``Nats-*``) are never carried over from a message into a dead
letter or a retry: copied, they would make JetStream refuse or misfile the copy.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Mapping

import msgspec
import nats.errors
import nats.js.errors
from nats.aio.msg import Msg

from rrr.shared import subjects
from rrr.shared.bus.connection import Connection
from rrr.shared.bus.outgoing import MSG_ID
from rrr.shared.bus.publish import describe, store_full
from rrr.shared.errors import TransientError

_log = logging.getLogger(__name__)

DLQ_REASON = "Rrr-Dlq-Reason"
DLQ_SUBJECT = "Rrr-Dlq-Subject"
DLQ_SERVICE = "Rrr-Dlq-Service"
DLQ_DELIVERIES = "Rrr-Dlq-Deliveries"
DLQ_MSG_ID = "Rrr-Dlq-Msg-Id"
DLQ_SIGNATURE = "Rrr-Dlq-Signature"
ATTEMPTS = "Rrr-Attempts"
_DLQ_PREFIX = "rrr-dlq-"
_NATS_PREFIX = "nats-"
_REASON_MAX = 1000
_SIGNATURE_VERSION = "rrr-dlq-v1"
# JetStream's error code for "message size exceeds maximum allowed" (a stream's max_msg_size).
_TOO_LARGE = 10054


def attempts(msg: Msg) -> int:
    """How many times a message was tried before this delivery (retries carry the count).

    Only a retry's count is believed: on any other subject the header is whatever the sender put there.
    """
    if not msg.subject.startswith("retry."):
        return 0
    try:
        return max(0, int((msg.headers or {}).get(ATTEMPTS, "0")))
    except ValueError:
        return 0


def _original_id(msg_id: str) -> str:
    return msg_id.split("~", 1)[0]


def header_value(text: str, limit: int = _REASON_MAX) -> str:
    """``text`` as a header value stores it and reads it back: no control characters, trimmed, bounded."""
    return "".join(ch if ch.isprintable() else " " for ch in text)[:limit].strip()


def carried_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    """The headers of a message that a dead letter or a retry of it keeps: none of JetStream's
    (``Nats-*``) and none of a dead letter's own (``Rrr-Dlq-*``), whoever set them."""
    return {k: v for k, v in (headers or {}).items() if not k.lower().startswith((_NATS_PREFIX, _DLQ_PREFIX))}


def dead_letter_signature(key: bytes, headers: Mapping[str, str], data: bytes) -> str:
    """The HMAC-SHA256 (hex) of a dead letter's subject, service, reason, deliveries, message id and payload."""
    fields = [_SIGNATURE_VERSION, *(headers.get(h, "") for h in _SIGNED_HEADERS), data]
    return hmac.new(key, msgspec.msgpack.encode(fields), hashlib.sha256).hexdigest()


def signature_valid(key: bytes, headers: Mapping[str, str], data: bytes) -> bool:
    """Tell whether a dead letter carries the signature of ``key`` over what it holds now."""
    return hmac.compare_digest(headers.get(DLQ_SIGNATURE, ""), dead_letter_signature(key, headers, data))


_SIGNED_HEADERS = (DLQ_SUBJECT, DLQ_SERVICE, DLQ_REASON, DLQ_DELIVERIES, DLQ_MSG_ID)


class DeadLetters(Connection):
    """Dead-lettering and handing messages to the retries."""

    async def dead_letter(self, msg: Msg, reason: str) -> None:
        """Store ``msg`` on the dead-letter stream with the reason, and count it.

        Raises:
            TransientError: the dead-letter stream could not store it (the message stays unacknowledged).
        """
        headers = carried_headers(msg.headers)
        # Kept aside, not as Nats-Msg-Id: two services dead-lettering the same message must both be kept.
        original_id = header_value(_original_id((msg.headers or {}).get(MSG_ID, "")))
        if original_id:
            headers[DLQ_MSG_ID] = original_id
        subject = subjects.retried_subject(msg.subject)
        headers[DLQ_REASON] = header_value(reason)
        headers[DLQ_SUBJECT] = subject
        headers[DLQ_SERVICE] = self.service
        headers[DLQ_DELIVERIES] = str(attempts(msg) + 1)
        headers.pop(ATTEMPTS, None)
        if self.dlq_key is not None:
            headers[DLQ_SIGNATURE] = dead_letter_signature(self.dlq_key, headers, msg.data)
        data = msg.data
        try:
            try:
                await self.js.publish(subjects.dead_letter(subject), data, headers=headers)
            except nats.js.errors.APIError as exc:
                if exc.err_code != _TOO_LARGE:
                    raise
                # Larger than the dead-letter stream takes (a core NATS message up to the server's max_payload,
                # which no stream stored): the record of it is kept, with the reason, without its payload and
                # the headers it came with.
                reason = f"{reason} (its {len(data):,} bytes and headers not kept: over RRR_DLQ's max_msg_size)"
                headers = {k: v for k, v in headers.items() if k.startswith("Rrr-Dlq-")}
                headers[DLQ_REASON] = reason[:1000]
                data = b""
                await self.js.publish(subjects.dead_letter(subject), data, headers=headers)
        except (nats.errors.Error, TimeoutError) as exc:
            if store_full(exc):
                self.counters.store_full += 1
            raise TransientError(f"could not dead-letter a message on {msg.subject}: {describe(exc)}") from exc
        self.counters.dead_lettered += 1
        _log.warning("dead-lettered a message on %s: %s", subject, reason)

    async def retry_later(self, msg: Msg) -> None:
        """Hand ``msg`` to this service's retry consumer (``retry.<service>.<subject>``), one attempt more.

        Raises:
            TransientError: the retry stream could not store it.
        """
        headers = carried_headers(msg.headers)
        tried = attempts(msg) + 1
        headers[ATTEMPTS] = str(tried)
        original_id = (msg.headers or {}).get(MSG_ID)
        if original_id is not None:
            headers[MSG_ID] = f"{_original_id(original_id)}~{tried}"
        subject = subjects.retry(self.service, subjects.retried_subject(msg.subject))
        try:
            await self.js.publish(subject, msg.data, headers=headers)
        except (nats.errors.Error, TimeoutError) as exc:
            # The retry stream takes any message a stream stored (HEADROOM_BYTES larger), so this is an outage
            # or a full stream: the batch is retried.
            if store_full(exc):
                self.counters.store_full += 1
            raise TransientError(f"could not hand a message on {msg.subject} to the retries: {describe(exc)}") from exc
        self.counters.retried += 1
