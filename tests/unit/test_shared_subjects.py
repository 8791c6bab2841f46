"""Subjects: how they are built, sharded and parsed; pure functions, no bus."""

from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rrr.shared import subjects
from rrr.shared.errors import InvalidSubjectError, InvalidSymbolError

valid_symbols = st.from_regex(r"[A-Z0-9][A-Z0-9_\-]{0,31}", fullmatch=True)
shard_counts = st.integers(min_value=1, max_value=1024)

BUILDERS = [
    (subjects.quote, "md.quote"),
    (subjects.trade, "md.trade"),
    (subjects.signal, "sig.signal"),
    (subjects.order_command, "cmd.order"),
    (subjects.order_event, "evt.order"),
    (subjects.position, "evt.position"),
    (subjects.latest_quote, "req.quote"),
]


# -- builders ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("builder", "family"), BUILDERS)
def test_builder_puts_family_shard_and_symbol_in_that_order(builder, family):
    assert builder("BTCUSDT", 4) == f"{family}.3.BTCUSDT"


@pytest.mark.parametrize(("builder", "family"), BUILDERS)
def test_builder_with_one_shard_always_uses_shard_zero(builder, family):
    assert builder("EURUSD", 1) == f"{family}.0.EURUSD"


@pytest.mark.parametrize(("builder", "_family"), BUILDERS)
@pytest.mark.parametrize("symbol", ["BTC.USDT", "BTC*", "BTC>", ">", "*", "btcusdt", "", "BTC USDT"])
def test_builder_with_unsafe_symbol_raises_invalid_symbol(builder, _family, symbol):
    with pytest.raises(InvalidSymbolError) as info:
        builder(symbol, 4)
    assert info.value.symbol == symbol


def test_heartbeat_subject_names_service_and_shard():
    assert subjects.heartbeat("execution", 2) == "ctl.heartbeat.execution.2"


def test_heartbeat_subject_is_captured_by_the_heartbeat_stream_filter():
    assert subjects.HEARTBEAT_ALL == "ctl.heartbeat.>"
    assert subjects.heartbeat("strategy", 0).startswith(subjects.HEARTBEAT_ALL.removesuffix(">"))


def test_dead_letter_subject_prefixes_the_failed_subject():
    assert subjects.dead_letter("md.quote.3.BTCUSDT") == "dlq.md.quote.3.BTCUSDT"


# -- shard_of ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("symbol", "shards", "expected"),
    [
        # crc32("BTCUSDT") = 2895029187, crc32("EURUSD") = 4126202539, crc32("USDJPY") = 1397096068:
        # pinned so that a change of hash function (and so of every instance's ownership) fails here.
        ("BTCUSDT", 4, 3),
        ("BTCUSDT", 7, 1),
        ("BTCUSDT", 16, 3),
        ("EURUSD", 7, 4),
        ("EURUSD", 16, 11),
        ("USDJPY", 4, 0),
        ("USDJPY", 1024, 644),
        ("BTCUSDT", 1024, 963),
        ("SIMA", 16, 1),
    ],
)
def test_shard_of_known_symbol_is_its_crc32_modulo_shards(symbol, shards, expected):
    assert subjects.shard_of(symbol, shards) == expected


@pytest.mark.parametrize("shards", [0, -1])
def test_shard_of_with_fewer_than_one_shard_raises_value_error(shards):
    with pytest.raises(ValueError, match="at least 1"):
        subjects.shard_of("BTCUSDT", shards)


@given(symbol=valid_symbols, shards=shard_counts)
def test_shard_of_any_symbol_is_within_range(symbol, shards):
    assert 0 <= subjects.shard_of(symbol, shards) < shards


@pytest.mark.parametrize("shards", [1, 2, 3, 8, 64])
def test_every_symbol_is_owned_by_exactly_one_shard(shards):
    symbols = [f"SYM{i}" for i in range(500)] + ["BTCUSDT", "EURUSD", "USDJPY"]
    filters = [subjects.shard_filter(subjects.QUOTE, k) for k in range(shards)]
    for symbol in symbols:
        subject = subjects.quote(symbol, shards)
        assert sum(_matches(f, subject) for f in filters) == 1, symbol
    # With this many symbols every shard owns some: the hash does spread them.
    assert {subjects.shard_of(s, shards) for s in symbols} == set(range(shards))


