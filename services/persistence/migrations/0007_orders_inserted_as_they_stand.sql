-- Orders accepted and filled in the same batch (every market order) were inserted as accepted and then updated to
-- their furthest status by the same call: two versions of each row, the second often on another page (a new entry
-- in both of the table's indexes) and a dead tuple for the vacuum. The status update was the largest statement of
-- write_order_events under load (pg_stat_statements at 40,000 quotes/s, 2,450 orders/s: 39 % of the function's
-- time). An order is now inserted with its furthest status in the batch, and the update is left to the orders
-- whose rows were stored by earlier batches. The rest of the function is as in 0006.

CREATE OR REPLACE FUNCTION write_order_events(
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
    rest_id text[];
    rest_status text[];
    rest_filled_qty numeric[];
    rest_ts_event bigint[];
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

    -- Each order inserted with its furthest status in this batch where that is further than its acceptance:
    -- an order accepted and filled in one batch is one row written, not a row and its update.
    IF cardinality(p_o_id) > 0 THEN
        WITH o AS (
            SELECT o.*, s.status AS s_status, s.filled_qty AS s_filled_qty, s.ts_event AS s_ts_event,
                   s.id IS NOT NULL
                   AND (order_status_rank(s.status) > order_status_rank(o.status)
                        OR (s.status = 'partially_filled' AND o.status = 'partially_filled' AND s.filled_qty > 0))
                   AS further
              FROM unnest(p_o_id, p_o_strategy, p_o_symbol, p_o_side, p_o_qty, p_o_type, p_o_status, p_o_reason,
                          p_o_ts_event, p_o_ts_updated, p_o_limit, p_o_stop, p_o_tif, p_o_expire_ts, p_o_post_only,
                          p_o_reduce_only)
                   AS o(id, strategy, symbol, side, qty, order_type, status, reason, ts_event, ts_updated,
                        limit_price, stop_price, tif, expire_ts, post_only, reduce_only)
                   LEFT JOIN unnest(p_s_id, p_s_status, p_s_filled_qty, p_s_ts_event)
                             AS s(id, status, filled_qty, ts_event) ON s.id = o.id),
        ins AS (
            INSERT INTO orders (client_order_id, strategy, symbol, side, qty, order_type, status, reason, ts_event,
                                ts_updated, limit_price, stop_price, tif, expire_ts, post_only, reduce_only,
                                filled_qty)
            SELECT id, strategy, symbol, side, qty, order_type, CASE WHEN further THEN s_status ELSE status END,
                   reason, ts_event, CASE WHEN further THEN s_ts_event ELSE ts_updated END, limit_price,
                   stop_price, tif, expire_ts, post_only, reduce_only,
                   CASE WHEN further THEN greatest(0, s_filled_qty) ELSE 0 END
              FROM o
            ON CONFLICT (client_order_id) DO NOTHING
            RETURNING client_order_id)
        SELECT array_agg(ins.client_order_id), count(*) FILTER (WHERE o.further)
          INTO inserted, n_orders_filled
          FROM ins JOIN o ON o.id = ins.client_order_id;
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

    -- Statuses last: each order's furthest in this batch, where further than its row's, for the orders whose
    -- rows were there before the batch (those inserted now have theirs already) ...
    IF cardinality(p_s_id) > 0 THEN
        SELECT array_agg(u.id), array_agg(u.status), array_agg(u.filled_qty), array_agg(u.ts_event)
          INTO rest_id, rest_status, rest_filled_qty, rest_ts_event
          FROM unnest(p_s_id, p_s_status, p_s_filled_qty, p_s_ts_event) AS u(id, status, filled_qty, ts_event)
               LEFT JOIN unnest(inserted) AS i(id) ON i.id = u.id
         WHERE i.id IS NULL;
    END IF;
    IF rest_id IS NOT NULL THEN
        UPDATE orders o
           SET status = u.status, filled_qty = greatest(o.filled_qty, u.filled_qty), ts_updated = u.ts_event
          FROM unnest(rest_id, rest_status, rest_filled_qty, rest_ts_event) AS u(id, status, filled_qty, ts_event)
         WHERE o.client_order_id = u.id
           AND (order_status_rank(u.status) > order_status_rank(o.status)
                OR (u.status = 'partially_filled' AND o.status = 'partially_filled' AND u.filled_qty > o.filled_qty));
        GET DIAGNOSTICS moved = ROW_COUNT;
        n_orders_filled := n_orders_filled + moved;
    END IF;

    -- ... and from the whole journal for an order whose row came only now, after events of it that found no row.
    IF n_orders > 0 THEN
        -- Per inserted order, whether it has an event from before the batch: more events in the journal than
        -- the batch brought of it (all of which are in the journal now). A count by a probe of the journal by
        -- order, not = ANY: without the column's statistics the planner took each element for 0.5 % of the
        -- journal and read it whole.
        SELECT array_agg(i.id) INTO late
          FROM unnest(inserted) AS i(id)
               LEFT JOIN (SELECT b.id, count(DISTINCT b.event) AS n
                            FROM unnest(p_e_order, p_e_id) AS b(id, event) GROUP BY b.id) AS b USING (id)
         WHERE (SELECT count(*) FROM order_events e WHERE e.client_order_id = i.id) > coalesce(b.n, 0);
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
