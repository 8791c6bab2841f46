// The live dashboard: one WebSocket brings the sections that changed; each is drawn by its function below.
// Everything from the server is written as text (textContent), never as HTML.
"use strict";

(() => {
  const token = document.querySelector('meta[name="rrr-token"]').content;
  const $ = (id) => document.getElementById(id);
  const PALETTE = ["#58a6ff", "#3fb950", "#d29922", "#bc8cff", "#ff7b72", "#39c5cf", "#e3b341", "#f778ba",
                   "#a5d6ff", "#7ee787", "#ffa657", "#d2a8ff", "#79c0ff"];
  let lastMessage = 0;

  // ---- numbers and times ----
  const formats = new Map();
  function numberFormat(digits, sign) {
    const key = `${digits}:${sign}`;
    if (!formats.has(key)) {
      formats.set(key, new Intl.NumberFormat("en-US", {
        minimumFractionDigits: digits, maximumFractionDigits: digits, signDisplay: sign ? "exceptZero" : "auto",
      }));
    }
    return formats.get(key);
  }
  function toNumber(x) { return x === null || x === undefined || x === "" ? null : Number(x); }
  // Money: 2 decimals from 1 up, else 5 (a pip's worth of PnL on one unit of FX); a column of money takes the
  // decimals of its largest value, so that it lines up.
  function moneyDigits(values) {
    const largest = Math.max(0, ...values.map((v) => Math.abs(toNumber(v) || 0)));
    return largest >= 1 ? 2 : 5;
  }
  function money(x, sign = true, digits = null) {
    const n = toNumber(x);
    if (n === null || !Number.isFinite(n)) return "–";
    return numberFormat(digits ?? moneyDigits([n]), sign).format(n);
  }
  // Prices and quantities as the database holds them (exact decimal text): trailing zeros dropped, at least
  // `least` decimals, thousands separated; past `most` decimals, rounded.
  function decimal(x, least, most) {
    if (x === null || x === undefined || x === "") return "–";
    const parts = /^(-?)(\d+)(?:\.(\d*))?$/.exec(String(x));
    if (!parts || (parts[3] || "").replace(/0+$/, "").length > most) {
      const n = Number(x);
      return Number.isFinite(n)
        ? new Intl.NumberFormat("en-US", { minimumFractionDigits: least, maximumFractionDigits: most }).format(n)
        : "–";
    }
    const fraction = (parts[3] || "").replace(/0+$/, "").padEnd(least, "0");
    const whole = parts[2].replace(/\B(?=(\d{3})+(?!\d))/g, ",");
    return parts[1] + whole + (fraction ? "." + fraction : "");
  }
  // A column of prices shows every price with as many decimals as the longest needs (2 to 8).
  function priceDigits(values) {
    const places = values.map((v) => {
      const parts = /^-?\d+(?:\.(\d*))?$/.exec(String(v ?? ""));
      return parts ? (parts[1] || "").replace(/0+$/, "").length : 2;
    });
    return Math.min(8, Math.max(2, ...places));
  }
  function price(x, digits = 2) { return decimal(x, digits, 8); }
  function qty(x) { return decimal(x, 0, 8); }
  function count(x) { return x === null || x === undefined ? "–" : new Intl.NumberFormat("en-US").format(x); }
  function rate(x) { return x === null || x === undefined ? "–" : numberFormat(x >= 100 ? 0 : 1, false).format(x); }
  function fixed(x, digits) { return x === null || x === undefined ? "–" : numberFormat(digits, false).format(x); }
  function signClass(x) { const n = toNumber(x); return n > 0 ? "pos" : n < 0 ? "neg" : ""; }
  function eventTime(ns, length = 23) {
    if (ns === null || ns === undefined) return "–";
    const d = new Date(Number(ns) / 1e6);
    return Number.isNaN(d.getTime()) ? "–" : d.toISOString().replace("T", " ").slice(0, length);
  }
  function plural(n, one, many) { return `${count(n)} ${n === 1 ? one : many}`; }

  // ---- tables: rows kept and updated in place ----
  // A list of the latest (orders, fills) marks its new rows; a table of standing values (positions) marks the
  // cells that changed; a table that changes all the time (services) marks nothing.
  function mark(el) {
    el.classList.add("flash");
    requestAnimationFrame(() => requestAnimationFrame(() => el.classList.remove("flash")));
  }
  // cells(row) -> [[text, className, title?], ...]
  function fillTable(bodyId, emptyId, rows, cells, { key = null, flashCells = false } = {}) {
    const body = $(bodyId);
    const known = new Set(Array.from(body.rows, (tr) => tr.dataset.key));
    while (body.rows.length > rows.length) body.deleteRow(-1);
    rows.forEach((row, i) => {
      const values = cells(row);
      const tr = body.rows[i] || body.insertRow();
      while (tr.cells.length < values.length) tr.insertCell();
      values.forEach(([text, cls, title], j) => {
        const td = tr.cells[j];
        if (td.textContent !== text) {
          if (flashCells && td.textContent !== "") mark(td);
          td.textContent = text;
        }
        const className = (cls || "") + (td.classList.contains("flash") ? " flash" : "");
        if (td.className !== className) td.className = className;
        if (title !== undefined) td.title = title;
      });
      if (key) {
        const k = key(row);
        if (tr.dataset.key !== k) {
          tr.dataset.key = k;
          if (known.size && !known.has(k)) mark(tr);
        }
      }
    });
    $(emptyId).hidden = rows.length > 0;
  }
  function setText(id, text, cls) {
    const el = $(id);
    if (el.textContent !== text) el.textContent = text;
    if (cls !== undefined && el.className !== cls) el.className = cls;
  }
  function pill(id, label, ok, title) {
    const el = $(id);
    el.textContent = label;
    el.className = "pill " + (ok === true ? "pill-ok" : ok === false ? "pill-bad" : "pill-wait");
    el.title = title;
  }

  // ---- charts ----
  const charts = {};
  function chartSize(el) { return { width: Math.max(el.clientWidth, 200), height: 260 }; }
  // The throughput chart always spans its last five minutes, however few samples it has yet.
  const WINDOW_S = { throughput: 300 };
  function makeChart(key, el, names, timeIsEvent) {
    if (charts[key]) charts[key].destroy();
    const axis = { stroke: "#8b949e", grid: { stroke: "#2d333b", width: 1 }, ticks: { stroke: "#2d333b" } };
    const series = [{ label: timeIsEvent ? "event time" : "time" }].concat(names.map((name, i) => ({
      label: name,
      stroke: PALETTE[i % PALETTE.length],
      width: i === 0 ? 2.5 : 1.5,
      spanGaps: true,
      points: { show: false },
      value: (u, v) => (v === null || v === undefined ? "–" : key === "equity" ? money(v) : rate(v)),
    })));
    charts[key] = new uPlot({
      ...chartSize(el),
      series,
      axes: [axis, {
        ...axis,
        size: 70,
        values: (u, vals) => vals.map((v) => (key === "equity" ? money(v, false, moneyDigits(vals)) : rate(v))),
      }],
      scales: { x: WINDOW_S[key] ? { time: true, range: (u, min, max) => [max - WINDOW_S[key], max] } : { time: true } },
      tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), timeIsEvent ? "Etc/UTC" : undefined),
      legend: { live: true },
      cursor: { drag: { x: false, y: false } },
    }, [[]].concat(names.map(() => [])), el);
    charts[key].names = names.join("\u0000");
    return charts[key];
  }
  function drawChart(key, elId, section, timeIsEvent) {
    const el = $(elId);
    let chart = charts[key];
    if (!chart || chart.names !== section.names.join("\u0000")) chart = makeChart(key, el, section.names, timeIsEvent);
    chart.setData([section.ts].concat(section.values));
  }
  const resizer = new ResizeObserver(() => {
    for (const [key, chart] of Object.entries(charts)) {
      const el = $(key + "-chart");
      const size = chartSize(el);
      if (chart.width !== size.width) chart.setSize(size);
    }
  });
  resizer.observe($("equity-chart"));
  resizer.observe($("throughput-chart"));

  // ---- sections ----
  const draw = {
    summary(s) {
      setText("kpi-pnl", money(s.pnl), "value " + signClass(s.pnl));
      setText("kpi-pnl-note", `fees ${money(s.fees, false)}, at the mid`);
      const orders = Object.values(s.orders).reduce((a, b) => a + b, 0);
      setText("kpi-orders", count(orders));
      const rejected = s.orders.rejected || 0;
      setText("kpi-orders-note", Object.entries(s.orders).sort().map(([k, v]) => `${k} ${count(v)}`).join(" · ") || "none yet",
        "note" + (rejected ? " neg" : ""));
      setText("kpi-fills", count(s.fills));
      setText("kpi-fills-note", s.last_fill_ts ? `last ${eventTime(s.last_fill_ts, 19)}` : "none yet");
      setText("kpi-open", count(s.open_positions));
      setText("kpi-open-note",
        `${plural(s.position_lines, "symbol", "symbols")} · ${plural(s.strategy_lines, "strategy line", "strategy lines")}`);
      setText("kpi-gross", money(s.gross_exposure, false));
      setText("kpi-net", `net ${money(s.net_exposure)}`);
    },
    strategies(rows) {
      setText("strategies-count", rows.length ? plural(rows.length, "line", "lines") : "");
      const pnlDigits = moneyDigits(rows.map((r) => r[4]));
      const feeDigits = moneyDigits(rows.map((r) => r[5]));
      const markDigits = priceDigits(rows.map((r) => r[3]));
      fillTable("strategies-body", "strategies-empty", rows, ([strategy, symbol, q, mark, pnl, fees, fills]) => [
        [strategy, "id"], [symbol, ""], [qty(q), "num " + signClass(q)], [price(mark, markDigits), "num"],
        [money(pnl, true, pnlDigits), "num " + signClass(pnl)], [money(fees, false, feeDigits), "num"],
        [count(fills), "num"],
      ], { flashCells: true });
    },
    positions(rows) {
      const digits = moneyDigits(rows.flatMap((r) => [r[4], r[5]]));
      const places = priceDigits(rows.flatMap((r) => [r[2], r[3]]));
      fillTable("positions-body", "positions-empty", rows, ([symbol, q, avg, mark, realized, unrealized]) => [
        [symbol, ""], [qty(q), "num " + signClass(q)], [toNumber(q) ? price(avg, places) : "–", "num"],
        [price(mark, places), "num"],
        [money(realized, true, digits), "num " + signClass(realized)],
        [money(unrealized, true, digits), "num " + signClass(unrealized)],
      ], { flashCells: true });
    },
    orders(rows) {
      fillTable("orders-body", "orders-empty", rows, ([id, strategy, symbol, side, q, type, status, reason, ts]) => [
        [eventTime(ts), "", id], [strategy, "id"], [symbol, ""], [side, side], [qty(q), "num"], [type, ""],
        [status, "status-" + status, reason || status],
      ], { key: (row) => row[0] });
    },
    fills(rows) {
      const feeDigits = moneyDigits(rows.map((r) => r[6]));
      const places = priceDigits(rows.map((r) => r[5]));
      fillTable("fills-body", "fills-empty", rows, ([id, order, symbol, side, q, p, fee, ts]) => [
        [eventTime(ts), "", `${id} (order ${order})`], [symbol, ""], [side, side], [qty(q), "num"],
        [price(p, places), "num"], [money(fee, false, feeDigits), "num"],
      ], { key: (row) => row[0] });
    },
    equity(e) {
      $("equity-empty").hidden = e.ts.length > 0;
      $("equity-chart").hidden = e.ts.length === 0;
      // One strategy: its line is the total's, drawn once under its own name.
      const one = e.names.length === 2 ? { ...e, names: [e.names[1]], values: [e.values[0]] } : e;
      if (e.ts.length) drawChart("equity", "equity-chart", one, true);
      setText("kpi-dd", money(e.max_drawdown, false));
    },
    trading(t) {
      const halted = Object.entries(t.states);
      if (!halted.length) {
        setText("risk-trading", "ACTIVE", "pos");
        return;
      }
      const words = halted.map(([scope, s]) => `${s.state.toUpperCase()} ${scope}`);
      setText("risk-trading", words.join(", "), "neg");
      $("risk-trading").title = halted.map(([scope, s]) => `${scope}: ${s.reason} (${s.source})`).join("\n");
    },
    risk(r) {
      setText("risk-rejected", count(r.rejected), r.rejected ? "neg" : "");
      setText("risk-net", money(r.net_exposure));
      setText("risk-gross", money(r.gross_exposure, false));
      setText("risk-dd", money(r.max_drawdown, false));
      const list = $("risk-rejections");
      list.replaceChildren();
      if (!r.latest_rejections.length) {
        const li = document.createElement("li");
        li.className = "muted";
        li.textContent = "none";
        list.append(li);
      }
      for (const [id, symbol, reason, ts] of r.latest_rejections) {
        const li = document.createElement("li");
        li.textContent = `${eventTime(ts)} ${symbol}: ${reason}`;
        li.title = id;
        list.append(li);
      }
    },
    health(h) {
      const ok = h.nats === "connected";
      pill("nats", ok ? "NATS" : `NATS: ${h.nats}`, ok ? true : h.nats === "connecting" || h.nats === "reconnecting" ? null : false,
        "the dashboard's connection to NATS: " + h.nats);
      fillTable("services-body", "services-empty", h.instances,
        ([instance, service, shard, status, age, perS, handlerMs, pending, lag]) => [
          [instance, "id", `${service}, shard ${shard}`], [status, "status-" + status],
          [age === null ? "–" : `${fixed(age, 1)} s ago`, "num"], [rate(perS), "num"], [fixed(handlerMs, 2), "num"],
          [count(pending), "num"], [fixed(lag, 3), "num"],
        ]);
      fillTable("feeds-body", "feeds-empty", h.feeds,
        ([instance, venue, connected, ageMs, ticks, reconnects, gaps, malformed]) => [
          [venue, ""], [instance, "id"], [connected ? "connected" : "down", connected ? "status-ok" : "status-down"],
          [`${count(ageMs)} ms`, "num"], [rate(ticks), "num"], [count(reconnects), "num"], [count(gaps), "num"],
          [count(malformed), "num " + (malformed ? "neg" : "")],
        ]);
    },
    throughput(t) { if (t.ts.length) drawChart("throughput", "throughput-chart", t, false); },
    database(d) {
      pill("db", d.ok ? "database" : "database: unreachable", d.ok, d.ok
        ? `read in ${fixed(d.read_ms, 0)} ms, every ${fixed(d.every_ms, 0)} ms` : d.error);
      footer.database = d;
      drawFooter();
    },
    meta(m) { footer.meta = m; drawFooter(); },
    halt(h) {
      $("halt-note").textContent = h.available
        ? "Asks for confirmation, then halts every shard."
        : "This version of the system has no halt control: a confirmed request is checked and logged, and nothing is sent.";
    },
  };
  const footer = {};
  function drawFooter() {
    const parts = [];
    if (footer.meta) {
      parts.push(`${footer.meta.clients} of at most ${footer.meta.max_clients} browsers`,
        `at most ${footer.meta.push_hz} updates/s`);
    }
    if (footer.database) {
      parts.push(`database read in ${fixed(footer.database.read_ms, 0)} ms, every ${fixed(footer.database.every_ms, 0)} ms`);
    }
    setText("footer", parts.join(" · "));
  }

  // ---- the live connection ----
  let delayMs = 1000;
  function connect() {
    const socket = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`);
    socket.onopen = () => { delayMs = 1000; pill("conn", "live", true, "updates arrive as they happen"); };
    socket.onmessage = (event) => {
      lastMessage = Date.now();
      const sections = JSON.parse(event.data);
      for (const [name, value] of Object.entries(sections)) {
        if (draw[name]) {
          try { draw[name](value); } catch (err) { console.error(name, err); }
        }
      }
    };
    socket.onclose = (event) => {
      const busy = event.code === 1013;
      pill("conn", busy ? "too many browsers open" : "reconnecting", false,
        busy ? event.reason || "close another dashboard tab" : "the connection dropped; trying again");
      setTimeout(connect, busy ? 10000 : delayMs);
      delayMs = Math.min(delayMs * 2, 10000);
    };
  }
  setInterval(() => {
    if (lastMessage) setText("updated", `updated ${Math.max(0, Math.round((Date.now() - lastMessage) / 1000))} s ago`);
  }, 1000);
  connect();

  // ---- the halt: a confirmation, then one POST carrying the page's token ----
  const dialog = $("halt-dialog");
  const confirmInput = $("halt-confirm");
  $("halt-open").addEventListener("click", () => {
    confirmInput.value = "";
    $("halt-reason").value = "";
    $("halt-error").textContent = "";
    $("halt-send").disabled = true;
    dialog.showModal();
    confirmInput.focus();
  });
  confirmInput.addEventListener("input", () => { $("halt-send").disabled = confirmInput.value !== "HALT"; });
  $("halt-cancel").addEventListener("click", () => dialog.close());
  $("halt-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    if (confirmInput.value !== "HALT") return;
    $("halt-send").disabled = true;
    let answer;
    try {
      const response = await fetch("/api/halt", {
        method: "POST",
        headers: { "Content-Type": "application/json", "X-RRR-Token": token },
        body: JSON.stringify({ confirm: "HALT", reason: $("halt-reason").value }),
        credentials: "same-origin",
      });
      answer = await response.json();
    } catch (err) {
      answer = { ok: false, error: `the dashboard did not answer (${err})` };
    }
    const when = new Date().toISOString().slice(11, 19);
    if (answer.ok) {
      setText("halt-result", `${when} UTC: halt sent (${answer.id}): ${answer.outcome}`, "note pos");
      dialog.close();
    } else {
      $("halt-error").textContent = answer.error;
      setText("halt-result", `${when} UTC: not halted: ${answer.error}`, "note neg");
      $("halt-send").disabled = confirmInput.value !== "HALT";
    }
  });
})();
