"""``rrr-market-data``: run the market-data service, or replay a quote file into a running system."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from rrr.market_data import live
from rrr.market_data.app import SERVICE, service
from rrr.market_data.checked import check_file
from rrr.market_data.config import MarketDataConfig
from rrr.market_data.feeds import ReplayReport, replay_file
from rrr.market_data.replay import ReadLimits
from rrr.market_data.venues.connection import VenueFeed
from rrr.market_data.venues.recorder import Recorder, ReplayCounts
from rrr.shared import runner
from rrr.shared.bus import Bus
from rrr.shared.config import parse_config, with_local_system
from rrr.shared.errors import RRRError

_DESCRIPTION = """\
Market data: bring quotes in, normalise them, publish them per symbol shard on md.quote.<shard>.<symbol>.

  rrr-market-data [flags]              run the service (feed: --feed sim|none|live)
  rrr-market-data live --venue binance --symbols BTCUSDT,ETHUSDT [flags]
                                       run the service on live venues (binance, coinbase, kraken)
  rrr-market-data record --out FILE --venue binance --symbols BTCUSDT [flags]
                                       write the venues' raw frames to FILE (JSON lines), no NATS needed
  rrr-market-data replay FILE [flags]  publish a CSV or Parquet quote file, or a recording (.jsonl), then exit
