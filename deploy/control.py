"""``rrr-control``: halt and resume trading, on every execution shard at once, and show where the account stands.

    rrr-control halt [--strategy S] [--symbol X] [--reduce] [--reason TEXT]   (just halt)
    rrr-control resume [--strategy S] [--symbol X]                           (just resume)
    rrr-control status [--json]

A halt puts the scope's trading state (the account, a strategy, a symbol, or a strategy on a symbol) into the
trading-state bucket that every execution shard watches (``rrr.execution.trading``): from then on each shard
refuses new orders in that scope (``--reduce``: all but those that reduce exposure) and cancels its open ones.
Each shard confirms once it obeys; the tool waits for every shard the system runs and prints how long the
slowest took: the time from the halt to the whole system refusing. A shard that is down obeys when it starts
(the state is kept), and the tool says which did not confirm.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import msgspec
import nats.errors
import nats.js.errors
from nats.aio.msg import Msg

from rrr.deploy.terminal import printable
from rrr.execution import trading
from rrr.shared import subjects
from rrr.shared.bus import Bus
from rrr.shared.config import with_local_system
from rrr.shared.errors import RRRError
from rrr.shared.messages import (
    TradingScope,
    TradingState,
    TradingStateApplied,
    TradingStateName,
    encode,
    shard_risk_decoder,
    trading_applied_decoder,
    trading_state_decoder,
)

_URL_ENV = ("RRR_CONTROL_NATS_URL", "RRR_NATS_URL")


@dataclass(slots=True)
class Applied:
    """What setting a trading state came to: its key and revision, and each shard's confirmation."""

    key: str
    state: TradingStateName
    revision: int
    shards: int
    # Per shard: nanoseconds from the put to its confirmation, and the open orders it canceled.
    confirmed: dict[int, tuple[int, int]] = field(default_factory=dict)

    @property
    def missing(self) -> list[int]:
        """The shards that did not confirm."""
        return [shard for shard in range(self.shards) if shard not in self.confirmed]

    def describe(self) -> str:
        """One line for the operator."""
        done = len(self.confirmed)
        canceled = sum(n for _, n in self.confirmed.values())
        done_as = {"halted": "halted", "reducing": "reducing", "active": "resumed"}[self.state]
        line = f"{done_as} {self.key} (revision {self.revision}): {done}/{self.shards} shards confirmed"
        if self.confirmed:
            slowest = max(self.confirmed, key=lambda shard: self.confirmed[shard][0])
            line += f" in {self.confirmed[slowest][0] / 1e6:.1f} ms (slowest: shard {slowest})"
        if canceled:
            line += f", {canceled} open orders canceled"
        if self.missing:
            line += f"; not confirmed by shard {', '.join(map(str, self.missing))} (down? it obeys when it starts)"
        return line


def _scope(strategy: str, symbol: str) -> TradingScope:
    return "pair" if strategy and symbol else "strategy" if strategy else "symbol" if symbol else "account"


