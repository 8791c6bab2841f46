"""``rrr-tap SUBJECT``: print every message on a subject pattern, decoded, one line each."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import ssl
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TextIO

import msgspec
import nats.errors
from nats.aio.msg import Msg

from rrr.deploy.terminal import printable
from rrr.shared import subjects
from rrr.shared.bus import Bus, Subscription
from rrr.shared.config import redact, tls_from_env, with_local_system
from rrr.shared.errors import RRRError
from rrr.shared.messages import SHARD_TYPES, QuoteBatch, any_decoder, envelope_decoder
from rrr.shared.subjects import check_symbol

# The strategies' lockstep messages (no symbol: shown on their shard's ``<family>.<shard>._step``).
_STEP_TAGS = frozenset(kind.__struct_config__.tag for kinds in SHARD_TYPES.values() for kind in kinds)
# Symbols one tap may filter on.
_SYMBOLS_MAX = 1000
# Longer texts than any valid message holds (an id is at most 256 characters) are cut in JSON output too.
JSON_TEXT_MAX = 1000


def describe(msg: Msg, symbols: frozenset[str] = frozenset()) -> list[dict[str, Any]]:
    """The decoded fields of a message, or what is wrong with its payload: one record per quote of a quote
    batch and per message of an envelope. With ``symbols``, only the records of those symbols (an undecodable
    message is always shown)."""
    envelope = subjects.parse_envelope(msg.subject)
    if envelope is not None:
        return _describe_envelope(msg, *envelope, symbols)
    try:
        message = any_decoder.decode(msg.data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return [{"type": "undecodable", "subject": msg.subject, "bytes": len(msg.data), "error": str(exc)}]
    if isinstance(message, QuoteBatch):
        records = []
        for index, row in enumerate(message.quotes):
            if symbols and row.symbol not in symbols:
                continue
            fields = msgspec.to_builtins(row.to_quote(message.ts_init))
            fields.pop("type")
            records.append({"type": "quote", "subject": msg.subject, "batch": f"{message.id}[{index}]", **fields})
        return records
    fields = msgspec.to_builtins(message)
    if symbols and fields.get("symbol") not in symbols:
        return []
    return [{"type": fields.pop("type"), "subject": msg.subject, **fields}]


def _describe_envelope(msg: Msg, family: str, shard: int, symbols: frozenset[str]) -> list[dict[str, Any]]:
    """A record per message of an envelope, each on the subject it would travel on alone."""
    try:
        items = envelope_decoder.decode(msg.data).items
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return [{"type": "undecodable", "subject": msg.subject, "bytes": len(msg.data), "error": str(exc)}]
    records = []
    for index, raw in enumerate(items):
        try:
            fields = msgspec.to_builtins(any_decoder.decode(raw))
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            records.append({"type": "undecodable", "subject": f"{msg.subject}[{index}]", "error": str(exc)})
            continue
        symbol = fields.get("symbol")
        if symbols and symbol not in symbols:
            continue
        if isinstance(symbol, str):
            subject = f"{family}.{shard}.{symbol}"
        elif fields.get("type") in _STEP_TAGS and family in subjects.STEP_FAMILIES:
            subject = subjects.step(family, shard)  # a lockstep marker or progress: its shard's own subject
        else:
            subject = f"{msg.subject}[{index}]"
        records.append({"type": fields.pop("type"), "subject": subject, **fields})
    return records


def _envelopes_of(subject: str) -> tuple[str, str] | None:
    """For a pattern naming one symbol (``evt.order.*.EURUSD``): the pattern of the envelopes that may carry
    its messages (``evt.order.*._batch``) and the symbol."""
    parts = subject.split(".")
    if len(parts) != 4 or parts[3] in ("*", ">", subjects.ENVELOPE_TOKEN):
        return None
    return ".".join([*parts[:3], subjects.ENVELOPE_TOKEN]), parts[3]


def render(record: dict[str, Any]) -> str:
    """One human-readable line: ``type subject field=value ...``, every field escaped and bounded."""
    rest = " ".join(f"{printable(k)}={printable(v)}" for k, v in record.items() if k not in ("type", "subject"))
    return f"{printable(record['type'])} {printable(record['subject'])} {rest}"


def render_json(record: dict[str, Any]) -> str:
    """One JSON object, in ASCII (every other character as a ``\\u`` escape), each text at most
    ``JSON_TEXT_MAX`` characters."""
    bounded = {k: _cut(v, JSON_TEXT_MAX) if isinstance(v, str) else v for k, v in record.items()}
    return json.dumps(bounded, ensure_ascii=True, separators=(",", ":"))


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]}...(+{len(text) - limit} chars)"


async def tap(
    url: str,
    subject: str,
    *,
    as_json: bool,
    count: int | None,
    out: TextIO,
    symbols: frozenset[str] = frozenset(),
    tls: ssl.SSLContext | None = None,
) -> int:
    """Print messages on ``subject`` until ``count`` were printed or the process is interrupted.

    A line ``# tapping <subject> on <url>`` goes to stderr once the subscription is in place. ``tls``: the
    system's TLS (``RRR_NATS_TLS_*``), when it has some.
    """
    bus = await Bus.connect(url, service="tap", name=f"tap:{subject}", timeout_s=10, tls=tls)
    done = asyncio.Event()
    seen = 0

    def _printer(only: frozenset[str]) -> Callable[[Msg, object], Awaitable[None]]:
        async def _print(msg: Msg, _: object) -> None:
            nonlocal seen
            for record in describe(msg, only):
                if done.is_set():
                    return
                out.write((render_json(record) if as_json else render(record)) + "\n")
                seen += 1
                if count is not None and seen >= count:
                    done.set()
            out.flush()

        return _print

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, done.set)
    try:
        await bus.subscribe(Subscription(subject, None, _printer(symbols), shards=None))
        envelopes = _envelopes_of(subject)
        if envelopes is not None:
            # The messages of the named symbol that travel in envelopes, with the others.
            pattern, symbol = envelopes
            await bus.subscribe(Subscription(pattern, None, _printer(frozenset({symbol})), shards=None))
        await bus.nc.flush()
        # Said only now, once the subscription is in place: a script may start publishing when it reads this.
        print(f"# tapping {subject} on {redact(url)}", file=sys.stderr, flush=True)
        await done.wait()
    finally:
        await bus.close()
    return seen


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``rrr-tap``."""
    parser = argparse.ArgumentParser(prog="rrr-tap", description="Print live messages of a subject, decoded.")
    parser.add_argument("subject", help="subject or pattern: md.>, evt.order.>, cmd.order.0.EURUSD ...")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--count", type=int, default=None, help="exit after this many messages")
    parser.add_argument(
        "--symbol",
        action="append",
        default=[],
        help="only messages and batched quotes of this symbol (repeat for several)",
    )
    parser.add_argument("--nats-url", default=None, help="NATS URL [env RRR_NATS_URL; default nats://127.0.0.1:4222]")
    args = parser.parse_args(argv)
    if args.count is not None and args.count < 1:
        parser.error(f"--count: expected a whole number >= 1, got {args.count}")
    if len(args.symbol) > _SYMBOLS_MAX:
        parser.error(f"--symbol: at most {_SYMBOLS_MAX} symbols, got {len(args.symbol)}")
    for symbol in args.symbol:
        try:
            check_symbol(symbol)
        except RRRError as exc:
            parser.error(f"--symbol: {exc}")
    # Given a URL, the tap uses it as it is: no local system is looked for (nor said to be used).
    environ = with_local_system("rrr-tap") if args.nats_url is None else dict(os.environ)
    url = args.nats_url or environ.get("RRR_NATS_URL", "nats://127.0.0.1:4222")
    try:
        asyncio.run(
            tap(
                url,
                args.subject,
                as_json=args.json,
                count=args.count,
                out=sys.stdout,
                symbols=frozenset(args.symbol),
                tls=tls_from_env(environ),
            )
        )
    except nats.errors.BadSubjectError:
        parser.error(f"subject: {args.subject!r} is not a valid subject or pattern (e.g. md.>, evt.order.*.EURUSD)")
    except RRRError as exc:
        print(f"rrr-tap: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
