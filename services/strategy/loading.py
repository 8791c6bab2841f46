"""Finding strategies: built-ins by short name, installed ones by entry point, any by ``module:Class``.

A strategy is named in one of three ways:

- a built-in's short name: ``sma_cross``, ``mean_reversion``, ``ml_signal``;
- the name of an entry point of the group ``rrr.strategies`` (what a pip-installed package declares:
  ``[project.entry-points."rrr.strategies"] my_strategy = "my_pkg.module:MyStrategy"``);
- ``package.module:Class``, importable from the Python path.

Several strategies are listed in a TOML file (``--config``)::

    name = "desk1"                 # optional: names the set's snapshot (a-z, 0-9, _)

    [[strategy]]
    id = "fast_cross"              # on its signals and orders: a-z, 0-9, _ (at most 64)
    class = "sma_cross"
    params = { fast = 3, slow = 10 }
    symbols = ["EURUSD"]           # optional: every symbol of the shard when absent

Every error (an unknown name, a module that fails to import, parameters that do not validate, an unknown
key in the file, too many strategies) is one line naming what was wrong.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

import msgspec

from rrr.shared.errors import ConfigError, InvalidSymbolError, RRRError
from rrr.shared.messages import NAME_MAX
from rrr.shared.subjects import check_symbol
from rrr.strategy.api import Strategy
from rrr.strategy.engine import StrategySpec

ENTRY_POINT_GROUP = "rrr.strategies"
BUILTINS: Mapping[str, str] = {
    "sma_cross": "rrr.strategy.sma_cross:SmaCrossStrategy",
    "mean_reversion": "rrr.strategy.mean_reversion:MeanReversion",
    "ml_signal": "rrr.strategy.ml_signal:MlSignal",
}
# Strategies in one service instance: each sees every quote of its symbols, so the bound keeps a quote's
# cost bounded too.
MAX_STRATEGIES = 32
_ID = re.compile(rf"[a-z0-9_]{{1,{NAME_MAX}}}")
_REF = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")


class StrategyLoadError(RRRError):
    """A strategy cannot be loaded or configured as asked."""

    def __init__(self, what: str, expected: str, got: str) -> None:
        self.what = what
        self.expected = expected
        self.got = got
        super().__init__(f"{what}: expected {expected}, got {got}")


_NAMES = (
    "a built-in (sma_cross, mean_reversion, ml_signal), an installed strategy (rrr-strategy --list) "
    "or package.module:Class"
)


def resolve(ref: str) -> type[Strategy[Any]]:
    """The strategy class ``ref`` names.

    Raises:
        StrategyLoadError: no such strategy, its module fails to import, or it is not a Strategy subclass.
    """
    target = BUILTINS.get(ref)
    if target is None:
        found = [ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP) if ep.name == ref]
        if found:
            target = found[0].value
        elif _REF.fullmatch(ref):
            target = ref
        else:
            raise StrategyLoadError("strategy", _NAMES, repr(ref))
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # anything the module raises on import is the user's module failing
        raise StrategyLoadError(f"strategy {ref}", "an importable module", f"{type(exc).__name__}: {exc}") from None
    cls = getattr(module, class_name, None)
    if cls is None:
        raise StrategyLoadError(f"strategy {ref}", f"a class {class_name} in {module_name}", "no such name")
    if not (isinstance(cls, type) and issubclass(cls, Strategy)):
        raise StrategyLoadError(f"strategy {ref}", "a subclass of rrr.strategy.api.Strategy", repr(cls))
    return cls


def make_params(ref: str, cls: type[Strategy[Any]], raw: Mapping[str, Any] | str) -> Any:
    """The strategy's parameters from a mapping or JSON text, validated against its ``params_type``.

    Raises:
        StrategyLoadError: not JSON, or a field is unknown, of the wrong type, out of bounds or
            inconsistent (the message names the field).
    """
    try:
        data = msgspec.json.decode(raw) if isinstance(raw, str) else dict(raw)
        if isinstance(raw, str) and not isinstance(data, dict):
            raise StrategyLoadError(f"parameters of {ref}", "a JSON object", raw)
        # strict=False: numbers may come as JSON numbers or text, as a TOML file or a shell gives them.
        return msgspec.convert(data, type=cls.params_type, strict=False)
    except msgspec.ValidationError as exc:  # first: a ValidationError is a DecodeError too
        raise StrategyLoadError(f"parameters of {ref}", f"{cls.params_type.__name__}", str(exc)) from None
    except msgspec.DecodeError as exc:
        raise StrategyLoadError(f"parameters of {ref}", "a JSON object", f"{raw!r} ({exc})") from None


def spec(strategy_id: str, ref: str, params: Mapping[str, Any] | str = "", symbols: Sequence[str] = ()) -> StrategySpec:
    """One strategy, loaded and validated.

    Raises:
        StrategyLoadError: see ``resolve``, ``make_params``; or the id or a symbol is invalid.
    """
    if not _ID.fullmatch(strategy_id):
        raise StrategyLoadError("strategy id", f"1-{NAME_MAX} characters of a-z, 0-9, '_'", repr(strategy_id))
    for symbol in symbols:
        try:
            check_symbol(symbol)
        except InvalidSymbolError as exc:
            raise StrategyLoadError(f"symbols of strategy {strategy_id}", "valid symbols", str(exc)) from None
    cls = resolve(ref)
    checked_params = make_params(ref, cls, params or {})
    try:
        cls.check_params(checked_params)
    except ValueError as exc:
        raise StrategyLoadError(f"parameters of {ref}", "parameters it can start with", str(exc)) from None
    return StrategySpec(id=strategy_id, cls=cls, params=checked_params, ref=ref, symbols=frozenset(symbols))


def default_id(ref: str) -> str:
    """The id a strategy named ``ref`` gets when none is given: its short name, or its class's in snake case."""
    name = ref.rpartition(":")[2]
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()[:NAME_MAX] if ":" in ref else ref


