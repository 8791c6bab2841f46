"""A service's symbol universe: which new symbols it admits, and how a refusal reads."""

from __future__ import annotations

import pytest

from rrr.execution.config import ExecutionConfig
from rrr.shared.errors import ConfigError
from rrr.shared.subjects import shard_of
from rrr.shared.universe import DEFAULT_MAX_SYMBOLS, SymbolRefusedError, Universe
from rrr.strategy.config import StrategyConfig


def test_by_default_any_symbol_is_admitted_up_to_ten_thousand():
    universe = StrategyConfig().universe()
    assert universe.max_symbols == DEFAULT_MAX_SYMBOLS == 10_000
    universe.admit("ANY", held=9_999)
    with pytest.raises(SymbolRefusedError):
        universe.admit("ANY", held=10_000)


def test_a_symbol_beyond_the_cap_is_refused_naming_the_cap_and_the_setting():
    universe = ExecutionConfig(max_symbols=3).universe()
    with pytest.raises(SymbolRefusedError) as refused:
        universe.admit("EURUSD", held=3)
    assert str(refused.value) == (
        "symbol EURUSD refused: expected at most 3 symbols per instance "
        "(--max-symbols, RRR_EXECUTION_MAX_SYMBOLS), and this instance holds 3 already"
    )
    assert refused.value.symbol == "EURUSD"


def test_with_symbols_listed_only_those_are_admitted():
    universe = StrategyConfig(symbols=("EURUSD", "USDJPY")).universe()
    universe.admit("USDJPY", held=1)
    with pytest.raises(SymbolRefusedError, match=r"one of the 2 symbols of --symbols \(RRR_STRATEGY_SYMBOLS\)"):
        universe.admit("GBPUSD", held=0)


def test_a_listed_symbol_that_could_not_be_a_subject_token_is_a_config_error():
    with pytest.raises(ConfigError, match="symbols"):
        StrategyConfig(symbols=("EUR.USD",))


def test_more_listed_symbols_of_the_shard_than_the_cap_is_a_config_error_but_other_shards_do_not_count():
    listed = tuple(f"S{i}" for i in range(40))
    mine = sum(1 for s in listed if shard_of(s, 2) == 0)
    with pytest.raises(ConfigError, match=f"at most --max-symbols={mine - 1} symbols of shard 0"):
        StrategyConfig(symbols=listed, max_symbols=mine - 1, shard=0, shards=2)
    assert StrategyConfig(symbols=listed, max_symbols=mine, shard=0, shards=2).universe().symbols == set(listed)


def test_an_unconfigured_universe_names_the_service_generically():
    with pytest.raises(SymbolRefusedError, match="RRR_SERVICE_MAX_SYMBOLS"):
        Universe(max_symbols=1).admit("X", held=1)
