# RRRalgorithms: `just --list` is the manual.

set shell := ["bash", "-euo", "pipefail", "-c"]
set positional-arguments := true

python := env("PYTHON", "python3")
bin := justfile_directory() / ".venv/bin"
# Where the local system keeps its data, logs, pids and settings; RRR_RUN_DIR runs another one.
run_dir := env("RRR_RUN_DIR", justfile_directory() / ".run")

# List the recipes.
default:
    @just --list --unsorted

# Start nats-server, PostgreSQL and the four services in the background; FEED is sim (default), none or live (live --venue binance --symbols BTCUSDT,ETHUSDT).
[group('run')]
[no-exit-message]
up FEED="sim" *FLAGS: _venv
    @"{{ bin }}/rrr-stack" --run-dir "{{ run_dir }}" up "$@"

# The live dashboard in the browser: starts it if it does not run and prints its address (--host H, --port P to move it).
[group('run')]
[no-exit-message]
ui *FLAGS: _venv
    @"{{ bin }}/rrr-stack" --run-dir "{{ run_dir }}" ui "$@"

# Publish a quote file (.csv or .parquet) into the running system, with a progress bar; FILE is relative to where you are.
[group('run')]
[no-exit-message]
[no-cd]
replay FILE *FLAGS: _venv
    @"{{ bin }}/rrr-stack" --run-dir "{{ run_dir }}" exec "{{ bin }}/rrr-market-data" replay "$@"

# Backtest strategies on quote files in one process, no servers: just backtest FILE... --strategy sma_cross [--params JSON] [--report out.png].
[group('run')]
[no-exit-message]
[no-cd]
backtest *ARGS: _venv
    @"{{ bin }}/rrr-backtest" "$@"

# Print live messages of a subject pattern, decoded (quote the pattern: just tap 'md.>'); --json for JSON lines.
[group('run')]
[no-exit-message]
tap SUBJECT *FLAGS: _venv
    @"{{ bin }}/rrr-stack" --run-dir "{{ run_dir }}" exec "{{ bin }}/rrr-tap" "$@"

# Dead letters: `just dlq list`, `just dlq republish SEQ...` or `just dlq republish --all` after a fix.
[group('run')]
[no-exit-message]
dlq *ARGS: _venv
    @"{{ bin }}/rrr-stack" --run-dir "{{ run_dir }}" exec "{{ bin }}/rrr-dlq" "$@"

# Halt trading on every shard (new orders refused, open ones canceled): just halt [--strategy S] [--symbol X] [--reduce] [--reason TEXT].
[group('run')]
[no-exit-message]
halt *FLAGS: _venv
    @"{{ bin }}/rrr-stack" --run-dir "{{ run_dir }}" exec "{{ bin }}/rrr-control" halt "$@"

# Trade again after a halt: just resume [--strategy S] [--symbol X] (each scope is halted and resumed on its own).
[group('run')]
[no-exit-message]
resume *FLAGS: _venv
    @"{{ bin }}/rrr-stack" --run-dir "{{ run_dir }}" exec "{{ bin }}/rrr-control" resume "$@"

# The trading states that are not active, and each execution shard's exposure and PnL today (--json).
[group('run')]
[no-exit-message]
trading *FLAGS: _venv
    @"{{ bin }}/rrr-stack" --run-dir "{{ run_dir }}" exec "{{ bin }}/rrr-control" status "$@"

# psql on the system's database, read-only (arguments go to psql: just psql -c 'select count(*) from fills').
[group('run')]
[no-exit-message]
psql *ARGS: _venv
    @"{{ bin }}/rrr-stack" --run-dir "{{ run_dir }}" psql "$@"

# Show servers, services, their heartbeats and counters.
[group('run')]
[no-exit-message]
status: _venv
    @"{{ bin }}/rrr-stack" --run-dir "{{ run_dir }}" status

# Tail the logs of one service (market_data, strategy, execution, persistence, nats, postgres) or all.
[group('run')]
[no-exit-message]
logs *SERVICE: _venv
    @"{{ bin }}/rrr-stack" --run-dir "{{ run_dir }}" logs "$@"

