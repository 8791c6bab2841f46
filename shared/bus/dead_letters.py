"""Dead letters and retries: where a message goes that its consumer could not process.

A message the handler refused is handed to ``retry.<service>.<subject>`` (the retry stream, consumed by the
same service only) with its attempt count, at most a bounded number of times; after that, or at once when
it cannot be decoded, it is stored on ``dlq.<subject>`` with the reason, for ``rrr-dlq`` to show and hand
back after a fix.
"""

from __future__ import annotations

import logging

import nats.errors
from nats.aio.msg import Msg

from rrr.shared import subjects
from rrr.shared.bus.connection import Connection
from rrr.shared.bus.publish import MSG_ID
from rrr.shared.errors import TransientError

_log = logging.getLogger(__name__)

DLQ_REASON = "Rrr-Dlq-Reason"
DLQ_SUBJECT = "Rrr-Dlq-Subject"
DLQ_SERVICE = "Rrr-Dlq-Service"
DLQ_DELIVERIES = "Rrr-Dlq-Deliveries"
DLQ_MSG_ID = "Rrr-Dlq-Msg-Id"
ATTEMPTS = "Rrr-Attempts"


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
        try:
            await self.js.publish(subjects.dead_letter(subject), msg.data, headers=headers)
        except (nats.errors.Error, TimeoutError) as exc:
            raise TransientError(f"could not dead-letter a message on {msg.subject}: {exc}") from exc
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
            raise TransientError(f"could not hand a message on {msg.subject} to the retries: {exc}") from exc
        self.counters.retried += 1