"""


class NoConsumerError(RRRError):
    """Nothing in the running system would consume what a replay publishes."""

    def __init__(self, why: str) -> None:
        super().__init__(f"nothing was published: {why}")


INTERRUPTED = 128 + signal.SIGINT  # the exit status of a command a Ctrl-C ended, by shell convention


def _replay(config: MarketDataConfig, path: Path, skip_bad_rows: bool, progress: bool) -> int:
    runner.tune_gc()
    if path.suffix == ".jsonl":
        return _replay_recording(config, path)
    limits = ReadLimits(
        max_file_mb=config.replay_max_file_mb, max_rows=config.replay_max_rows, max_symbols=config.replay_max_symbols
    )
    # Read the whole file before publishing anything: a bad row (without --skip-bad-rows) or a file beyond the
    # limits stops the replay with nothing sent, so fixing the file and replaying it again cannot leave half of
    # an old version behind. What is published is what this read checked (rrr.market_data.checked.CheckedFile).
    # Drawn on a terminal only (tqdm's disable=None): a pipe or a log gets the outcome, not a bar's redraws.
    with tqdm(unit=" rows", desc=f"checking {path.name}", disable=None if progress else True, file=sys.stderr) as bar:
        checked = check_file(path, skip_bad_rows=skip_bad_rows, limits=limits, on_progress=bar.update)
    total = checked.quotes

    async def _main() -> ReplayReport:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def _on_interrupt() -> None:
            if stop.is_set():
                print("\ninterrupted again: exiting without waiting", file=sys.stderr, flush=True)
                os._exit(INTERRUPTED)
            stop.set()

        # The first Ctrl-C stops the replay after the window in flight, with a summary; a second one exits.
        loop.add_signal_handler(signal.SIGINT, _on_interrupt)
        loop.add_signal_handler(signal.SIGTERM, _on_interrupt)
        bus = await Bus.connect(
            config.nats_url, service=SERVICE, name=f"replay:{path.name}", timeout_s=10, tls=config.nats_tls()
        )
        try:
            await bus.ensure_streams(
                max_age_s=config.stream_max_age_s,
                duplicate_window_s=config.duplicate_window_s,
                limits=config.store_limits(),
                update=False,
                replicas=config.stream_replicas,
            )
            # Published to shards nobody consumes, quotes would be stored nowhere: refuse instead.
            recorded = await bus.recorded_shards()
            if recorded is None:
                raise NoConsumerError("no service of this system has started yet, so nothing would consume them")
            if recorded != config.shards:
                raise NoConsumerError(
                    f"this system runs with --shards {recorded}, not {config.shards}: the quotes would go to shards "
                    f"nobody consumes. Replay with --shards {recorded}"
                )
            with tqdm(
                total=total, unit="quote", desc=path.name, disable=None if progress else True, file=sys.stderr
            ) as bar:
                return await replay_file(
                    bus,
                    path,
                    checked=checked,
                    shards=config.shards,
                    window=config.replay_window,
                    skip_bad_rows=skip_bad_rows,
                    limits=limits,
                    on_progress=bar.update,
                    stop=stop,
                    max_msg_bytes=config.max_msg_bytes,
                )
        finally:
            await bus.close()

    try:
        report = asyncio.run(_main())
    finally:
        checked.close()
    for line in report.bad_rows:
        print(f"skipped bad row: {line}", file=sys.stderr)
    if report.counts.bad_rows > len(report.bad_rows):
        print(f"skipped {report.counts.bad_rows - len(report.bad_rows):,} more bad rows", file=sys.stderr)
    sent = report.published + report.duplicates
    rate = sent / report.seconds if report.seconds else 0.0
    if report.interrupted:
        print(
            f"interrupted {report.path}: {sent} of {total} rows stored (published={report.published} "
            f"duplicates={report.duplicates}); run the same command again to resume: rows already stored "
            "are skipped"
        )
        return INTERRUPTED
    counts = report.counts
    first_duplicate = f" first_duplicate_line={counts.first_duplicate_line}" if counts.duplicate_rows else ""
    print(
        f"replayed {report.path}: rows={report.rows} published={report.published} "
        f"duplicates={report.duplicates} duplicate_rows={counts.duplicate_rows}{first_duplicate} "
        f"out_of_order={counts.out_of_order} bad_rows={counts.bad_rows} "
        f"seconds={report.seconds:.2f} rate={rate:,.0f}/s source={report.source}"
    )
    if counts.out_of_order:
        print(
            f"rrr-market-data replay: warning: {report.path}: {counts.out_of_order:,} rows out of order (first at "
            f"line {counts.first_out_of_order_line}), earlier than a row before them of the same symbol; they were "
            "published in file order, and the strategy skips them: it applies a symbol's quotes only in "
            "event-time order",
            file=sys.stderr,
        )
    return 0


# -- live venues: recording their frames, and replaying a recording ---------------------------------------


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


def _record(config: MarketDataConfig, out: Path, duration_s: float) -> int:
    async def _main() -> tuple[Recorder, live.CountingSink, list[VenueFeed]]:
        stop = asyncio.Event()
        _stop_on_signals(stop)
        recorder = Recorder(out, max_bytes=config.record_max_mb << 20)
        sink = live.CountingSink()
        feeds = live.feeds(config, sink, stop, recorder=recorder)
        try:
            await live.probe(feeds, config.live_connect_timeout_s)
            if duration_s:
                asyncio.get_running_loop().call_later(duration_s, stop.set)
            async with asyncio.TaskGroup() as tasks:
                for feed in feeds:
                    tasks.create_task(feed.run())
        finally:
            await recorder.close()
        return recorder, sink, feeds

    try:
        recorder, sink, feeds = asyncio.run(_main())
    except (RRRError, BaseExceptionGroup) as exc:
        errors = exc.exceptions if isinstance(exc, BaseExceptionGroup) else (exc,)
        if not all(isinstance(e, RRRError) for e in errors):
            raise
        for error in errors:
            print(f"rrr-market-data record: error: {error}", file=sys.stderr)
        return 1
    health = " ".join(f"{k}={v}" for feed in feeds for k, v in feed.health.values(0).items() if v)
    print(
        f"recorded {out}: frames={recorder.frames} left_out={recorder.left_out} bytes={recorder.written} "
        f"ticks={sink.ticks} {health}".rstrip()
    )
    return 0


def _replay_recording(config: MarketDataConfig, path: Path) -> int:
    async def _main() -> live.RecordingReplay:
        stop = asyncio.Event()
        _stop_on_signals(stop)
        bus = await Bus.connect(
            config.nats_url, service=SERVICE, name=f"replay:{path.name}", timeout_s=10, tls=config.nats_tls()
        )
        try:
            # As for a quote file: never publish to shards nobody consumes.
            recorded = await bus.recorded_shards()
            if recorded is None:
                raise NoConsumerError("no service of this system has started yet, so nothing would consume them")
            if recorded != config.shards:
                raise NoConsumerError(f"this system runs with --shards {recorded}; replay with --shards {recorded}")
            return await live.replay_recording(
                bus, path, shards=config.shards, window=config.replay_window, stop=stop, counts=counts
            )
        finally:
            await bus.close()

    counts = ReplayCounts()
    report = asyncio.run(_main())
    for reason in counts.reasons:
        print(f"refused frame: {reason}", file=sys.stderr)
    state = "interrupted" if report.interrupted else "replayed"
    print(
        f"{state} {path}: frames={counts.frames} ticks={counts.ticks} published={report.published} "
        f"duplicates={report.duplicates} repeated_frames={counts.duplicates} malformed={counts.malformed} "
        f"gaps={counts.gaps}"
    )
    return INTERRUPTED if report.interrupted else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``rrr-market-data``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="rrr-market-data", description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    replaying = bool(argv) and argv[0] == "replay"
    command = argv[0] if argv and argv[0] in ("live", "record") else None
    if command is not None:
        # ``live`` and ``record`` are the service's flags with the live feed chosen; --venue is --venues.
        argv = ["--feed", "live", *argv[1:]]
        parser.prog = f"rrr-market-data {command}"
        parser.add_argument("--venue", dest="cfg_venues", default=None, metavar="VENUES", help="the same as --venues")
        if command == "record":
            parser.add_argument("--out", type=Path, required=True, help="the recording to write (JSON lines)")
            parser.add_argument("--duration-s", type=float, default=0.0, help="stop after this long (0: at Ctrl-C)")
    if replaying:
        argv = argv[1:]
        parser.prog = "rrr-market-data replay"
        parser.add_argument(
            "file",
            type=Path,
            help="quote file: .csv or .parquet, layout ts,symbol,bid,ask[,bid_size,ask_size]",
        )
        parser.add_argument(
            "--skip-bad-rows", action="store_true", help="skip and count unreadable rows instead of stopping"
        )
        parser.add_argument(
            "--no-progress", action="store_true", help="no progress bar (it is drawn only on a terminal anyway)"
        )
    # A replay run by hand talks to the system `just up` runs here; the service itself is given its settings.
    named = any(arg == "--nats-url" or arg.startswith("--nats-url=") for arg in argv)
    environ = with_local_system("rrr-market-data replay") if replaying and not named else None
    config, args = parse_config(MarketDataConfig, SERVICE, argv, parser=parser, environ=environ)
    if command == "record":
        runner.setup_logging(config.log_level)
        return _record(config, args.out, args.duration_s)
    if not replaying:
        return runner.run(lambda stop: service.run(config, stop), config)
    runner.setup_logging(config.log_level)
    try:
        return _replay(config, args.file, args.skip_bad_rows, not args.no_progress)
    except RRRError as exc:
        print(f"rrr-market-data replay: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        # Still reading the file, before anything was published.
        print(f"\ninterrupted {args.file}: nothing was published", file=sys.stderr)
        return INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