@given(symbol=valid_symbols, shards=shard_counts)
def test_subject_built_for_a_symbol_matches_exactly_one_shard_filter(symbol, shards):
    subject = subjects.quote(symbol, shards)
    matching = [k for k in range(shards) if _matches(subjects.shard_filter(subjects.QUOTE, k), subject)]
    assert matching == [subjects.shard_of(symbol, shards)]


def _matches(pattern: str, subject: str) -> bool:
    """NATS subject matching, written independently of the code under test."""
    pattern_tokens, subject_tokens = pattern.split("."), subject.split(".")
    for i, token in enumerate(pattern_tokens):
        if token == ">":
            return len(subject_tokens) > i
        if i >= len(subject_tokens) or (token != "*" and token != subject_tokens[i]):
            return False
    return len(pattern_tokens) == len(subject_tokens)


# -- check_symbol --------------------------------------------------------------------------------------


@pytest.mark.parametrize("symbol", ["BTCUSDT", "EURUSD", "A", "0", "BRK-B", "ES_2024", "X" * 32, "9ABC"])
def test_check_symbol_with_safe_symbol_returns_it_unchanged(symbol):
    assert subjects.check_symbol(symbol) == symbol


@pytest.mark.parametrize(
    "symbol",
    [
        "BTC.USDT",
        "BTC*",
        "BTC>",
        "*",
        ">",
        "BTC USDT",
        " BTC",
        "BTC\n",
        "BTC\t",
        "btcusdt",
        "BtcUsdt",
        "",
        "X" * 33,
        "-BTC",
        "_BTC",
        "BTC/USDT",
        "ÄBC",
    ],
)
def test_check_symbol_with_unsafe_symbol_raises_naming_it(symbol):
    with pytest.raises(InvalidSymbolError) as info:
        subjects.check_symbol(symbol)
    assert info.value.symbol == symbol
    assert repr(symbol) in str(info.value)


def test_invalid_symbol_error_is_a_value_error_so_msgspec_reports_it_as_validation():
    assert issubclass(InvalidSymbolError, ValueError)


@given(st.text())
def test_check_symbol_with_any_text_rejects_it_or_it_holds_no_subject_syntax(text):
    try:
        subjects.check_symbol(text)
    except InvalidSymbolError:
        return
    assert text
    assert not any(c in ".*> " or c.isspace() for c in text)
    assert set(text) <= set(string.ascii_uppercase + string.digits + "_-")


@given(st.text(alphabet=".*> \t\n", min_size=1), valid_symbols, st.integers(min_value=0, max_value=32))
def test_check_symbol_with_subject_syntax_anywhere_rejects_it(bad, symbol, at):
    with pytest.raises(InvalidSymbolError):
        subjects.check_symbol(symbol[:at] + bad + symbol[at:])


# -- parse ---------------------------------------------------------------------------------------------


@settings(deadline=None)
@given(symbol=valid_symbols, shards=shard_counts, builder_family=st.sampled_from(BUILDERS))
def test_parse_of_a_built_subject_gives_back_family_shard_and_symbol(symbol, shards, builder_family):
    builder, family = builder_family
    parsed = subjects.parse(builder(symbol, shards))
    assert parsed == subjects.SymbolSubject(family, subjects.shard_of(symbol, shards), symbol)
    assert subjects.for_symbol(parsed.family, parsed.symbol, shards) == builder(symbol, shards)


@pytest.mark.parametrize(
    "subject",
    [
        "",
        "md",
        "md.quote",
        "md.quote.3",
        "md.quote.BTCUSDT",
        "md.quote.x.BTCUSDT",
        "md.quote.-1.BTCUSDT",
        "md.quote.*.BTCUSDT",
        "md.quote.3.BTCUSDT.extra",
        "ctl.heartbeat.execution.2",
    ],
)
def test_parse_with_malformed_layout_raises_invalid_subject(subject):
    with pytest.raises(InvalidSubjectError) as info:
        subjects.parse(subject)
    assert info.value.subject == subject
    assert "<plane>.<kind>.<shard>.<symbol>" in str(info.value)