# Stop everything; data stays in .run/.
[group('run')]
[no-exit-message]
down: _venv
    @"{{ bin }}/rrr-stack" --run-dir "{{ run_dir }}" down

# Stop everything and delete .run/ with all its data; asks first in a terminal (--yes does not).
[group('run')]
[no-exit-message]
reset *FLAGS: _venv
    @"{{ bin }}/rrr-stack" --run-dir "{{ run_dir }}" reset "$@"

# Run the test suite (arguments go to pytest).
[group('dev')]
[no-exit-message]
test *ARGS: _venv
    @"{{ bin }}/pytest" "$@"

# The fault suite alone: processes killed, restarted and starved mid-replay, with exact counts printed.
[group('dev')]
[no-exit-message]
chaos *ARGS: _venv
    @"{{ bin }}/pytest" tests/chaos -s "$@"

# Load test the running system (start it with `just up none`): --symbols N --rate R --duration S, or --find-max.
[group('bench')]
[no-exit-message]
load *ARGS: _bench
    @"{{ bin }}/rrr-stack" --run-dir "{{ run_dir }}" exec "{{ bin }}/python" bench/load.py "$@"

# Micro-benchmarks of the cache, batching and concurrency, against real servers.
[group('bench')]
[no-exit-message]
bench *ARGS: _bench
    @"{{ bin }}/python" bench/micro.py "$@"

# The same generated quotes through NautilusTrader's BacktestEngine and through this system's replay.
[group('bench')]
[no-exit-message]
bench-compare *ARGS: _bench
    @"{{ bin }}/python" bench/compare_nautilus.py "$@"

# The bare nats-py transport on this machine (core, JetStream publish, pull with acks, ordered push), to read other figures by.
[group('bench')]
[no-exit-message]
bench-transport *ARGS: _venv
    @"{{ bin }}/python" bench/transport.py "$@"

# What sma_cross costs per quote on the EUR/USD sample: Decimal prices against fixed-point integers (no servers).
[group('bench')]
[no-exit-message]
bench-strategy *ARGS: _venv
    @"{{ bin }}/python" bench/strategy_cost.py "$@"

# Lint, type-check and check the layering: ruff, mypy (strict) and import-linter (contracts in pyproject.toml).
[group('dev')]
[no-exit-message]
lint: _venv
    @"{{ bin }}/ruff" check .
    @"{{ bin }}/ruff" format --check .
    mkdir -p build/mypy/rrr
    ln -sfn ../../../shared build/mypy/rrr/shared
    ln -sfn ../../../deploy build/mypy/rrr/deploy
    for p in market_data strategy execution persistence; do ln -sfn "../../../services/$p" "build/mypy/rrr/$p"; done
    @"{{ bin }}/mypy"
    @PYTHONPATH=build/mypy "{{ bin }}/lint-imports" --no-cache

# Create .venv and install the project with its dev tools, when missing or older than pyproject.toml.
[group('dev')]
_venv:
    #!/usr/bin/env bash
    set -euo pipefail
    stamp=.venv/.installed
    if [ -x .venv/bin/python ] && [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ]; then exit 0; fi
    echo "installing the project into .venv ..." >&2
    [ -x .venv/bin/python ] || "{{ python }}" -m venv .venv
    # -qq and no warnings: the build backend's notes on editable installs are not the user's business.
    export PYTHONWARNINGS=ignore
    .venv/bin/python -m pip install -qq --upgrade pip
    .venv/bin/python -m pip install -qq -e '.[dev]'
    touch "$stamp"

# Install the optional bench dependencies when missing.
[group('dev')]
_bench: _venv
    @.venv/bin/python -c "import hdrh, matplotlib, psutil, nautilus_trader" 2>/dev/null || { echo "installing the bench extras into .venv (once, about a minute) ..." >&2; PYTHONWARNINGS=ignore .venv/bin/python -m pip install -qq -e '.[dev,bench]'; }
