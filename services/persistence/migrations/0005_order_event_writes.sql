-- A batch of order events, fills and positions read in stream order, and its consumer's new position, in
-- one call: one round trip and one commit instead of ten (BEGIN, the position read, five writes, a read of
-- earlier events, the position moved, COMMIT). The statements are store.write_batch's, in its order, for a
-- batch that comes right after everything before it in its stream (``in_order``).
--
-- The position moves from below the batch's first sequence to its last, and the rows go in only if it did,
-- in the same statement: a position at or past the first sequence (the batch, or part of it, was stored
-- before) writes nothing and returns advanced = false; the caller then writes the batch in a transaction
-- that reads the position and leaves out what it covers. The moved row stays locked until the commit, so two
-- instances of one consumer (a mistake) write one after the other, as with SELECT ... FOR UPDATE.
--
-- SECURITY INVOKER (the default): it runs with the caller's rights, so persistence's role needs no more than
-- the rows it writes. EXECUTE is taken from PUBLIC and granted to the writer role (schema.grant_writer).
--
-- Planned for each call (plan_cache_mode = force_custom_plan), and by key. PL/pgSQL keeps a plan per statement
-- for the session and, after five calls, a generic one: made without the arrays' sizes, from the table statistics
-- of that moment, and kept until an ANALYZE of the table. A connection that started on a small orders table (a
-- fresh database, the first minutes of a day) would get a hash join over a sequential scan of orders for the
-- status update (reading a few pages is cheaper than an index probe per row then) and keep it while the table
-- grew: every batch would read the whole table, a cost growing with every order stored
-- (bench/order_event_writes.py --stale). Custom plans see the tables' current size and the arrays' lengths, and
-- look the batch's orders up by key once a table holds a few thousand rows.
--
-- The read of earlier events and the journal's recount for orders stored after their events start from the
-- array and probe the journal and orders by key, an order at a time: filtered with = ANY(array) instead, and
-- without statistics on the column (before autovacuum's first ANALYZE), the planner takes each element for
-- 0.5 % of the rows (its default) and reads the journal whole, and takes the recount's groups for a dozen rows
-- per order and reads orders whole too, even in custom plans.

CREATE FUNCTION write_order_events(
    p_consumer text, p_stream text, p_first_seq bigint, p_last_seq bigint,
    -- order_events: every event, once
    p_e_id text[], p_e_order text[], p_e_symbol text[], p_e_kind text[], p_e_status text[], p_e_qty numeric[],
    p_e_filled_qty numeric[], p_e_price numeric[], p_e_reason text[], p_e_command_id text[], p_e_ts_event bigint[],
    p_e_ts_init bigint[],
    -- orders: one row per acceptance or rejection
    p_o_id text[], p_o_strategy text[], p_o_symbol text[], p_o_side text[], p_o_qty numeric[], p_o_type text[],
    p_o_status text[], p_o_reason text[], p_o_ts_event bigint[], p_o_ts_updated bigint[], p_o_limit numeric[],
    p_o_stop numeric[], p_o_tif text[], p_o_expire_ts bigint[], p_o_post_only boolean[], p_o_reduce_only boolean[],
    -- fills
    p_f_id text[], p_f_order text[], p_f_symbol text[], p_f_side text[], p_f_qty numeric[], p_f_price numeric[],
    p_f_fee numeric[], p_f_venue text[], p_f_ts_event bigint[], p_f_ts_init bigint[], p_f_leaves numeric[],
    p_f_cum numeric[], p_f_liquidity text[],
    -- each replaced order's newest values
    p_r_id text[], p_r_qty numeric[], p_r_limit numeric[], p_r_stop numeric[], p_r_n bigint[],
    -- each order's furthest status in the batch past acceptance (store._furthest)
    p_s_id text[], p_s_status text[], p_s_filled_qty numeric[], p_s_ts_event bigint[],
    -- each symbol's newest position
    p_p_symbol text[], p_p_qty numeric[], p_p_avg_price numeric[], p_p_realized_pnl numeric[], p_p_version bigint[],
    p_p_ts_event bigint[],
    OUT advanced boolean, OUT n_order_events int, OUT n_orders int, OUT n_fills int, OUT n_orders_filled int,
    OUT n_positions int)
LANGUAGE plpgsql
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    inserted text[];
    late text[];
    moved int;
BEGIN
    n_order_events := 0; n_orders := 0; n_fills := 0; n_orders_filled := 0; n_positions := 0;
    UPDATE consumer_positions SET last_seq = p_last_seq, updated_at = now()
     WHERE consumer = p_consumer AND stream = p_stream AND last_seq < p_first_seq;
    advanced := FOUND;
    IF NOT advanced THEN
        RETURN;
    END IF;

    IF cardinality(p_e_id) > 0 THEN
        INSERT INTO order_events (id, client_order_id, symbol, kind, status, qty, filled_qty, price, reason,
                                  command_id, ts_event, ts_init)
        SELECT * FROM unnest(p_e_id, p_e_order, p_e_symbol, p_e_kind, p_e_status, p_e_qty, p_e_filled_qty,
                             p_e_price, p_e_reason, p_e_command_id, p_e_ts_event, p_e_ts_init)
        ON CONFLICT (id) DO NOTHING;
        GET DIAGNOSTICS n_order_events = ROW_COUNT;
    END IF;

    IF cardinality(p_o_id) > 0 THEN
        WITH ins AS (
            INSERT INTO orders (client_order_id, strategy, symbol, side, qty, order_type, status, reason, ts_event,
                                ts_updated, limit_price, stop_price, tif, expire_ts, post_only, reduce_only)
            SELECT * FROM unnest(p_o_id, p_o_strategy, p_o_symbol, p_o_side, p_o_qty, p_o_type, p_o_status,
                                 p_o_reason, p_o_ts_event, p_o_ts_updated, p_o_limit, p_o_stop, p_o_tif,
                                 p_o_expire_ts, p_o_post_only, p_o_reduce_only)
            ON CONFLICT (client_order_id) DO NOTHING
            RETURNING client_order_id)
        SELECT array_agg(client_order_id) INTO inserted FROM ins;
        n_orders := coalesce(cardinality(inserted), 0);
    END IF;

    IF cardinality(p_f_id) > 0 THEN
        INSERT INTO fills (fill_id, client_order_id, symbol, side, qty, price, fee, venue, ts_event, ts_init,
                           leaves_qty, cum_qty, liquidity)
        SELECT * FROM unnest(p_f_id, p_f_order, p_f_symbol, p_f_side, p_f_qty, p_f_price, p_f_fee, p_f_venue,
                             p_f_ts_event, p_f_ts_init, p_f_leaves, p_f_cum, p_f_liquidity)
        ON CONFLICT (fill_id) DO NOTHING;
        GET DIAGNOSTICS n_fills = ROW_COUNT;
    END IF;

    IF cardinality(p_r_id) > 0 THEN
        UPDATE orders o SET qty = r.qty, limit_price = r.limit_price, stop_price = r.stop_price, replaces = r.n
          FROM unnest(p_r_id, p_r_qty, p_r_limit, p_r_stop, p_r_n) AS r(id, qty, limit_price, stop_price, n)
         WHERE o.client_order_id = r.id AND o.replaces < r.n;
    END IF;

    -- Statuses last: each order's furthest in this batch, where further than its row's ...
    IF cardinality(p_s_id) > 0 THEN
        UPDATE orders o
           SET status = u.status, filled_qty = greatest(o.filled_qty, u.filled_qty), ts_updated = u.ts_event
          FROM unnest(p_s_id, p_s_status, p_s_filled_qty, p_s_ts_event) AS u(id, status, filled_qty, ts_event)
         WHERE o.client_order_id = u.id
           AND (order_status_rank(u.status) > order_status_rank(o.status)
                OR (u.status = 'partially_filled' AND o.status = 'partially_filled' AND u.filled_qty > o.filled_qty));
        GET DIAGNOSTICS n_orders_filled = ROW_COUNT;
    END IF;

    -- ... and from the whole journal for an order whose row came only now, after events of it that found no row.
    IF n_orders > 0 THEN
        -- Per inserted order, whether it has an event from before the batch (a probe of the journal by order,
        -- not = ANY: without the column's statistics the planner took each element for 0.5 % of the journal
        -- and read it whole).
        SELECT array_agg(i.id) INTO late
          FROM unnest(inserted) AS i(id)
         WHERE EXISTS (SELECT FROM order_events e WHERE e.client_order_id = i.id AND e.id <> ALL(p_e_id));
        IF late IS NOT NULL THEN
            -- Per order of the array, its events (a join, not = ANY: the planner then counts one row per order
            -- and looks each up by key).
            UPDATE orders o
               SET status = j.status, filled_qty = greatest(o.filled_qty, j.filled_qty), ts_updated = j.ts_event
              FROM unnest(late) AS l(id)
                   CROSS JOIN LATERAL (
                       SELECT (array_agg(e.status ORDER BY order_status_rank(e.status) DESC,
                                         e.filled_qty DESC NULLS LAST))[1] AS status,
                              (array_agg(e.ts_event ORDER BY order_status_rank(e.status) DESC,
                                         e.filled_qty DESC NULLS LAST))[1] AS ts_event,
                              coalesce(max(e.filled_qty), 0) AS filled_qty
                         FROM order_events e
                        WHERE e.client_order_id = l.id AND e.status IS NOT NULL) j
             WHERE o.client_order_id = l.id AND j.status IS NOT NULL
               AND (order_status_rank(j.status) > order_status_rank(o.status)
                    OR (j.status = 'partially_filled' AND o.status = 'partially_filled'
                        AND j.filled_qty > o.filled_qty));
            GET DIAGNOSTICS moved = ROW_COUNT;
            n_orders_filled := n_orders_filled + moved;
        END IF;
    END IF;

    -- Positions are snapshots numbered by version: only a newer one replaces the stored row.
    IF cardinality(p_p_symbol) > 0 THEN
        INSERT INTO positions (symbol, qty, avg_price, realized_pnl, version, ts_event)
        SELECT * FROM unnest(p_p_symbol, p_p_qty, p_p_avg_price, p_p_realized_pnl, p_p_version, p_p_ts_event)
        ON CONFLICT (symbol) DO UPDATE
           SET qty = excluded.qty, avg_price = excluded.avg_price, realized_pnl = excluded.realized_pnl,
               version = excluded.version, ts_event = excluded.ts_event, stored_at = now()
         WHERE positions.version < excluded.version;
        GET DIAGNOSTICS n_positions = ROW_COUNT;
    END IF;
END
$$;

REVOKE ALL ON FUNCTION write_order_events FROM PUBLIC;
