-- Per strategy and symbol, what the strategy's fills add up to: its position, the cash it paid and received
-- (fees charged), its fees, and its PnL valued at the symbol's latest stored quote (cash plus the position at
-- the mid). The strategy of a fill is its order id's first part (ids are <strategy>-<quote id>). Exact
-- (numeric), and independent of the order in which fills were stored: a total PnL does not depend on the
-- path, unlike its split into realized and unrealized by average cost (the positions table keeps that, per
-- symbol, as execution computes it).

CREATE VIEW strategy_positions AS
WITH per_symbol AS (
    SELECT split_part(client_order_id, '-', 1) AS strategy,
           symbol,
           sum(CASE WHEN side = 'buy' THEN qty ELSE -qty END) AS qty,
           sum(CASE WHEN side = 'buy' THEN -qty * price ELSE qty * price END) - sum(fee) AS cash,
           sum(fee) AS fees,
           count(*) AS fills
      FROM fills
     GROUP BY 1, 2
)
SELECT p.strategy, p.symbol, p.qty, p.cash, p.fees, p.fills, latest.mid AS mark,
       p.cash + p.qty * latest.mid AS pnl
  FROM per_symbol p
  LEFT JOIN LATERAL (
      SELECT (q.bid + q.ask) / 2 AS mid
        FROM quotes q
       WHERE q.symbol = p.symbol
       ORDER BY q.ts_event DESC
       LIMIT 1
  ) latest ON true;
