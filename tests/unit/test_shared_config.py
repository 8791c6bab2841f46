"""Service configuration: precedence, validation and error messages; environments are plain dicts."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import TypeVar

import pytest

from rrr.execution.config import ExecutionConfig
from rrr.market_data.config import MarketDataConfig
from rrr.persistence.config import PersistenceConfig
from rrr.shared.config import (
    ServiceConfig,
    build_parser,
    env_name,
    env_names,
    load_config,
    parse_config,
    redact,
)
from rrr.shared.errors import ConfigError
from rrr.strategy.config import StrategyConfig

C = TypeVar("C", bound=ServiceConfig)

SERVICES: list[tuple[type[ServiceConfig], str]] = [
    (StrategyConfig, "strategy"),
    (ExecutionConfig, "execution"),
    (PersistenceConfig, "persistence"),
    (MarketDataConfig, "market_data"),
]


def _load(config_type: type[C], service: str, argv: Sequence[str] = (), environ: Mapping[str, str] | None = None) -> C:
    parser = argparse.ArgumentParser()
    build_parser(config_type, service, parser)
    return load_config(config_type, service, parser.parse_args(list(argv)), environ or {})


# -- defaults and precedence ---------------------------------------------------------------------------


@pytest.mark.parametrize(("config_type", "service"), SERVICES)
def test_service_config_with_no_env_and_no_flags_is_its_defaults(config_type, service):
    assert _load(config_type, service) == config_type()


def test_shared_env_var_overrides_the_default():
    config = _load(StrategyConfig, "strategy", environ={"RRR_SHARDS": "4", "RRR_NATS_URL": "nats://n1:4222"})
    assert config.shards == 4
    assert config.nats_url == "nats://n1:4222"


def test_service_env_var_overrides_the_shared_one():
    environ = {"RRR_SHARDS": "4", "RRR_STRATEGY_SHARDS": "8"}
    assert _load(StrategyConfig, "strategy", environ=environ).shards == 8


def test_flag_overrides_service_and_shared_env_vars():
    environ = {"RRR_SHARDS": "4", "RRR_STRATEGY_SHARDS": "8"}
    assert _load(StrategyConfig, "strategy", ["--shards", "16"], environ).shards == 16


def test_flag_overrides_the_service_env_var_of_a_service_only_field():
    config = _load(StrategyConfig, "strategy", ["--fast", "3"], {"RRR_STRATEGY_FAST": "7", "RRR_STRATEGY_SLOW": "9"})
    assert (config.fast, config.slow) == (3, 9)


def test_shared_name_of_a_service_only_field_is_ignored():
    # RRR_<FIELD> is read only for fields that describe the deployment, not for a strategy parameter.
    config = _load(StrategyConfig, "strategy", environ={"RRR_FAST": "3", "RRR_QTY": "5"})
    assert (config.fast, config.qty) == (5, Decimal(1))


def test_shared_database_url_reaches_persistence():
    url = "postgresql://rrr@db.example:5432/rrr"
    assert _load(PersistenceConfig, "persistence", environ={"RRR_DATABASE_URL": url}).database_url == url


def test_another_services_env_vars_are_neither_read_nor_rejected():
    config = _load(StrategyConfig, "strategy", environ={"RRR_EXECUTION_FEE_BPS": "5", "RRR_EXECUTION_X": "1"})
    assert config == StrategyConfig()


def test_values_are_converted_to_the_fields_types():
    config = _load(
        ExecutionConfig,
        "execution",
        ["--fee-bps", "2.5", "--drain-timeout-s", "1.5"],
        {"RRR_EXECUTION_MAX_NOTIONAL_QUOTE": "250000.10", "RRR_EXECUTION_BATCH_SIZE": "64"},
    )
    assert config.fee_bps == Decimal("2.5")
    assert config.max_notional_quote == Decimal("250000.10")
    assert config.batch_size == 64
    assert config.drain_timeout_s == 1.5


def test_env_names_list_the_shared_variable_before_the_service_one():
    assert env_names("persistence", "database_url") == ["RRR_DATABASE_URL", "RRR_PERSISTENCE_DATABASE_URL"]
    assert env_names("strategy", "fast") == ["RRR_STRATEGY_FAST"]


def test_env_name_of_a_dashed_service_uses_underscores():
    assert env_name("market-data", "rate_hz") == "RRR_MARKET_DATA_RATE_HZ"


def test_parser_has_one_flag_per_field_with_its_env_vars_in_the_help():
    parser = argparse.ArgumentParser()
    build_parser(ExecutionConfig, "execution", parser)
    helps = {opt: action.help for action in parser._actions for opt in action.option_strings}
    assert {f"--{name.replace('_', '-')}" for name in ExecutionConfig.__struct_fields__} <= helps.keys()
    assert "env RRR_EXECUTION_FEE_BPS;" in helps["--fee-bps"]
    assert "env RRR_NATS_URL or RRR_EXECUTION_NATS_URL;" in helps["--nats-url"]


def test_parser_help_hides_a_password_in_a_default():
    class _WithSecret(ServiceConfig, frozen=True, kw_only=True):
        database_url: str = "postgresql://rrr:s3cr3t@db/rrr"

    parser = argparse.ArgumentParser()
    build_parser(_WithSecret, "persistence", parser)
    assert "s3cr3t" not in parser.format_help()


# -- lists ---------------------------------------------------------------------------------------------


def test_list_field_from_env_splits_on_commas_and_strips_blanks():
    config = _load(MarketDataConfig, "market_data", environ={"RRR_MARKET_DATA_SYMBOLS": " BTCUSDT, EURUSD ,,USDJPY,"})
    assert config.symbols == ("BTCUSDT", "EURUSD", "USDJPY")


def test_list_field_from_flag_splits_on_commas():
    config = _load(MarketDataConfig, "market_data", ["--symbols", "SIMA,SIMB"])
    assert config.symbols == ("SIMA", "SIMB")


def test_list_field_with_only_commas_is_an_error_naming_its_source():
    with pytest.raises(ConfigError) as info:
        _load(MarketDataConfig, "market_data", environ={"RRR_MARKET_DATA_SYMBOLS": ", ,"})
    assert info.value.source == "RRR_MARKET_DATA_SYMBOLS"
    assert "length >= 1" in info.value.expected


def test_a_comma_in_a_scalar_field_is_kept():
    url = "nats://n1:4222,nats://n2:4222"
    assert _load(StrategyConfig, "strategy", environ={"RRR_NATS_URL": url}).nats_url == url


# -- unknown and bad values ----------------------------------------------------------------------------


def test_unknown_service_env_var_is_an_error_naming_it_and_the_known_ones():
    with pytest.raises(ConfigError) as info:
        _load(StrategyConfig, "strategy", environ={"RRR_STRATEGY_FASTT": "3"})
    assert info.value.source == "RRR_STRATEGY_FASTT"
    assert "RRR_STRATEGY_FAST," in str(info.value)
    assert str(info.value).startswith("RRR_STRATEGY_FASTT: expected one of ")


def test_unknown_service_env_var_of_a_dashed_service_is_an_error():
    with pytest.raises(ConfigError, match="RRR_MARKET_DATA_RATE"):
        _load(MarketDataConfig, "market_data", environ={"RRR_MARKET_DATA_RATE": "5"})


def test_service_env_var_with_a_lower_case_suffix_is_applied_or_rejected():
    try:
        config = _load(ExecutionConfig, "execution", environ={"RRR_EXECUTION_max_order_qty": "5"})
    except ConfigError:
        return
    assert config.max_order_qty == Decimal(5)


def test_unknown_service_env_var_holding_a_password_does_not_print_it():
    with pytest.raises(ConfigError) as info:
        _load(ExecutionConfig, "execution", environ={"RRR_EXECUTION_DATABASE_URL": "postgresql://u:hunter2@h/db"})
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize(
    ("config_type", "service", "argv", "environ", "source", "expected"),
    [
        *[
            (StrategyConfig, "strategy", *case)
            for case in [
                ((), {"RRR_STRATEGY_FAST": "x"}, "RRR_STRATEGY_FAST", "`int`"),
                (("--fast", "x"), {}, "--fast", "`int`"),
                ((), {"RRR_SHARDS": "many"}, "RRR_SHARDS", "`int`"),
                ((), {"RRR_SHARDS": "2", "RRR_STRATEGY_SHARDS": "0"}, "RRR_STRATEGY_SHARDS", "`int` >= 1"),
                (("--shards", "2000"), {}, "--shards", "`int` <= 1024"),
                (("--qty", "abc"), {}, "--qty", "a decimal number"),
                (("--heartbeat-ms", "10"), {}, "--heartbeat-ms", "`int` >= 50"),
                ((), {"RRR_LOG_LEVEL": "TRACE"}, "RRR_LOG_LEVEL", "one of 'DEBUG', 'INFO', 'WARNING', 'ERROR'"),
                (("--drain-timeout-s", "0"), {}, "--drain-timeout-s", "`float` > 0"),
            ]
        ],
        # The quote transaction size of persistence, bounded apart from its fetch size.
        *[
            (PersistenceConfig, "persistence", *case)
            for case in [
                (
                    (),
                    {"RRR_PERSISTENCE_QUOTE_BATCH_MAX_ROWS": "0"},
                    "RRR_PERSISTENCE_QUOTE_BATCH_MAX_ROWS",
                    "`int` >= 1",
                ),
                (("--quote-batch-max-rows", "100001"), {}, "--quote-batch-max-rows", "`int` <= 100000"),
                (("--quote-batch-max-rows", "lots"), {}, "--quote-batch-max-rows", "`int`"),
            ]
        ],
    ],
)
def test_bad_value_is_an_error_naming_where_it_came_from(config_type, service, argv, environ, source, expected):
    with pytest.raises(ConfigError) as info:
        _load(config_type, service, argv, environ)
    assert info.value.source == source
    assert expected in info.value.expected
    assert str(info.value).startswith(f"{source}: expected ")


def test_bad_value_error_quotes_the_value_given():
    with pytest.raises(ConfigError) as info:
        _load(MarketDataConfig, "market_data", environ={"RRR_MARKET_DATA_FEED": "ftp"})
    assert info.value.got == "ftp"
    assert "'ftp'" in str(info.value)


def test_bad_value_overridden_by_a_good_one_is_not_an_error():
    assert _load(StrategyConfig, "strategy", ["--fast", "3"], {"RRR_STRATEGY_FAST": "x"}).fast == 3


@pytest.mark.parametrize(("shard", "shards"), [("1", "1"), ("4", "4"), ("7", "2")])
def test_shard_at_or_above_shards_is_an_error(shard, shards):
    with pytest.raises(ConfigError) as info:
        _load(StrategyConfig, "strategy", ["--shard", shard, "--shards", shards])
    assert "--shard" in info.value.source
    assert info.value.got == int(shard)
    assert f"--shards={shards}" in info.value.expected


def test_shard_just_below_shards_is_valid():
    assert _load(StrategyConfig, "strategy", ["--shard", "3"], {"RRR_SHARDS": "4"}).shard == 3


def test_shard_is_read_from_the_deployment_wide_variable_too():
    assert _load(ExecutionConfig, "execution", environ={"RRR_SHARD": "1", "RRR_SHARDS": "2"}).shard == 1


def test_duplicate_window_longer_than_the_streams_keep_messages_is_an_error_naming_its_source():
    with pytest.raises(ConfigError) as info:
        _load(StrategyConfig, "strategy", ["--stream-max-age-s", "300"], {"RRR_DUPLICATE_WINDOW_S": "600"})
    assert info.value.source == "RRR_DUPLICATE_WINDOW_S"
    assert info.value.expected == "at most --stream-max-age-s=300"


def test_duplicate_window_is_read_from_the_deployment_wide_variable():
    assert _load(PersistenceConfig, "persistence", environ={"RRR_DUPLICATE_WINDOW_S": "1"}).duplicate_window_s == 1


@pytest.mark.parametrize(("config_type", "service"), SERVICES)
def test_the_jetstream_budget_is_read_by_every_service_from_the_deployment_wide_variables(config_type, service):
    environ = {"RRR_STORE_MAX_BYTES": "1073741824", "RRR_STORE_MAX_MSGS": "5000000", "RRR_MAX_MSG_BYTES": "8192"}
    limits = _load(config_type, service, environ=environ).store_limits()
    assert (limits.max_bytes, limits.max_msgs, limits.max_msg_bytes) == (2**30, 5_000_000, 8192)


@pytest.mark.parametrize(
    ("environ", "source"),
    [
        ({"RRR_STORE_MAX_BYTES": "1000000"}, "RRR_STORE_MAX_BYTES"),
        ({"RRR_STORE_MAX_MSGS": "10"}, "RRR_STORE_MAX_MSGS"),
        # Above half of nats-server's 1 MiB max_payload: a dead letter adds headers to a message of this size.
        ({"RRR_MAX_MSG_BYTES": str(600 * 1024)}, "RRR_MAX_MSG_BYTES"),
    ],
)
def test_a_jetstream_budget_out_of_range_is_an_error_naming_the_variable(environ, source):
    with pytest.raises(ConfigError, match=source):
        _load(StrategyConfig, "strategy", environ=environ)


def test_a_quote_transaction_size_is_read_apart_from_the_messages_batch_size():
    config = _load(
        PersistenceConfig, "persistence", ["--quote-batch-max-rows", "4096"], {"RRR_PERSISTENCE_BATCH_MAX_ROWS": "500"}
    )
    assert (config.quote_batch_max_rows, config.batch_max_rows) == (4096, 500)


def test_negative_shard_is_an_error():
    with pytest.raises(ConfigError, match=">= 0"):
        _load(StrategyConfig, "strategy", ["--shard", "-1"])


# -- repr ----------------------------------------------------------------------------------------------


def test_repr_hides_the_password_of_a_url():
    config = _load(
        PersistenceConfig,
        "persistence",
        environ={"RRR_DATABASE_URL": "postgresql://rrr:s3cr3t@db:5432/rrr", "RRR_NATS_URL": "nats://a:b@n1:4222"},
    )
    text = repr(config)
    assert "s3cr3t" not in text
    assert "postgresql://rrr:***@db:5432/rrr" in text
    assert "nats://a:***@n1:4222" in text
    assert config.database_url == "postgresql://rrr:s3cr3t@db:5432/rrr"  # hidden in repr only


def test_str_of_a_config_hides_the_password_too():
    config = PersistenceConfig(database_url="postgresql://rrr:s3cr3t@db/rrr")
    assert "s3cr3t" not in str(config)
    assert "s3cr3t" not in f"{config}"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("postgresql://rrr:s3cr3t@db/rrr", "postgresql://rrr:***@db/rrr"),
        ("postgresql://rrr@db/rrr", "postgresql://rrr@db/rrr"),
        ("nats://127.0.0.1:4222", "nats://127.0.0.1:4222"),
        ("nats://u:p1@n1:4222,nats://v:p2@n2:4222", "nats://u:***@n1:4222,nats://v:***@n2:4222"),
        ("postgresql://rrr:pa:ss/w@db/rrr", "postgresql://rrr:***@db/rrr"),
        (42, 42),
    ],
)
def test_redact_hides_only_passwords(value, expected):
    assert redact(value) == expected


def test_repr_of_a_config_without_secrets_shows_every_field():
    text = repr(StrategyConfig(fast=3, slow=9))
    assert text.startswith("StrategyConfig(")
    for name in StrategyConfig.__struct_fields__:
        assert f"{name}=" in text
    assert "fast=3" in text


# -- the services' own rules ---------------------------------------------------------------------------


@pytest.mark.parametrize(("fast", "slow"), [("20", "20"), ("21", "20"), ("5", "4")])
def test_strategy_with_fast_not_below_slow_is_an_error(fast, slow):
    with pytest.raises(ConfigError) as info:
        _load(StrategyConfig, "strategy", ["--fast", fast, "--slow", slow])
    assert "--fast" in info.value.source
    assert info.value.got == int(fast)
    assert f"--slow={slow}" in info.value.expected


def test_strategy_with_fast_just_below_slow_is_valid():
    config = _load(StrategyConfig, "strategy", environ={"RRR_STRATEGY_FAST": "19", "RRR_STRATEGY_SLOW": "20"})
    assert (config.fast, config.slow) == (19, 20)


@pytest.mark.parametrize("qty", ["0", "-1", "NaN", "Infinity", "-0.0001"])
def test_strategy_with_qty_not_above_zero_is_an_error(qty):
    with pytest.raises(ConfigError) as info:
        _load(StrategyConfig, "strategy", environ={"RRR_STRATEGY_QTY": qty})
    assert "RRR_STRATEGY_QTY" in info.value.source
    assert info.value.expected == "a number > 0"


def test_strategy_with_small_positive_qty_keeps_it_exactly():
    assert _load(StrategyConfig, "strategy", ["--qty", "0.0001"]).qty == Decimal("0.0001")


@pytest.mark.parametrize(
    ("flag", "value", "expected"),
    [
        ("--max-order-qty", "0", "a number > 0"),
        ("--max-notional-quote", "-5", "a number > 0"),
        ("--max-order-qty", "NaN", "a number > 0"),
        ("--fee-bps", "-1", "a number from 0 to below 10000"),
        ("--fee-bps", "10000", "a number from 0 to below 10000"),
        ("--slippage-bps", "Infinity", "a number from 0 to below 10000"),
    ],
)
def test_execution_with_limit_or_bps_out_of_range_is_an_error_naming_the_flag(flag, value, expected):
    with pytest.raises(ConfigError) as info:
        _load(ExecutionConfig, "execution", [flag, value])
    assert info.value.source == flag
    assert info.value.expected == expected


def test_execution_accepts_bps_just_below_ten_thousand():
    assert _load(ExecutionConfig, "execution", ["--slippage-bps", "9999.99"]).slippage_bps == Decimal("9999.99")


@pytest.mark.parametrize(
    ("config_type", "service", "environ", "variable"),
    [
        (StrategyConfig, "strategy", {"RRR_STRATEGY_QTY": "0"}, "RRR_STRATEGY_QTY"),
        (StrategyConfig, "strategy", {"RRR_STRATEGY_FAST": "30"}, "RRR_STRATEGY_FAST"),
        (StrategyConfig, "strategy", {"RRR_SHARD": "2", "RRR_SHARDS": "2"}, "RRR_SHARD"),
        pytest.param(StrategyConfig, "strategy", {"RRR_STRATEGY_SHARD": "2", "RRR_SHARDS": "2"}, "RRR_STRATEGY_SHARD"),
        pytest.param(ExecutionConfig, "execution", {"RRR_EXECUTION_FEE_BPS": "10000"}, "RRR_EXECUTION_FEE_BPS"),
        pytest.param(ExecutionConfig, "execution", {"RRR_EXECUTION_MAX_ORDER_QTY": "0"}, "RRR_EXECUTION_MAX_ORDER_QTY"),
    ],
)
def test_out_of_range_value_from_env_is_an_error_naming_the_variable(config_type, service, environ, variable):
    with pytest.raises(ConfigError) as info:
        _load(config_type, service, environ=environ)
    assert variable in info.value.source


def test_market_data_with_unknown_feed_is_an_error():
    with pytest.raises(ConfigError) as info:
        _load(MarketDataConfig, "market_data", ["--feed", "ftp"])
    assert info.value.source == "--feed"


def test_market_data_live_feed_takes_venue_symbols_and_refuses_what_no_venue_has():
    config = _load(MarketDataConfig, "market_data", ["--feed", "live", "--venues", "coinbase", "--symbols", "BTC-USD"])
    assert (config.venues, config.symbols) == (("coinbase",), ("BTC-USD",))
    for argv, source in (
        (["--feed", "live"], "--symbols (default)"),
        (["--feed", "live", "--venues", "nyse", "--symbols", "X"], "--venues"),
        (["--feed", "live", "--venues", "coinbase", "--symbols", "BTCUSD"], "coinbase symbol"),
        (["--feed", "live", "--symbols", "BTCUSDT", "--live-max-symbols", "0"], "--live-max-symbols"),
        (["--feed", "live", "--symbols", "BTCUSDT,ETHUSDT", "--live-max-symbols", "1"], "--symbols"),
        (["--feed", "live", "--symbols", "BTCUSDT", "--venue-urls", "binance=http://x"], "--venue-urls"),
        (["--feed", "live", "--symbols", "BTCUSDT", "--live-max-frame-bytes", "99999999"], "--live-max-frame-bytes"),
    ):
        with pytest.raises(ConfigError) as info:
            _load(MarketDataConfig, "market_data", argv)
        assert info.value.source == source, (argv, info.value)


def test_market_data_reads_its_numbers():
    config = _load(MarketDataConfig, "market_data", ["--rate-hz", "1000", "--seed", "-3", "--trade-every", "0"])
    assert (config.rate_hz, config.seed, config.trade_every) == (1000.0, -3, 0)


@pytest.mark.parametrize(
    ("argv", "source"),
    [
        (("--batch-max-rows", "0"), "--batch-max-rows"),
        (("--batch-max-ms", "60001"), "--batch-max-ms"),
        (("--pool-max-size", "101"), "--pool-max-size"),
        (("--database-url", ""), "--database-url"),
    ],
)
def test_persistence_with_out_of_range_batching_is_an_error(argv, source):
    with pytest.raises(ConfigError) as info:
        _load(PersistenceConfig, "persistence", argv)
    assert info.value.source == source


# -- parse_config --------------------------------------------------------------------------------------


def test_parse_config_with_a_bad_flag_exits_with_status_two_and_says_why(monkeypatch, capsys):
    _clear_rrr_environ(monkeypatch)
    with pytest.raises(SystemExit) as info:
        parse_config(StrategyConfig, "strategy", ["--fast", "30"])
    assert info.value.code == 2
    assert "--fast: expected fewer quotes than --slow=20, got 30" in capsys.readouterr().err


def test_parse_config_returns_the_config_and_the_parsed_args(monkeypatch):
    _clear_rrr_environ(monkeypatch)
    config, args = parse_config(StrategyConfig, "strategy", ["--fast", "2", "--slow", "3"])
    assert (config.fast, config.slow) == (2, 3)
    assert args.cfg_fast == "2"


def _clear_rrr_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    # parse_config reads os.environ; a test run pointed at shared servers sets RRR_NATS_URL and friends.
    for name in [k for k in os.environ if k.startswith("RRR_")]:
        monkeypatch.delenv(name)


# -- the dead-letter key -------------------------------------------------------------------------------


@pytest.mark.parametrize(("config_type", "service"), SERVICES)
def test_the_dead_letter_key_reaches_every_service_from_rrr_dlq_key_and_is_never_shown(config_type, service):
    secret = "a-dead-letter-key-of-20"
    config = _load(config_type, service, environ={"RRR_DLQ_KEY": secret})
    assert config.dlq_key == secret
    assert secret not in repr(config)
    assert "dlq_key='***'" in repr(config)


def test_a_dead_letter_key_too_short_to_be_a_secret_is_refused_without_showing_it():
    with pytest.raises(ConfigError) as info:
        _load(ExecutionConfig, "execution", environ={"RRR_DLQ_KEY": "short-key"})
    assert info.value.source == "RRR_DLQ_KEY"
    assert "short-key" not in str(info.value)
    assert "at least 16 characters" in str(info.value)