@pytest.mark.parametrize("subject", ["md.quote.3.*", "md.quote.3.>", "md.quote.3.btcusdt", "md.quote.3."])
def test_parse_with_unsafe_symbol_token_raises_invalid_symbol(subject):
    with pytest.raises(InvalidSymbolError):
        subjects.parse(subject)


@pytest.mark.parametrize("subject", ["md.quote.\u00b2.BTCUSDT", "md.quote.\u0661.BTCUSDT"])
def test_parse_with_non_ascii_digit_shard_raises_invalid_subject(subject):
    # str.isdigit() alone accepts both: superscript two would then fail in int(), and the Arabic-Indic
    # digit one would read as shard 1.
    with pytest.raises(InvalidSubjectError):
        subjects.parse(subject)


@pytest.mark.parametrize("subject", ["md.*.3.BTCUSDT", "md..3.BTCUSDT", ">.quote.3.BTCUSDT"])
def test_parse_with_empty_or_wildcard_family_token_raises_invalid_subject(subject):
    with pytest.raises(InvalidSubjectError):
        subjects.parse(subject)


# -- filters -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("family", "shard", "expected"),
    [
        (subjects.QUOTE, 0, "md.quote.0.*"),
        (subjects.QUOTE, 3, "md.quote.3.*"),
        (subjects.ORDER_COMMAND, 12, "cmd.order.12.*"),
        (subjects.LATEST_QUOTE, 1, "req.quote.1.*"),
    ],
)
def test_shard_filter_matches_every_symbol_of_one_shard(family, shard, expected):
    assert subjects.shard_filter(family, shard) == expected


def test_shard_filter_with_negative_shard_raises_value_error():
    with pytest.raises(ValueError, match=">= 0"):
        subjects.shard_filter(subjects.QUOTE, -1)


@pytest.mark.parametrize(
    ("plane_all", "shard", "expected"),
    [
        (subjects.MARKET_DATA_ALL, 2, "md.*.2.*"),
        (subjects.SIGNAL_ALL, 0, "sig.*.0.*"),
        (subjects.COMMAND_ALL, 5, "cmd.*.5.*"),
        (subjects.EVENT_ALL, 1, "evt.*.1.*"),
    ],
)
def test_plane_shard_filter_matches_every_kind_of_one_plane_in_one_shard(plane_all, shard, expected):
    assert subjects.plane_shard_filter(plane_all, shard) == expected


def test_plane_shard_filter_of_market_data_catches_quotes_and_trades_of_its_shard_only():
    shards = 4
    md_filter = subjects.plane_shard_filter(subjects.MARKET_DATA_ALL, subjects.shard_of("BTCUSDT", shards))
    assert _matches(md_filter, subjects.quote("BTCUSDT", shards))
    assert _matches(md_filter, subjects.trade("BTCUSDT", shards))
    assert not _matches(md_filter, subjects.quote("USDJPY", shards))  # shard 0, not 3
    assert not _matches(md_filter, subjects.order_event("BTCUSDT", shards))


@pytest.mark.parametrize(
    ("stream_filter", "builder"),
    [
        (subjects.MARKET_DATA_ALL, subjects.quote),
        (subjects.MARKET_DATA_ALL, subjects.trade),
        (subjects.SIGNAL_ALL, subjects.signal),
        (subjects.COMMAND_ALL, subjects.order_command),
        (subjects.EVENT_ALL, subjects.order_event),
        (subjects.EVENT_ALL, subjects.position),
    ],
)
def test_each_built_subject_is_captured_by_its_planes_stream(stream_filter, builder):
    assert _matches(stream_filter, builder("BTCUSDT", 4))


def test_latest_quote_requests_are_captured_by_no_stream():
    request = subjects.latest_quote("BTCUSDT", 4)
    streams = [
        subjects.MARKET_DATA_ALL,
        subjects.SIGNAL_ALL,
        subjects.COMMAND_ALL,
        subjects.EVENT_ALL,
        subjects.DEAD_LETTER_ALL,
        subjects.HEARTBEAT_ALL,
    ]
    assert not any(_matches(stream, request) for stream in streams)


