-- Order types (limit, stop-market, stop-limit), time in force, flags, partial fills, cancels, expiries and
-- replaces. Every event of an order is a row of order_events (the journal); orders holds each order as it
-- stands now, its status recomputed from the journal, so that it only ever moves forward whatever order
-- the events are stored in.

-- How far a status is along: accepted, then partially filled, then one of the four ends.
CREATE FUNCTION order_status_rank(status text) RETURNS int
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT CASE status WHEN 'accepted' THEN 1 WHEN 'partially_filled' THEN 2 ELSE 3 END $$;

ALTER TABLE orders DROP CONSTRAINT orders_status_check;
ALTER TABLE orders ADD CONSTRAINT orders_status_check
    CHECK (status IN ('accepted', 'partially_filled', 'filled', 'canceled', 'rejected', 'expired'));
ALTER TABLE orders
    ADD COLUMN limit_price  numeric,
    ADD COLUMN stop_price   numeric,
    ADD COLUMN tif          text    NOT NULL DEFAULT 'gtc' CHECK (tif IN ('gtc', 'ioc', 'fok', 'gtd')),
    ADD COLUMN expire_ts    bigint,
    ADD COLUMN post_only    boolean NOT NULL DEFAULT false,
    ADD COLUMN reduce_only  boolean NOT NULL DEFAULT false,
    ADD COLUMN filled_qty   numeric NOT NULL DEFAULT 0,
    ADD COLUMN replaces     bigint  NOT NULL DEFAULT 0;
-- Before order types an order filled in one fill.
UPDATE orders SET filled_qty = qty WHERE status = 'filled';

ALTER TABLE fills
    ADD COLUMN leaves_qty   numeric NOT NULL DEFAULT 0,
    ADD COLUMN cum_qty      numeric NOT NULL DEFAULT 0,
    ADD COLUMN liquidity    text    NOT NULL DEFAULT 'taker' CHECK (liquidity IN ('taker', 'maker'));
UPDATE fills SET cum_qty = qty;

CREATE TABLE order_events (
    id              text PRIMARY KEY,
    client_order_id text    NOT NULL,
    symbol          text    NOT NULL,
    kind            text    NOT NULL CHECK (kind IN ('accepted', 'rejected', 'partially_filled', 'filled',
                                                     'triggered', 'canceled', 'expired', 'replaced',
                                                     'cancel_rejected')),
    -- The order's status after the event; null for those that change none (triggered, replaced, a refused
    -- cancel or replace).
    status          text    CHECK (status IN ('accepted', 'partially_filled', 'filled', 'canceled', 'rejected',
                                              'expired')),
    qty             numeric,
    filled_qty      numeric,
    price           numeric,
    reason          text,
    command_id      text,
    ts_event        bigint  NOT NULL,
    ts_init         bigint  NOT NULL,
    stored_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX order_events_order ON order_events (client_order_id);
