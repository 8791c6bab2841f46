-- Market data, signals, orders, fills and positions. Times are integer nanoseconds since the Unix epoch
-- (UTC), exactly as on the wire; prices, quantities and money are NUMERIC, exactly as on the wire.

CREATE TABLE quotes (
    id          text PRIMARY KEY,
    symbol      text    NOT NULL,
    ts_event    bigint  NOT NULL,
    ts_init     bigint  NOT NULL,
    bid         numeric NOT NULL,
    ask         numeric NOT NULL,
    bid_size    numeric,
    ask_size    numeric,
    stored_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX quotes_symbol_ts ON quotes (symbol, ts_event);

CREATE TABLE trades (
    id          text PRIMARY KEY,
    symbol      text    NOT NULL,
    ts_event    bigint  NOT NULL,
    ts_init     bigint  NOT NULL,
    price       numeric NOT NULL,
    size        numeric NOT NULL,
    aggressor   text    NOT NULL,
    stored_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX trades_symbol_ts ON trades (symbol, ts_event);

CREATE TABLE signals (
    id          text PRIMARY KEY,
    strategy    text    NOT NULL,
    symbol      text    NOT NULL,
    quote_id    text    NOT NULL,
    ts_event    bigint  NOT NULL,
    ts_init     bigint  NOT NULL,
    direction   text    NOT NULL CHECK (direction IN ('up', 'down')),
    fast        numeric NOT NULL,
    slow        numeric NOT NULL,
    target      numeric NOT NULL,
    stored_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX signals_symbol_ts ON signals (symbol, ts_event);

CREATE TABLE orders (
    client_order_id text PRIMARY KEY,
    strategy        text    NOT NULL,
    symbol          text    NOT NULL,
    side            text    NOT NULL CHECK (side IN ('buy', 'sell')),
    qty             numeric NOT NULL,
    order_type      text    NOT NULL,
    status          text    NOT NULL CHECK (status IN ('accepted', 'rejected', 'filled')),
    reason          text,
    ts_event        bigint  NOT NULL,
    ts_updated      bigint  NOT NULL,
    stored_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX orders_symbol ON orders (symbol, ts_event);

CREATE TABLE fills (
    fill_id         text PRIMARY KEY,
    client_order_id text    NOT NULL,
    symbol          text    NOT NULL,
    side            text    NOT NULL CHECK (side IN ('buy', 'sell')),
    qty             numeric NOT NULL,
    price           numeric NOT NULL,
    fee             numeric NOT NULL,
    venue           text    NOT NULL,
    ts_event        bigint  NOT NULL,
    ts_init         bigint  NOT NULL,
    stored_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX fills_order ON fills (client_order_id);

CREATE TABLE positions (
    symbol          text PRIMARY KEY,
    qty             numeric NOT NULL,
    avg_price       numeric NOT NULL,
    realized_pnl    numeric NOT NULL,
    version         bigint  NOT NULL,
    ts_event        bigint  NOT NULL,
    stored_at       timestamptz NOT NULL DEFAULT now()
);