async def set_state(
    bus: Bus,
    state: TradingStateName,
    *,
    strategy: str = "",
    symbol: str = "",
    reason: str = "",
    timeout_s: float = 5.0,
) -> Applied:
    """Put a scope's trading state and wait (up to ``timeout_s``) until every shard confirms it obeys.

    Raises:
        InvalidSubjectError, InvalidSymbolError: ``strategy`` or ``symbol`` is not a valid name.
    """
    key = subjects.trading_key(strategy, symbol)
    kv = await trading.trading_bucket(bus.js)
    shards = await bus.recorded_shards() or 1
    now = time.time_ns()
    message = TradingState(
        id=f"operator:{key}:{now}", ts_event=now, ts_init=now, scope=_scope(strategy, symbol), strategy=strategy,
        symbol=symbol, state=state, reason=reason or f"{state} by the operator", source="operator",
    )  # fmt: skip
    applied = Applied(key, state, 0, shards)
    everyone = asyncio.Event()
    seen: list[TradingStateApplied] = []
    started = 0

    async def _on_applied(msg: Msg) -> None:
        try:
            confirmation = trading_applied_decoder.decode(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return
        seen.append(confirmation)
        _take(confirmation, time.perf_counter_ns())

    def _take(confirmation: TradingStateApplied, at: int) -> None:
        if applied.revision and confirmation.key == key and confirmation.revision >= applied.revision:
            applied.confirmed.setdefault(confirmation.shard, (at - started, confirmation.canceled))
            if not applied.missing:
                everyone.set()

    # Listening before the put: a shard may confirm before the put's own acknowledgement comes back.
    sub = await bus.nc.subscribe(subjects.TRADING_APPLIED_ALL, cb=_on_applied)
    try:
        await bus.nc.flush()
        started = time.perf_counter_ns()
        applied.revision = await kv.put(key, encode(message))
        for early in seen:
            _take(early, time.perf_counter_ns())
        # A shard that does not confirm in time is reported as missing.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(everyone.wait(), timeout=timeout_s)
    finally:
        await sub.unsubscribe()
    return applied


async def status(bus: Bus) -> dict[str, dict[str, object]]:
    """The trading states that are not active, and each shard's holdings as the account view has them."""
    states: dict[str, object] = {}
    shards: dict[str, object] = {}
    for name in (subjects.TRADING_BUCKET, subjects.RISK_BUCKET):
        try:
            kv = await bus.js.key_value(name)
            keys = await kv.keys()
        except (nats.js.errors.BucketNotFoundError, nats.js.errors.NoKeysError):
            continue
        for key in keys:
            value = (await kv.get(key)).value or b""
            if name == subjects.TRADING_BUCKET:
                state = trading_state_decoder.decode(value)
                if state.state != "active":
                    states[key] = {"state": state.state, "reason": state.reason, "source": state.source}
            else:
                held = shard_risk_decoder.decode(value)
                rows = {c.currency or "quote": [str(c.gross), str(c.net), str(c.pnl_today)] for c in held.currencies}
                shards[str(held.shard)] = {
                    "day": held.day,
                    "age_ms": (time.time_ns() - held.ts_init) // 1_000_000,
                    "gross_net_pnl_today": rows,
                }
    return {"trading": states, "shards": shards}


async def _main(args: argparse.Namespace) -> int:
    bus = await Bus.connect(args.nats_url, service="control", name="rrr-control", timeout_s=10)
    try:
        if args.command == "status":
            found = await status(bus)
            if args.json:
                print(json.dumps(found, ensure_ascii=True))
            else:
                states = found["trading"]
                print("trading: " + (", ".join(f"{k} {printable(v)}" for k, v in states.items()) or "active"))
                for shard, held in sorted(found["shards"].items()):
                    print(f"shard {shard}: {printable(held)}")
            return 0
        state: TradingStateName = "active"
        if args.command == "halt":
            state = "reducing" if args.reduce else "halted"
        applied = await set_state(
            bus, state, strategy=args.strategy, symbol=args.symbol, reason=args.reason, timeout_s=args.timeout_s
        )
        print(applied.describe())
        return 1 if applied.missing else 0
    finally:
        await bus.close()


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Entry point of ``rrr-control``."""
    parser = argparse.ArgumentParser(
        prog="rrr-control", description="Halt and resume trading on every execution shard; show the account."
    )
    parser.add_argument("--nats-url", default=None, help="NATS URL [env RRR_CONTROL_NATS_URL or RRR_NATS_URL]")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, what in (("halt", "refuse new orders and cancel the open ones"), ("resume", "trade again")):
        command = commands.add_parser(name, help=f"{what}: the whole account, or --strategy and/or --symbol")
        command.add_argument("--strategy", default="", help="only this strategy's orders")
        command.add_argument("--symbol", default="", help="only this symbol's orders")
        command.add_argument("--reason", default="", help="why, as the refusals and cancels will say")
        command.add_argument("--timeout-s", type=float, default=5.0, help="how long to wait for every shard")
        if name == "halt":
            command.add_argument(
                "--reduce", action="store_true", help="let orders through that reduce exposure (state reducing)"
            )
    p_status = commands.add_parser("status", help="trading states that are not active, and each shard's holdings")
    p_status.add_argument("--json", action="store_true", help="one JSON object")
    args = parser.parse_args(argv)
    env = dict(os.environ if environ is None else environ) if args.nats_url else with_local_system("rrr-control")
    args.nats_url = args.nats_url or next((env[k] for k in _URL_ENV if env.get(k)), "nats://127.0.0.1:4222")
    try:
        return asyncio.run(_main(args))
    except RRRError as exc:
        print(f"rrr-control: error: {exc}", file=sys.stderr)
        return 2
    except (nats.errors.Error, TimeoutError) as exc:
        print(f"rrr-control: error: NATS: {exc or type(exc).__name__}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
