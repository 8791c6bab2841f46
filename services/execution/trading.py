"""The control plane every execution shard obeys: trading states and the account-wide risk view.

Both are JetStream key-value buckets, so a state outlives the process that set it and a shard started later
reads it before it trades:

- ``RRR_TRADING`` holds one key per scope (``account``, ``strategy.<S>``, ``symbol.<X>``, ``pair.<S>.<X>``;
  ``rrr.shared.subjects.trading_key``), each a ``TradingState``. ``rrr-control halt`` and ``resume`` put them;
  execution puts ``account`` itself when the day's loss breaks its limit. Every shard watches the bucket
  (its subjects ``$KV.RRR_TRADING.>`` are the control subject), applies each state under the same lock as
  its orders, cancels the open orders the state no longer allows, and confirms on ``ctl.trading.<shard>``.
- ``RRR_RISK`` holds one key per shard (``shard.<k>``), a ``ShardRisk``: the shard's gross and net exposure
  and the day's PnL per quote currency. Every shard puts its own when it changes (at most every
  ``--risk-publish-ms``) and watches the others', so the account-wide checks see the whole account as of
  the last update of each shard (their age is reported: ``risk_view_lag_max_us``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.kv import KeyValue

from rrr.execution.positions import to_decimal
from rrr.shared import subjects
from rrr.shared.messages import CurrencyRisk, ShardRisk, TradingState, encode

if TYPE_CHECKING:
    from rrr.execution.handlers import Book

_log = logging.getLogger(__name__)
# Each bucket holds a few small values per scope or shard: far below this.
BUCKET_MAX_BYTES = 4 * 1024 * 1024
VALUE_MAX_BYTES = 64 * 1024
# Earlier values of each key kept, for the record (`nats kv history`).
HISTORY = 16


async def bucket(js: JetStreamContext, name: str) -> KeyValue:
    """The key-value bucket ``name``, created when missing."""
    try:
        return await js.key_value(name)
    except nats.js.errors.BucketNotFoundError:
        pass
    config = KeyValueConfig(
        bucket=name, history=HISTORY, storage=StorageType.FILE, max_bytes=BUCKET_MAX_BYTES,
        max_value_size=VALUE_MAX_BYTES,
    )  # fmt: skip
    try:
        return await js.create_key_value(config)
    except nats.js.errors.BadRequestError:
        return await js.key_value(name)  # another process created it meanwhile


async def trading_bucket(js: JetStreamContext) -> KeyValue:
    """The trading states' bucket."""
    return await bucket(js, subjects.TRADING_BUCKET)


async def risk_bucket(js: JetStreamContext) -> KeyValue:
    """The account-wide risk view's bucket."""
    return await bucket(js, subjects.RISK_BUCKET)


Handle = Callable[[KeyValue.Entry], Awaitable[None]]


async def current(kv: KeyValue, handle: Handle) -> KeyValue.KeyWatcher:
    """Hand every key's current value to ``handle``, then return the watcher that goes on with what changes
    (``follow``): nothing put in between is missed."""
    watcher = await kv.watchall()
    while True:
        entry = await watcher.updates(timeout=30.0)  # type: ignore[no-untyped-call]
        if entry is None:  # the end of the current values
            return watcher
        await handle(entry)


async def follow(watcher: KeyValue.KeyWatcher, stop: asyncio.Event, handle: Handle) -> None:
    """Hand what changes in the bucket to ``handle``, in order, until ``stop`` is set."""
    stopping = asyncio.ensure_future(stop.wait())
    try:
        while True:
            getting = asyncio.ensure_future(watcher.updates(timeout=None))  # type: ignore[no-untyped-call]
            await asyncio.wait((getting, stopping), return_when=asyncio.FIRST_COMPLETED)
            if not getting.done():
                getting.cancel()
                return
            entry = getting.result()
            if isinstance(entry, KeyValue.Entry):
                await handle(entry)
            elif entry is not None:  # the watcher was stopped
                return
    finally:
        stopping.cancel()
        with contextlib.suppress(nats.errors.Error):
            await watcher.stop()  # type: ignore[no-untyped-call]


def holdings(book: Book) -> ShardRisk:
    """This shard's holdings as the account view shows them: per quote currency, at 12 decimal places."""
    risk = book.risk
    now = book.clock()
    return ShardRisk(
        id=f"{subjects.risk_key(book.shard)}:{now}",
        ts_event=now,
        ts_init=now,
        shard=book.shard,
        shards=book.shards,
        day=risk.day,
        currencies=[
            CurrencyRisk(currency, to_decimal(total.gross), to_decimal(total.net), to_decimal(risk.pnl_today(currency)))
            for currency, total in sorted(risk.totals.items())
        ],
    )


async def keep_account(
    book: Book, risk_kv: KeyValue, trading_kv: KeyValue, stop: asyncio.Event, every_s: float
) -> None:
    """Tell the account view this shard's holdings whenever they change (at most every ``every_s``), and halt
    the account when the day's loss across every shard breaks its limit: once a day, so that an operator
    who resumes trading is not overruled at once."""
    stopping = asyncio.ensure_future(stop.wait())
    try:
        while not stop.is_set():
            changed = asyncio.ensure_future(book.risk_changed.wait())
            await asyncio.wait((changed, stopping), return_when=asyncio.FIRST_COMPLETED)
            changed.cancel()
            if stop.is_set():
                return
            book.risk_changed.clear()
            async with book.lock:
                risk = book.risk
                held = holdings(book) if risk.dirty else None
                risk.dirty = False
                breach = risk.daily_loss_breach() if risk.halted_day != risk.day else None
                if breach is not None:
                    risk.halted_day = risk.day
            try:
                if held is not None:
                    await risk_kv.put(subjects.risk_key(book.shard), encode(held))
                if breach is not None:
                    book.counters.daily_loss_halts += 1
                    _log.error("halting the account: %s", breach)
                    now = book.clock()
                    halt = TradingState(
                        id=f"daily-loss:{book.shard}:{now}", ts_event=now, ts_init=now, scope="account",
                        state="halted", reason=breach, source="daily_loss",
                    )  # fmt: skip
                    await trading_kv.put(subjects.trading_key(), encode(halt))
            except (nats.errors.Error, TimeoutError) as exc:
                # The next change tries again; a halt not put is tried again at the next change as well.
                _log.warning("could not update the account view: %s", exc)
                book.risk.dirty = True
                if breach is not None:
                    book.risk.halted_day = -1
            # At most one update per period: a busy market would otherwise put one per batch.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(stopping), timeout=every_s)
    finally:
        stopping.cancel()
