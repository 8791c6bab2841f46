"""Dead letters and retries: where a message goes that its consumer could not process.

A message the handler refused is handed to ``retry.<service>.<subject>`` (the retry stream, consumed by the
same service only) with its attempt count, at most a bounded number of times; after that, or at once when
it cannot be decoded, it is stored on ``dlq.<subject>`` with the reason, for ``rrr-dlq`` to show and hand
back after a fix.
"""

from __future__ import annotations

import logging

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg

from rrr.shared import subjects
from rrr.shared.bus.connection import Connection
from rrr.shared.bus.publish import MSG_ID, describe, store_full
from rrr.shared.errors import TransientError

_log = logging.getLogger(__name__)

DLQ_REASON = "Rrr-Dlq-Reason"
DLQ_SUBJECT = "Rrr-Dlq-Subject"
DLQ_SERVICE = "Rrr-Dlq-Service"
DLQ_DELIVERIES = "Rrr-Dlq-Deliveries"
DLQ_MSG_ID = "Rrr-Dlq-Msg-Id"
ATTEMPTS = "Rrr-Attempts"
# JetStream's error code for "message size exceeds maximum allowed" (a stream's max_msg_size).
_TOO_LARGE = 10054


def attempts(msg: Msg) -> int:
    """How many times a message was tried before this delivery (retries carry the count)."""
    try:
        return int((msg.headers or {}).get(ATTEMPTS, "0"))
    except ValueError:
        return 0


def _original_id(msg_id: str) -> str:
    return msg_id.split("~", 1)[0]


class DeadLetters(Connection):
    """Dead-lettering and handing messages to the retries."""

    async def dead_letter(self, msg: Msg, reason: str) -> None:
        """Store ``msg`` on the dead-letter stream with the reason, and count it.

        Raises:
            TransientError: the dead-letter stream could not store it (the message stays unacknowledged).
        """
        headers = dict(msg.headers or {})
        # Kept aside, not as Nats-Msg-Id: two services dead-lettering the same message must both be kept.
        original_id = headers.pop(MSG_ID, None)
        if original_id is not None:
            headers[DLQ_MSG_ID] = _original_id(original_id)
        subject = subjects.retried_subject(msg.subject)
        headers[DLQ_REASON] = reason[:1000]
        headers[DLQ_SUBJECT] = subject
        headers[DLQ_SERVICE] = self.service
        headers[DLQ_DELIVERIES] = str(attempts(msg) + 1)
        headers.pop(ATTEMPTS, None)
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
        headers = dict(msg.headers or {})
        tried = attempts(msg) + 1
        headers[ATTEMPTS] = str(tried)
        original_id = headers.get(MSG_ID)
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
