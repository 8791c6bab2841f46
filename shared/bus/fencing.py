"""Fencing: an instance that lost its shard's lease cannot publish for the shard, even frozen at the worst time.

A lease (``rrr.shared.bus.lease``) says which instance should act for a shard; a process frozen (SIGSTOP, a
long pause) right after checking it, and woken after its lease lapsed and a standby took over, would still
publish what it had in hand. The streams themselves refuse that: every message an instance publishes for its
shard carries ``Nats-Expected-Last-Subject-Sequence``, the sequence of the last message it knows of on the
shard's subjects in that stream (``Nats-Expected-Last-Subject-Sequence-Subject``, e.g. ``cmd.order.0.>``), and
JetStream stores it only if nobody wrote there since. An instance that takes a shard over first writes a marker
there (``cmd.order.0._fence.strategy``, a token longer than any message, so no consumer of the shard sees it):
from then on, anything the former holder publishes is refused with "wrong last sequence" (10071).

On such a refusal the instance asks its lease: lapsed, it stops (``LeaseLostError``); still held (a late message
of the former holder landed after the takeover), it reads where the shard's subjects end now and publishes
again. What it publishes is the deterministic output of what it consumed, under the same message ids, so a
former holder's late message is one it would have sent itself, and JetStream's de-duplication drops the copy.

A snapshot's head is fenced the same way, on its own subject (``snap.<name>.head``); taking over republishes the
current head, which is the marker there. Messages are published one at a time per fence (each waits for the
acknowledgement that moves the fence), so fencing costs a round trip per envelope of output.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import nats.js.errors
from nats.js.api import PubAck

from rrr.shared import subjects
from rrr.shared.bus.lease import Lease

__all__ = ["EXPECTED_SEQ", "EXPECTED_SUBJECT", "Fence", "FenceSpec", "publish_one", "wrong_last_sequence"]

_log = logging.getLogger(__name__)

EXPECTED_SEQ = "Nats-Expected-Last-Subject-Sequence"
EXPECTED_SUBJECT = "Nats-Expected-Last-Subject-Sequence-Subject"
# JetStream's "wrong last sequence": someone wrote on the fenced subjects since.
_WRONG_LAST_SEQUENCE = 10071


def wrong_last_sequence(exc: BaseException) -> bool:
    """Whether ``exc`` is JetStream refusing a fenced message: the subjects moved on since."""
    return isinstance(exc, nats.js.errors.APIError) and exc.err_code == _WRONG_LAST_SEQUENCE


@dataclass(frozen=True, slots=True)
class FenceSpec:
    """One stream a service publishes its shard's output to: the subjects fenced, and where a takeover marks them.

    ``marker`` None: the fenced subject is one message's own (a snapshot head); taking over republishes it.
    """

    stream: str
    filter: str
    marker: str | None


@dataclass(slots=True)
class Fence:
    """Where each of a shard's fenced subjects ends, as far as this instance, which holds ``lease``, knows."""

    lease: Lease
    specs: Sequence[FenceSpec]
    last: dict[str, int] = field(default_factory=dict)
    # Refusals that were a former holder's late messages (the lease still held): the fence was read again.
    rearmed: int = 0

    def spec_for(self, subject: str) -> FenceSpec | None:
        """The fence ``subject`` falls under, if any."""
        for spec in self.specs:
            if subjects.matches(subject, spec.filter):
                return spec
        return None

    def headers(self, spec: FenceSpec, headers: dict[str, str]) -> dict[str, str]:
        """``headers`` with the expectation that nobody wrote on ``spec``'s subjects since."""
        return {**headers, EXPECTED_SEQ: str(self.last.get(spec.filter, 0)), EXPECTED_SUBJECT: spec.filter}

    def moved(self, spec: FenceSpec, ack: PubAck) -> None:
        """This instance's message is stored at ``ack.seq``: the subjects end there now (a duplicate's
        acknowledgement names an older message, which moves nothing)."""
        self.last[spec.filter] = max(self.last.get(spec.filter, 0), ack.seq)

    async def read(self, js: nats.js.JetStreamContext, spec: FenceSpec) -> tuple[int, bytes | None]:
        """Where ``spec``'s subjects end now in the stream (0: nothing there), and that message's payload."""
        try:
            msg = await js.get_last_msg(spec.stream, spec.filter)
        except nats.js.errors.NotFoundError:
            return 0, None
        return msg.seq or 0, msg.data

    async def arm(self, js: nats.js.JetStreamContext) -> None:
        """Mark every fenced stream as this instance's: a message published by a former holder from now on is
        refused. Called once the lease is held, before anything is published."""
        for spec in self.specs:
            while True:
                self.lease.check()
                seq, data = await self.read(js, spec)
                subject = spec.marker or spec.filter
                if spec.marker is None and data is None:
                    self.last[spec.filter] = 0  # nothing there yet: the first message expects nothing
                    break
                payload = b"" if spec.marker is not None else data or b""
                headers = {EXPECTED_SEQ: str(seq), EXPECTED_SUBJECT: spec.filter}
                try:
                    ack = await js.publish(subject, payload, stream=spec.stream, headers=headers)
                except nats.js.errors.APIError as exc:
                    if wrong_last_sequence(exc):
                        continue  # a former holder's message landed between the read and the mark
                    raise
                self.last[spec.filter] = ack.seq
                break
        _log.info("fenced %s", ", ".join(f"{s.filter} at {self.last[s.filter]}" for s in self.specs))

    async def rearm(self, js: nats.js.JetStreamContext, spec: FenceSpec) -> None:
        """After a refusal while the lease is still held: read where the subjects end now, and go on from there.

        Raises:
            LeaseLostError: the lease is not held (any more).
        """
        self.lease.check()
        self.last[spec.filter], _ = await self.read(js, spec)
        self.rearmed += 1
        _log.warning("a former holder's message landed on %s after the takeover; fence read again", spec.filter)

    def gauges(self) -> dict[str, int]:
        """For the heartbeat."""
        return {"fence_rearmed": self.rearmed}


async def publish_one(js: nats.js.JetStreamContext, fence: Fence, subject: str, data: bytes) -> PubAck:
    """Publish one message under its fence (a snapshot's head), or plainly where no fence covers it.

    Raises:
        LeaseLostError: the lease lapsed, before the publish or on a refusal.
    """
    spec = fence.spec_for(subject)
    if spec is None:
        return await js.publish(subject, data)
    while True:
        fence.lease.check()
        try:
            ack = await js.publish(subject, data, headers=fence.headers(spec, {}))
        except nats.js.errors.APIError as exc:
            if not wrong_last_sequence(exc):
                raise
            await fence.rearm(js, spec)
            continue
        fence.moved(spec, ack)
        return ack