class _Entry(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id: str
    class_: str = msgspec.field(name="class")
    params: dict[str, Any] = {}
    symbols: list[str] = []


class _File(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    strategy: Annotated[list[_Entry], msgspec.Meta(min_length=1)]
    name: str = "strategies"


def from_file(path: Path) -> tuple[str, list[StrategySpec]]:
    """The set's name and the strategies a TOML file lists.

    Raises:
        StrategyLoadError: the file cannot be read, is not TOML, has an unknown key or a missing one,
            lists more than MAX_STRATEGIES strategies or one id twice, or a strategy fails to load.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise StrategyLoadError(f"strategies file {path}", "a readable file", exc.strerror or str(exc)) from None
    try:
        listed = msgspec.toml.decode(data, type=_File)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise StrategyLoadError(
            f"strategies file {path}", "a TOML file of [[strategy]] tables (id, class, params, symbols)", str(exc)
        ) from None
    if not _ID.fullmatch(listed.name):
        raise StrategyLoadError(
            f"strategies file {path}: name", f"1-{NAME_MAX} characters of a-z, 0-9, '_'", repr(listed.name)
        )
    return listed.name, checked([spec(e.id, e.class_, e.params, e.symbols) for e in listed.strategy], str(path))


def checked(specs: list[StrategySpec], where: str) -> list[StrategySpec]:
    """``specs``, once checked to be at most MAX_STRATEGIES with distinct ids."""
    if len(specs) > MAX_STRATEGIES:
        raise StrategyLoadError(where, f"at most {MAX_STRATEGIES} strategies", f"{len(specs)}")
    seen: set[str] = set()
    for one in specs:
        if one.id in seen:
            raise StrategyLoadError(where, "distinct strategy ids", f"{one.id!r} twice")
        seen.add(one.id)
    return specs


def available() -> list[tuple[str, str, str]]:
    """Every strategy known by name: (name, where it lives, the first line of its docstring)."""
    out = []
    named = dict(BUILTINS)
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        named.setdefault(ep.name, ep.value)
    for name, target in named.items():
        try:
            doc = (resolve(name).__doc__ or "").strip().splitlines()[0]
        except (StrategyLoadError, IndexError) as exc:
            doc = str(exc) if isinstance(exc, StrategyLoadError) else ""
        out.append((name, target, doc))
    return out


def as_config_error(exc: StrategyLoadError, source: str) -> ConfigError:
    """The error as a ConfigError of the setting ``source`` (what a service's config raises)."""
    return ConfigError(source, exc.expected, f"{exc.what}: {exc.got}")
