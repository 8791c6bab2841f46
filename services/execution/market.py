"""The market the paper venue fills at: quotes execution reads itself from the market-data stream.

An order names the quote that triggered it by its sequence in ``RRR_MD`` (``quote_seq``), its place in
the quote batch stored there (``quote_index``; 0 for a single quote) and its time (``quote_ts``).
Execution fetches that message from the stream, checks it is a quote of the order's
symbol at that time, and prices the order there: the bid and ask an order carries are never a price. A
replay therefore fills every order at the very quote that triggered it, however fast it runs, and an
order cannot choose its own price: only market data (published by market-data and the replay tool, by
their NATS permissions) ever sets one. An order without ``quote_seq`` (an older client) is priced at the
symbol's latest quote, as a market order would be: the newer of its latest single quote in the stream and
its newest quote among the latest batches execution holds.

Execution follows its shard's market data itself (``follow``, raw, into a bounded ``MarketCopy``): the
message an order names is almost always there already. Otherwise one request to JetStream per message the
orders of a batch name, at most 32 in flight. Each message is decoded once and kept in a small cache
(``bench/micro.py``, ``venue_price``, measures the requests).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass

import msgspec
import nats.errors
import nats.js.errors
from cachetools import LRUCache
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy

from rrr.execution.matching import At, Touch
from rrr.shared import subjects
from rrr.shared.bus import MARKET_DATA_STREAM, Bus, stream_seq
from rrr.shared.errors import MisroutedMessageError, TransientError
from rrr.shared.messages import MarketData, Quote, QuoteBatch, SubmitOrder, check_subject, market_data_decoder


@dataclass(frozen=True, slots=True)
class NoPrice:
    """Why an order has no price: its quote is not in the market-data stream, or is not what it says."""

    reason: str


Price = Quote | NoPrice


# Messages of the market-data stream by sequence, decoded: a stored message never changes, and the orders
# of one batch of quotes name the same message. Bounded, least recently used goes.
Cache = MutableMapping[int, tuple[str, MarketData | str]]


class MarketCopy:
    """The newest messages of this shard's market data as RRR_MD delivers them, raw, by stream sequence.

    An order names a quote the strategy has just read from the same stream, so its message is almost
    always here already: read from this copy, the price costs no request. Bounded: the oldest goes; a
    sequence not here is read from the stream itself.
    """

    def __init__(self, maxlen: int = 4096, max_bytes: int = 16 * 1024 * 1024) -> None:
        self._maxlen = maxlen
        self._max_bytes = max_bytes
        self._bytes = 0
        self._raw: dict[int, tuple[str, bytes]] = {}

    def __len__(self) -> int:
        return len(self._raw)

    def add(self, seq: int, subject: str, data: bytes) -> None:
        """Keep the message at ``seq``; the oldest go once ``maxlen`` messages or ``max_bytes`` are held."""
        raw = self._raw
        held = raw.get(seq)
        if held is not None:  # delivered again after the consumer was re-created
            self._bytes -= len(held[1])
        raw[seq] = (subject, data)
        self._bytes += len(data)
        while len(raw) > self._maxlen or self._bytes > self._max_bytes:
            oldest = next(iter(raw))  # dicts keep insertion order: stream order
            self._bytes -= len(raw.pop(oldest)[1])

    def get(self, seq: int) -> tuple[str, bytes] | None:
        """The subject and payload at ``seq``, if held."""
        return self._raw.get(seq)

    def oldest(self) -> int | None:
        """The sequence of the oldest message held, None when empty."""
        return next(iter(self._raw), None)

    def between(self, first: int, last: int) -> list[tuple[int, str, bytes]]:
        """The messages held from sequence ``first`` to ``last``, in stream order."""
        return [(seq, *self._raw[seq]) for seq in self._raw if first <= seq <= last]

    def newest(self, limit: int) -> list[tuple[int, str, bytes]]:
        """The newest ``limit`` messages held, newest first."""
        out: list[tuple[int, str, bytes]] = []
        for seq in reversed(self._raw):
            if len(out) == limit:
                break
            subject, data = self._raw[seq]
            out.append((seq, subject, data))
        return out


# A market-data message as followed: its stream sequence, subject and payload.
Raw = tuple[int, str, bytes]


async def follow(
    bus: Bus,
    shard: int,
    copy: MarketCopy,
    stop: asyncio.Event,
    *,
    start_seq: int | None = None,
    matcher: asyncio.Queue[Raw] | None = None,
) -> None:
    """Keep ``copy`` filled with this shard's market data from now on (from ``start_seq`` if given), until
    ``stop`` is set; hand every message to ``matcher`` too, when given, in stream order.

    An ordered push consumer without acknowledgements, and no decoding: a message is decoded only when an
    order names it or the matcher has orders of its symbols. A full ``matcher`` queue holds the consumer
    back (JetStream's flow control then pauses the server): matching never skips a message.
    """

    async def _keep(msg: Msg) -> None:
        seq = stream_seq(msg)
        copy.add(seq, msg.subject, msg.data)
        if matcher is not None:
            await matcher.put((seq, msg.subject, msg.data))

    config = ConsumerConfig(deliver_policy=DeliverPolicy.NEW)
    if start_seq is not None:
        config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=max(start_seq, 1))
    # On a connection of its own: under a backlog its window would otherwise share the server's bound with the
    # commands' (Bus.own_connection), and the quotes execution asks for would queue behind it.
    async with bus.own_connection("market-data") as (_, js):
        sub = await js.subscribe(
            subjects.plane_shard_filter(subjects.MARKET_DATA_ALL, shard),
            stream=MARKET_DATA_STREAM.name,
            cb=_keep,
            ordered_consumer=True,
            config=config,
        )
        try:
            await stop.wait()
        finally:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()


def new_cache(max_quotes: int = 65_536) -> LRUCache[int, tuple[str, MarketData | str]]:
    """An empty cache of decoded market-data messages, bounded by the quotes they hold (a decoded batch
    takes about six times its size on the wire)."""
    return LRUCache(maxsize=max_quotes, getsizeof=_quotes_held)


def _quotes_held(entry: tuple[str, MarketData | str]) -> int:
    message = entry[1]
    return len(message.quotes) if isinstance(message, QuoteBatch) else 1


async def _read(
    bus: Bus, seq: int, shards: int, cache: Cache, copy: MarketCopy | None = None
) -> tuple[str, MarketData | str]:
    """The subject and the decoded message at ``seq`` of RRR_MD, or why it is not a valid one.

    Raises:
        nats.js.errors.NotFoundError: no message at ``seq``.
        nats.errors.Error, TimeoutError: JetStream did not answer.
    """
    held = cache.get(seq)
    if held is not None:
        return held
    copied = None if copy is None else copy.get(seq)
    if copied is not None:
        subject, data = copied
    else:
        raw = await bus.js.get_msg(MARKET_DATA_STREAM.name, seq=seq)
        subject, data = raw.subject or "", raw.data or b""
    return subject, decoded(seq, subject, data, shards, cache)


# Requests for market-data messages in flight at once: their replies (up to a full batch each) share the
# service's connection with its commands and acknowledgements, and a backlog of orders names many messages.
_READS_IN_FLIGHT = 32


async def _read_all(
    bus: Bus, seqs: Sequence[int], shards: int, cache: Cache, copy: MarketCopy | None
) -> list[tuple[str, MarketData | str] | BaseException]:
    """``_read`` of each of ``seqs``, in order, at most ``_READS_IN_FLIGHT`` requests at a time."""
    out: list[tuple[str, MarketData | str] | BaseException] = []
    for first in range(0, len(seqs), _READS_IN_FLIGHT):
        chunk = seqs[first : first + _READS_IN_FLIGHT]
        out.extend(
            await asyncio.gather(*(_read(bus, seq, shards, cache, copy) for seq in chunk), return_exceptions=True)
        )
    return out


# An order without ``quote_seq`` looks this far back among the newest quote batches for its symbol.
_LATEST_SCAN = 256


def _newest_batched(copy: MarketCopy, symbol: str, shards: int, cache: Cache) -> Quote | None:
    """The newest quote of ``symbol`` among the newest quote batches execution holds, or None."""
    prefix = f"{subjects.QUOTE_BATCH}.{subjects.shard_of(symbol, shards)}."
    for seq, subject, data in copy.newest(_LATEST_SCAN):
        if not subject.startswith(prefix):
            continue
        batch = decoded(seq, subject, data, shards, cache)
        if isinstance(batch, QuoteBatch):
            for index in range(len(batch.quotes) - 1, -1, -1):
                if batch.quotes[index].symbol == symbol:
                    return batch.quote(index)
    return None


async def price(
    bus: Bus, order: SubmitOrder, shards: int, cache: Cache | None = None, copy: MarketCopy | None = None
) -> Price:
    """The quote ``order`` fills at, read from ``RRR_MD``, or why there is none.

    Raises:
        TransientError: JetStream did not answer (a broker restart): nothing was decided, ask again later.
    """
    subject = subjects.quote(order.symbol, shards)
    shard = subjects.shard_of(order.symbol, shards)
    try:
        if order.quote_seq:
            stored_subject, message = await _read(
                bus, order.quote_seq, shards, new_cache(1) if cache is None else cache
            )
            seq = order.quote_seq
        else:
            raw = await bus.js.get_msg(MARKET_DATA_STREAM.name, subject=subject)
            stored_subject, seq = raw.subject or "", raw.seq or 0
            try:
                message = market_data_decoder.decode(raw.data or b"")
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                message = f"{MARKET_DATA_STREAM.name} sequence {raw.seq} is not a valid quote: {exc}"
    except nats.js.errors.NotFoundError:
        if not order.quote_seq and copy is not None:
            batched = _newest_batched(copy, order.symbol, shards, new_cache(1) if cache is None else cache)
            if batched is not None:
                return batched
        where = f"at sequence {order.quote_seq}" if order.quote_seq else f"on {subject}"
        return NoPrice(f"no quote {where} in {MARKET_DATA_STREAM.name} (expired, or never published)")
    except (nats.errors.Error, TimeoutError) as exc:
        raise TransientError(f"could not read the quote of order {order.id}: {exc}") from exc
    batch_prefix = f"{subjects.QUOTE_BATCH}.{shard}."
    if stored_subject != subject and not (order.quote_seq and stored_subject.startswith(batch_prefix)):
        return NoPrice(f"{MARKET_DATA_STREAM.name} sequence {order.quote_seq} is on {stored_subject}, not {subject}")
    if isinstance(message, str):
        return NoPrice(message)
    quote: object = message
    if not order.quote_seq and copy is not None and isinstance(message, Quote):
        # The latest quote may travel in a batch: the newer of the two.
        batched = _newest_batched(copy, order.symbol, shards, new_cache(1) if cache is None else cache)
        if batched is not None and batched.ts_event > message.ts_event:
            return batched
    if isinstance(message, QuoteBatch):
        if order.quote_index >= len(message.quotes):
            return NoPrice(
                f"{MARKET_DATA_STREAM.name} sequence {seq} holds {len(message.quotes)} quotes, "
                f"not one at index {order.quote_index}"
            )
        quote = message.quote(order.quote_index)
    if not isinstance(quote, Quote) or quote.symbol != order.symbol:
        return NoPrice(f"{MARKET_DATA_STREAM.name} sequence {seq} is not a quote of {order.symbol}")
    if order.quote_seq and quote.ts_event != order.quote_ts:
        return NoPrice(
            f"the order's quote is at {order.quote_ts}, but {MARKET_DATA_STREAM.name} sequence {seq} "
            f"is a quote at {quote.ts_event}"
        )
    return quote


async def prices(
    bus: Bus, orders: Sequence[SubmitOrder], shards: int, cache: Cache | None = None, copy: MarketCopy | None = None
) -> dict[str, Price]:
    """The price of each order by its id: one request per message of the stream the orders name not held in
    ``copy`` (at most ``_READS_IN_FLIGHT`` at a time), each message decoded once.

    Raises:
        TransientError: JetStream did not answer for one of them.
    """
    cache = new_cache() if cache is None else cache
    # Read each message once, then price the orders from what was read. Held here, not only in ``cache``: a
    # backlog's batch names more quotes than the cache keeps, and an entry evicted before its orders were
    # priced would be asked for again, once per order.
    named = {order.quote_seq for order in orders if order.quote_seq}
    held: dict[int, tuple[str, MarketData | str]] = {seq: entry for seq in named if (entry := cache.get(seq))}
    seqs = sorted(named - held.keys())
    missing: set[int] = set()
    for seq, result in zip(seqs, await _read_all(bus, seqs, shards, cache, copy), strict=True):
        if isinstance(result, nats.js.errors.NotFoundError):
            missing.add(seq)
        elif isinstance(result, nats.errors.Error | TimeoutError):
            raise TransientError(f"could not read quotes from {MARKET_DATA_STREAM.name}: {result}") from result
        elif isinstance(result, BaseException):
            raise result
        else:
            held[seq] = result
    out: dict[str, Price] = {}
    for first in range(0, len(orders), _READS_IN_FLIGHT):
        chunk = list(orders[first : first + _READS_IN_FLIGHT])
        priced = await asyncio.gather(
            *(_priced(bus, order, shards, held, copy, missing) for order in chunk), return_exceptions=True
        )
        for order, outcome in zip(chunk, priced, strict=True):
            if isinstance(outcome, BaseException):
                raise outcome
            out[order.id] = outcome
    return out


async def _priced(
    bus: Bus, order: SubmitOrder, shards: int, held: Cache, copy: MarketCopy | None, missing: set[int]
) -> Price:
    if order.quote_seq in missing:
        return NoPrice(
            f"no quote at sequence {order.quote_seq} in {MARKET_DATA_STREAM.name} (expired, or never published)"
        )
    return await price(bus, order, shards, held, copy)


def touches(
    seq: int, subject: str, data: bytes, shards: int, wanted: Callable[[str], bool], cache: Cache
) -> list[tuple[str, Touch]]:
    """The quotes of a market-data message whose symbol is ``wanted``, as touches at their place in the stream,
    in order; none when the message is not a valid quote or quote batch (trades carry no touch)."""
    if subject.startswith(f"{subjects.QUOTE}.") and not wanted(subject.rsplit(".", 1)[-1]):
        return []  # a single quote's symbol is its subject's last token: no decoding for others' quotes
    message_ = decoded(seq, subject, data, shards, cache)
    if isinstance(message_, Quote):
        return [(message_.symbol, touch_of(message_, (seq, 0)))] if wanted(message_.symbol) else []
    if isinstance(message_, QuoteBatch):
        return [
            (row.symbol, touch_of(message_.quote(index), (seq, index)))
            for index, row in enumerate(message_.quotes)
            if wanted(row.symbol)
        ]
    return []


def touch_of(quote: Quote, at: At) -> Touch:
    """``quote`` as the venue matches it, at ``at`` in the market-data stream."""
    return Touch(quote.ts_event, quote.bid, quote.ask, quote.bid_size, quote.ask_size, at)


async def between(bus: Bus, shard: int, copy: MarketCopy, first: int, last: int) -> AsyncGenerator[Raw, None]:
    """This shard's market-data messages from sequence ``first`` to ``last``, in stream order: from ``copy``
    when it holds them all, else read from the stream.

    Raises:
        TransientError: JetStream did not answer.
    """
    oldest = copy.oldest()
    if oldest is not None and oldest <= first:
        for raw in copy.between(first, last):
            yield raw
        return
    try:
        async with contextlib.aclosing(
            bus.iter_stream(
                MARKET_DATA_STREAM.name, subjects.plane_shard_filter(subjects.MARKET_DATA_ALL, shard), start_seq=first
            )
        ) as msgs:
            async for msg in msgs:
                seq = stream_seq(msg)
                if seq > last:
                    return
                yield seq, msg.subject, msg.data
    except (nats.errors.Error, TimeoutError) as exc:
        raise TransientError(f"could not read {MARKET_DATA_STREAM.name} from sequence {first}: {exc}") from exc


def decoded(seq: int, subject: str, data: bytes, shards: int, cache: Cache) -> MarketData | str:
    """The market-data message ``data`` at ``seq``, decoded and held to its subject (kept in ``cache``, or taken
    from it), or why it is not a valid one: every reading of a market-data message goes through here."""
    held = cache.get(seq)
    if held is None:
        message: MarketData | str
        try:
            message = market_data_decoder.decode(data)
            check_subject(subject, message, shards)
        except (msgspec.DecodeError, msgspec.ValidationError, MisroutedMessageError) as exc:
            message = f"{MARKET_DATA_STREAM.name} sequence {seq} is not a valid quote: {exc}"
        held = cache[seq] = (subject, message)
    return held[1]


async def messages_at(
    bus: Bus, seqs: Sequence[int], shards: int, cache: Cache, copy: MarketCopy
) -> dict[int, tuple[str, MarketData | str]]:
    """The subject and decoded message (or why it is not a valid one) at each of ``seqs`` in RRR_MD, read all at
    once; a sequence that holds no message is left out.

    Raises:
        TransientError: JetStream did not answer.
    """
    wanted = sorted(set(seqs))
    found = await _read_all(bus, wanted, shards, cache, copy)
    out: dict[int, tuple[str, MarketData | str]] = {}
    for seq, result in zip(wanted, found, strict=True):
        if isinstance(result, nats.js.errors.NotFoundError):
            continue
        if isinstance(result, nats.errors.Error | TimeoutError):
            raise TransientError(f"could not read {MARKET_DATA_STREAM.name} sequence {seq}: {result}") from result
        if isinstance(result, BaseException):
            raise result
        out[seq] = result
    return out


async def quote_at(bus: Bus, at: At, symbol: str, shards: int, cache: Cache, copy: MarketCopy) -> Touch | None:
    """The quote of ``symbol`` at ``at`` in the market-data stream as a touch, None when it is not there.

    Raises:
        TransientError: JetStream did not answer.
    """
    seq, index = at
    try:
        subject, _ = await _read(bus, seq, shards, cache, copy)
    except nats.js.errors.NotFoundError:
        return None
    except (nats.errors.Error, TimeoutError) as exc:
        raise TransientError(f"could not read {MARKET_DATA_STREAM.name} sequence {seq}: {exc}") from exc
    raw = copy.get(seq)
    found = touches(seq, subject, raw[1] if raw else b"", shards, lambda s: s == symbol, cache)
    return next((touch for _, touch in found if touch.at == (seq, index)), None)


async def drain(
    queue: asyncio.Queue[Raw],
    stop: asyncio.Event,
    handle: Callable[[Sequence[Raw]], Awaitable[None]],
    max_batch: int = 256,
) -> None:
    """Hand what arrives on ``queue`` to ``handle`` in order, whatever is queued at once (up to ``max_batch``)
    as one batch, until ``stop`` is set."""
    stopping = asyncio.ensure_future(stop.wait())
    try:
        while not stop.is_set():
            getting = asyncio.ensure_future(queue.get())
            await asyncio.wait((getting, stopping), return_when=asyncio.FIRST_COMPLETED)
            if not getting.done():
                getting.cancel()
                return
            batch = [getting.result()]
            while len(batch) < max_batch and not queue.empty():
                batch.append(queue.get_nowait())
            await handle(batch)
    finally:
        stopping.cancel()
