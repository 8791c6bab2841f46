"""``rrr-dlq``: list dead letters, and publish them again once whatever refused them is fixed."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec
import nats.js.errors

from rrr.shared import subjects
from rrr.shared.bus import (
    DEAD_LETTER_STREAM,
    DLQ_DELIVERIES,
    DLQ_MSG_ID,
    DLQ_REASON,
    DLQ_SERVICE,
    DLQ_SUBJECT,
    MSG_ID,
    Bus,
)
from rrr.shared.config import ServiceConfig
from rrr.shared.errors import RRRError
from rrr.shared.messages import any_decoder


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One message on the dead-letter stream."""

    seq: int
    subject: str
    service: str
    reason: str
    deliveries: str
    data: bytes
    headers: dict[str, str]

    def describe(self) -> str:
        """What the payload is, decoded if it decodes."""
        try:
            message = any_decoder.decode(self.data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return f"<{len(self.data)} bytes, undecodable>"
        return f"{type(message).__name__} id={message.id}"


async def read_dead_letters(bus: Bus) -> list[DeadLetter]:
    """Every message the dead-letter stream holds, oldest first."""
    out: list[DeadLetter] = []
    seq = 1
    while True:
        try:
            raw = await bus.js.get_msg(DEAD_LETTER_STREAM.name, seq=seq, subject=">", next=True)
        except nats.js.errors.NotFoundError:
            return out
        assert raw.seq is not None
        headers = dict(raw.headers or {})
        out.append(
            DeadLetter(
                seq=raw.seq,
                subject=headers.get(DLQ_SUBJECT, (raw.subject or "").removeprefix("dlq.")),
                service=headers.get(DLQ_SERVICE, "?"),
                reason=headers.get(DLQ_REASON, "?"),
                deliveries=headers.get(DLQ_DELIVERIES, "-"),
                data=raw.data or b"",
                headers=headers,
            )
        )
        seq = raw.seq + 1


# Only these services take dead letters back: for them a late message is as good as a timely one (rows are
# idempotent; an order is checked against what execution already did). The strategy is left out on
# purpose: a quote applied out of time order would change every decision after it.
REPUBLISHABLE = frozenset({"persistence", "execution"})


class NotRepublishableError(RRRError):
    """A dead letter of a service that does not take messages back."""

    def __init__(self, letter: DeadLetter) -> None:
        super().__init__(
            f"dead letter {letter.seq} failed in {letter.service}, which does not take messages back "
            f"(only {', '.join(sorted(REPUBLISHABLE))} do); it stays listed for inspection"
        )


async def republish(bus: Bus, letters: Sequence[DeadLetter]) -> int:
    """Hand each letter back to the service that failed on it, then remove it from the dead-letter stream.

    It goes on ``retry.<service>.<original subject>``, which only that service consumes: the other
    consumers of the original subject, which processed it fine, do not see it twice.

    Raises:
        NotRepublishableError: a letter is of a service that does not take messages back.
    """
    for letter in letters:
        if letter.service not in REPUBLISHABLE:
            raise NotRepublishableError(letter)
    for letter in letters:
        headers = {k: v for k, v in letter.headers.items() if not k.startswith("Rrr-Dlq-")}
        original_id = letter.headers.get(DLQ_MSG_ID)
        if original_id is not None:
            headers[MSG_ID] = original_id
        await bus.js.publish(subjects.retry(letter.service, letter.subject), letter.data, headers=headers or None)
        await bus.js.delete_msg(DEAD_LETTER_STREAM.name, letter.seq)
    return len(letters)


async def _main(args: argparse.Namespace) -> int:
    bus = await Bus.connect(args.nats_url, service="dlq", name="rrr-dlq", timeout_s=10)
    try:
        await bus.ensure_streams(max_age_s=ServiceConfig().stream_max_age_s, update=False)
        letters = await read_dead_letters(bus)
        if args.command == "list":
            for letter in letters:
                line = {
                    "seq": letter.seq,
                    "subject": letter.subject,
                    "service": letter.service,
                    "deliveries": letter.deliveries,
                    "reason": letter.reason,
                    "message": letter.describe(),
                }
                if args.json:
                    print(msgspec.json.encode(line).decode())
                else:
                    print(" ".join(f"{k}={v}" for k, v in line.items()))
            print(f"# {len(letters)} dead letters", file=sys.stderr)
            return 0
        chosen = letters if args.all else [x for x in letters if x.seq in set(args.seq)]
        missing = sorted(set(args.seq) - {x.seq for x in chosen})
        if missing:
            print(f"rrr-dlq republish: no dead letter with seq {', '.join(map(str, missing))}", file=sys.stderr)
            return 1
        count = await republish(bus, chosen)
        print(f"republished {count} dead letters")
        return 0
    finally:
        await bus.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``rrr-dlq``."""
    parser = argparse.ArgumentParser(prog="rrr-dlq", description="List and republish dead letters (stream RRR_DLQ).")
    parser.add_argument("--nats-url", default=os.environ.get("RRR_NATS_URL", "nats://127.0.0.1:4222"))
    commands = parser.add_subparsers(dest="command", required=True)
    p_list = commands.add_parser("list", help="one line per dead letter: seq, subject, service, reason")
    p_list.add_argument("--json", action="store_true", help="JSON lines")
    p_re = commands.add_parser("republish", help="publish dead letters again on their subjects, then drop them")
    p_re.add_argument("seq", nargs="*", type=int, help="sequence numbers from `list`")
    p_re.add_argument("--all", action="store_true", help="every dead letter")
    args = parser.parse_args(argv)
    if args.command == "republish" and not (args.all or args.seq):
        parser.error("republish: name the sequence numbers to republish, or --all")
    try:
        return asyncio.run(_main(args))
    except RRRError as exc:
        print(f"rrr-dlq: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
