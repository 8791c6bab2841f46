"""``rrr-dlq``: list dead letters, and publish them again once whatever refused them is fixed.

Only letters the system wrote are republished: each carries an HMAC of the system's dead-letter key
(``RRR_DLQ_KEY``, the services' ``--dlq-key``) over its subject, service, reason, deliveries, message id
and payload, and this tool verifies it with the same key. A letter anyone else published to ``dlq.>``,
or one whose headers were altered, is refused, as is every letter when no key is set. The target is
validated too: a per-symbol subject of a family the letter's service consumes, on its symbol's shard.
Any refusal or failure is one line on stderr and exit status 1; a letter is deleted only once its
republished copy was stored.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import msgspec
import nats.errors
import nats.js.errors

from rrr.deploy.terminal import printable
from rrr.shared import subjects
from rrr.shared.bus import (
    DEAD_LETTER_STREAM,
    DLQ_DELIVERIES,
    DLQ_MSG_ID,
    DLQ_REASON,
    DLQ_SERVICE,
    DLQ_SIGNATURE,
    DLQ_SUBJECT,
    META_BUCKET,
    MSG_ID,
    RETRY_STREAM,
    Bus,
    signature_valid,
)
from rrr.shared.config import ServiceConfig, tls_from_env, with_local_system
from rrr.shared.errors import InvalidSubjectError, InvalidSymbolError, RRRError
from rrr.shared.messages import any_decoder

# The environment variable of the system's dead-letter key, as the services read it (``dlq_key``).
KEY_ENV = "RRR_DLQ_KEY"
# The only headers of a letter handed back besides its message id: the sender's trace context.
_TRACE_HEADERS = ("traceparent", "tracestate")


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

    def signature(self, key: bytes | None) -> str:
        """``valid`` when signed with ``key``; else ``invalid``, ``missing``, or ``unchecked`` without a key."""
        if DLQ_SIGNATURE not in self.headers:
            return "missing"
        if key is None:
            return "unchecked"
        return "valid" if signature_valid(key, self.headers, self.data) else "invalid"

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


# Only these services take dead letters back, each on the families it consumes: for them a late message is
# as good as a timely one (rows are idempotent; an order is checked against what execution already did).
# The strategy is left out on purpose: a quote applied out of time order would change every decision after it.
REPUBLISHABLE: Mapping[str, frozenset[str]] = {
    "persistence": frozenset(
        {subjects.QUOTE, subjects.TRADE, subjects.SIGNAL, subjects.ORDER_EVENT, subjects.POSITION}
    ),
    "execution": frozenset({subjects.ORDER_COMMAND}),
}


class NotRepublishableError(RRRError):
    """A dead letter of a service that does not take messages back."""

    def __init__(self, letter: DeadLetter) -> None:
        super().__init__(
            f"dead letter {letter.seq} failed in {letter.service!r}, which does not take messages back "
            f"(only {', '.join(sorted(REPUBLISHABLE))} do); it stays listed for inspection"
        )


class RefusedLetterError(RRRError):
    """A dead letter that is not republished: not signed by the system, or with a target that is not valid."""

    def __init__(self, letter: DeadLetter, expected: str, got: str) -> None:
        self.seq = letter.seq
        super().__init__(f"dead letter {letter.seq} refused: expected {expected}, got {got}; nothing was republished")


class NoKeyError(RRRError):
    """No dead-letter key to verify letters with."""

    def __init__(self) -> None:
        super().__init__(
            f"{KEY_ENV} is not set: expected the system's dead-letter key (the services' --dlq-key), to "
            "republish only letters the system signed; got none, so nothing was republished"
        )


class RepublishError(RRRError):
    """A letter could not be handed back, or not removed after it was."""

    def __init__(self, letter: DeadLetter, done: int, what: str) -> None:
        super().__init__(f"dead letter {letter.seq}: {what} ({done} republished before it)")


def _target(letter: DeadLetter, shards: int | None) -> str:
    """The retry subject a verified letter goes to; RefusedLetterError unless its subject is valid."""
    if letter.service not in REPUBLISHABLE:
        raise NotRepublishableError(letter)
    families = REPUBLISHABLE[letter.service]
    expected = f"a subject {letter.service} consumes ({', '.join(sorted(families))}.<shard>.<symbol>)"
    try:
        parsed = subjects.parse(letter.subject) if shards is None else subjects.parse_owned(letter.subject, shards)
    except (InvalidSubjectError, InvalidSymbolError) as exc:
        raise RefusedLetterError(letter, expected, str(exc)) from None
    if parsed.family not in families:
        raise RefusedLetterError(letter, expected, repr(letter.subject))
    return subjects.retry(letter.service, letter.subject)


def _verify(letter: DeadLetter, key: bytes) -> None:
    signature = letter.signature(key)
    if signature != "valid":
        got = "no signature" if signature == "missing" else "a signature that does not match its content"
        raise RefusedLetterError(letter, "a dead letter signed by this system", got)


async def recorded_shards(bus: Bus) -> int | None:
    """The shard count the system recorded at its first start, or None if no service ever started."""
    try:
        entry = await (await bus.js.key_value(META_BUCKET)).get("shards")
        return int(entry.value or b"0") or None
    except (nats.js.errors.NotFoundError, ValueError):
        return None


async def republish(bus: Bus, letters: Sequence[DeadLetter], *, key: bytes | None) -> int:
    """Hand each letter back to the service that failed on it, then remove it from the dead-letter stream.

    It goes on ``retry.<service>.<original subject>``, which only that service consumes: the other
    consumers of the original subject, which processed it fine, do not see it twice. Every letter is
    checked before any is republished; each is deleted only once its copy was stored on the retry stream.

    Raises:
        NoKeyError: no key to verify the letters with.
        RefusedLetterError: a letter is not signed with ``key``, or its subject is not valid.
        NotRepublishableError: a letter is of a service that does not take messages back.
        RepublishError: a letter could not be stored on the retry stream, or not deleted after.
    """
    if key is None:
        raise NoKeyError()
    shards = await recorded_shards(bus)
    targets = []
    for letter in letters:
        _verify(letter, key)
        targets.append(_target(letter, shards))
    done = 0
    for letter, target in zip(letters, targets, strict=True):
        # JetStream acts on Nats-* headers: only the signed message id goes back, and the trace context.
        headers = {k: v for k, v in letter.headers.items() if k.lower() in _TRACE_HEADERS}
        original_id = letter.headers.get(DLQ_MSG_ID)
        if original_id:
            headers[MSG_ID] = original_id
        try:
            ack = await bus.js.publish(target, letter.data, headers=headers or None)
        except (nats.errors.Error, TimeoutError) as exc:
            raise RepublishError(letter, done, f"could not publish to {target}: {exc or type(exc).__name__}") from exc
        if ack.stream != RETRY_STREAM.name:
            raise RepublishError(letter, done, f"expected {target} stored on {RETRY_STREAM.name}, got {ack.stream}")
        try:
            await bus.js.delete_msg(DEAD_LETTER_STREAM.name, letter.seq)
        except (nats.errors.Error, TimeoutError) as exc:
            raise RepublishError(letter, done, f"republished, but could not be deleted: {exc}") from exc
        done += 1
    return done


async def _main(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    key = environ.get(KEY_ENV, "").encode() or None
    bus = await Bus.connect(args.nats_url, service="dlq", name="rrr-dlq", timeout_s=10, tls=tls_from_env(environ))
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
                    "signature": letter.signature(key),
                    "reason": letter.reason,
                    "message": letter.describe(),
                }
                # Every field but seq is whatever was published to dlq.>: escaped and bounded.
                if args.json:
                    print(json.dumps(line, ensure_ascii=True))
                else:
                    print(" ".join(f"{k}={printable(v)}" for k, v in line.items()))
            print(f"# {len(letters)} dead letters", file=sys.stderr)
            return 0
        chosen = letters if args.all else [x for x in letters if x.seq in set(args.seq)]
        missing = sorted(set(args.seq) - {x.seq for x in chosen})
        if missing:
            print(f"rrr-dlq republish: no dead letter with seq {', '.join(map(str, missing))}", file=sys.stderr)
            return 1
        count = await republish(bus, chosen, key=key)
        print(f"republished {count} dead letters")
        return 0
    finally:
        await bus.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``rrr-dlq``."""
    parser = argparse.ArgumentParser(prog="rrr-dlq", description="List and republish dead letters (stream RRR_DLQ).")
    parser.add_argument("--nats-url", default=None, help="NATS URL [env RRR_DLQ_NATS_URL or RRR_NATS_URL]")
    commands = parser.add_subparsers(dest="command", required=True)
    p_list = commands.add_parser("list", help="one line per dead letter: seq, subject, service, reason")
    p_list.add_argument("--json", action="store_true", help="JSON lines")
    p_re = commands.add_parser(
        "republish", help=f"hand dead letters signed with {KEY_ENV} back to their service, then drop them"
    )
    p_re.add_argument("seq", nargs="*", type=int, help="sequence numbers from `list`")
    p_re.add_argument("--all", action="store_true", help="every dead letter")
    args = parser.parse_args(argv)
    environ = dict(os.environ) if args.nats_url else with_local_system("rrr-dlq")
    # Its own NATS user where `rrr-stack` gave it one: it may hand dead letters back, which the tap may not.
    args.nats_url = (
        args.nats_url or environ.get("RRR_DLQ_NATS_URL") or environ.get("RRR_NATS_URL", "nats://127.0.0.1:4222")
    )
    if args.command == "republish" and not (args.all or args.seq):
        parser.error("republish: name the sequence numbers to republish, or --all")
    try:
        return asyncio.run(_main(args, environ))
    except RRRError as exc:
        print(f"rrr-dlq: error: {exc}", file=sys.stderr)
        return 1
    except (nats.errors.Error, TimeoutError) as exc:
        print(f"rrr-dlq: error: NATS: {exc or type(exc).__name__}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