def test_parse_owned_accepts_a_subject_of_a_known_family_on_its_symbols_shard():
    assert subjects.parse_owned("cmd.order.1.EURUSD", 2) == ("cmd.order", 1, "EURUSD")


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("cmd.order.0.EURUSD", "cmd.order.1.EURUSD, the shard that owns EURUSD"),  # EURUSD is shard 1 of 2
        ("md.foo.1.EURUSD", "one of the families"),
        ("x.y.1.EURUSD", "one of the families"),
    ],
)
def test_parse_owned_refuses_an_unknown_family_or_a_shard_that_does_not_own_the_symbol(subject, expected):
    with pytest.raises(InvalidSubjectError, match=expected):
        subjects.parse_owned(subject, 2)


@pytest.mark.parametrize("subject", ["retry", "retry.x", "retryx.a.b"])
def test_retried_subject_of_a_subject_that_is_no_retry_is_the_subject_itself(subject):
    assert subjects.retried_subject(subject) == subject


@pytest.mark.parametrize("subject", ["_INBOX.abc", "_INBOX.nuid.token", "_INBOX_alice.abc", "_INBOX_svc-1.a.b"])
def test_is_inbox_accepts_the_inbox_subjects_of_nats_clients_and_per_user_inbox_prefixes(subject):
    assert subjects.is_inbox(subject)


@pytest.mark.parametrize(
    "subject",
    ["md.quote.0.RATE", "_INBOX", "_INBOX.", "_INBOX..a", "_INBOX.*", "_INBOX.>", "_INBOXX.a", "x._INBOX.a",
     "_INBOX.a\n", "_INBOX_.a"],
)  # fmt: skip
def test_is_inbox_refuses_every_other_subject(subject):
    assert not subjects.is_inbox(subject)


def test_snapshot_subjects_keep_each_name_and_generation_in_one_token():
    assert subjects.snapshot_head("strategy-sma_cross-s0-of-1") == "snap.strategy-sma_cross-s0-of-1.head"
    assert subjects.snapshot_chunks("execution-s0-of-1", "ab12") == "snap.execution-s0-of-1.chunk.ab12"
    assert subjects.snapshot_all_chunks("execution-s0-of-1") == "snap.execution-s0-of-1.chunk.*"


@pytest.mark.parametrize("name", ["", "a.b", "a*", "a>", "A", "x" * 65])
def test_snapshot_name_that_could_break_its_subject_is_an_error(name):
    with pytest.raises(InvalidSubjectError, match="snapshot name"):
        subjects.snapshot_head(name)


@pytest.mark.parametrize(
    ("strategy", "symbol", "key"),
    [("", "", "account"), ("maker", "", "strategy.maker"), ("", "EURUSD", "symbol.EURUSD"),
     ("maker", "BTC-USD", "pair.maker.BTC-USD")],
)  # fmt: skip
def test_a_trading_state_key_names_its_scope_and_parses_back(strategy, symbol, key):
    assert subjects.trading_key(strategy, symbol) == key
    assert subjects.parse_trading_key(key) == (strategy, symbol)


@pytest.mark.parametrize("key", ["", "accounts", "strategy.", "strategy.Maker", "symbol.eur", "pair.a", "pair.a.B.C",
                                 "symbol.>", "strategy.*"])  # fmt: skip
def test_anything_else_is_not_a_trading_state_key(key):
    with pytest.raises(InvalidSubjectError):
        subjects.parse_trading_key(key)


def test_trading_confirmations_and_shard_holdings_have_their_own_subjects_and_keys():
    assert subjects.trading_applied(3) == "ctl.trading.3"
    assert subjects.risk_key(3) == "shard.3"
    with pytest.raises(InvalidSubjectError):
        subjects.trading_key("no.dots")


def test_a_subject_refused_once_is_refused_every_time_and_the_subjects_kept_made_are_bounded():
    for _ in range(3):
        with pytest.raises(InvalidSymbolError):
            subjects.for_symbol(subjects.ORDER_EVENT, "EUR.USD", 4)
    for i in range(subjects.for_symbol.cache_info().maxsize + 10):
        symbol = f"S{i}"
        assert (
            subjects.for_symbol(subjects.POSITION, symbol, 4)
            == f"{subjects.POSITION}.{subjects.shard_of(symbol, 4)}.{symbol}"
        )
    info = subjects.for_symbol.cache_info()
    assert info.currsize == info.maxsize
