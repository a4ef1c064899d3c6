// The live dashboard: reads /dashboard/stream (Server-Sent Events) with fetch(), because
// EventSource cannot send the Authorization header, and redraws the page from each frame.
// A `snapshot` frame replaces the state, a `delta` replaces the sections it carries.
// Reconnects by itself with backoff and resumes with Last-Event-ID.
"use strict";

(function () {
  const TOKEN_KEY = "dashboard.token";
  // Sales figures are integer cents of the shop's one currency.
  const CURRENCY = "USD";
  const STREAM = "/dashboard/stream";
  // The server sends a comment every 15 s; silence for this long means a dead connection.
  const SILENCE_MS = 45000;
  const BACKOFF_MIN_MS = 1000;
  const BACKOFF_MAX_MS = 30000;

  const $ = (id) => document.getElementById(id);
  const money = new Intl.NumberFormat(undefined, { style: "currency", currency: CURRENCY });
  const count = new Intl.NumberFormat();
  const timeOfDay = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
  const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });

  // What tests read: frames applied and the merged state.
  const dashboard = { frames: 0, state: {} };
  window.__dashboard = dashboard;

  let token = null;
  let lastEventId = null;
  let backoff = BACKOFF_MIN_MS;
  let controller = null;
  const charts = {};

  // --- the token: from #token=... once, else this tab's storage, else the form ---

  function takeTokenFromFragment() {
    const fragment = new URLSearchParams(window.location.hash.replace(/^#/, ""));
    const given = fragment.get("token");
    if (given) {
      sessionStorage.setItem(TOKEN_KEY, given);
      // Out of the address bar and the history, so it is not shared or bookmarked.
      history.replaceState(null, "", window.location.pathname + window.location.search);
    }
  }

  function askForToken(message) {
    token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    if (controller) controller.abort();
    setConnection("offline", "Signed out");
    $("login-error").textContent = message || "";
    $("login").hidden = false;
    $("board").hidden = true;
    $("sign-out").hidden = true;
    $("token-input").focus();
  }

  function start(withToken) {
    token = withToken;
    $("login").hidden = true;
    $("board").hidden = false;
    $("sign-out").hidden = false;
    connect();
  }

  // --- the stream ---

  function setConnection(state, text) {
    const conn = $("conn");
    conn.dataset.state = state;
    conn.textContent = text;
  }

  function reconnectLater() {
    if (!token) return;
    // Jitter spreads the reconnects of many pages after a restart.
    const wait = backoff * (0.75 + Math.random() * 0.5);
    backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
    setConnection("offline", "Offline, retrying in " + Math.round(wait / 1000) + " s");
    setTimeout(connect, wait);
  }

  async function connect() {
    if (!token) return;
    setConnection("connecting", "Connecting…");
    controller = new AbortController();
    const mine = controller;
    let silence = null;
    const heard = () => {
      clearTimeout(silence);
      silence = setTimeout(() => mine.abort(), SILENCE_MS);
    };
    const headers = { Authorization: "Bearer " + token, Accept: "text/event-stream" };
    if (lastEventId) headers["Last-Event-ID"] = lastEventId;
    try {
      heard();
      const response = await fetch(STREAM, { headers, cache: "no-store", signal: mine.signal });
      if (response.status === 401 || response.status === 403) {
        clearTimeout(silence);
        askForToken(response.status === 401
          ? "That token was not accepted (expired or invalid)."
          : "That token is not a staff token.");
        return;
      }
      if (!response.ok || !response.body) throw new Error("HTTP " + response.status);
      await readEvents(response.body, heard);
    } catch (e) {
      // Aborted, network down or server gone: all mean reconnect.
    }
    clearTimeout(silence);
    if (mine === controller && token) reconnectLater();
  }

  // Parses the event stream: events end with a blank line; `id`, `event` and `data`
  // fields; lines starting with `:` are comments (keep-alives).
  async function readEvents(body, heard) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      heard();
      buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const event = { name: "message", id: null, data: [] };
        for (const line of block.split("\n")) {
          if (line === "" || line.startsWith(":")) continue;
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          let value = colon < 0 ? "" : line.slice(colon + 1);
          if (value.startsWith(" ")) value = value.slice(1);
          if (field === "event") event.name = value;
          else if (field === "id") event.id = value;
          else if (field === "data") event.data.push(value);
        }
        if (event.data.length) apply(event);
      }
    }
  }

  function apply(event) {
    let data;
    try {
      data = JSON.parse(event.data.join("\n"));
    } catch (e) {
      return;
    }
    if (event.name === "snapshot") dashboard.state = data;
    else if (event.name === "delta") Object.assign(dashboard.state, data);
    else return;
    if (event.id !== null) lastEventId = event.id;
    dashboard.frames += 1;
    backoff = BACKOFF_MIN_MS;
    render(dashboard.state);
    $("position").dataset.value = lastEventId || "";
    $("position").textContent = lastEventId || "–";
    $("updated").textContent = dateTime.format(new Date());
    setConnection("live", "Live");
  }

  // --- drawing ---

  function setFigure(id, value, text) {
    const el = $(id);
    el.dataset.value = String(value);
    el.textContent = text;
  }

  function cents(n) {
    return money.format((n || 0) / 100);
  }

  function item(attrs, parts) {
    const li = document.createElement("li");
    for (const [k, v] of Object.entries(attrs)) li.setAttribute(k, v);
    for (const [cls, text] of parts) {
      const span = document.createElement("span");
      if (cls) span.className = cls;
      span.textContent = text;
      li.appendChild(span);
    }
    return li;
  }

  function fill(list, items, emptyText) {
    list.replaceChildren(...(items.length ? items : [item({ class: "empty" }, [["", emptyText]])]));
  }

  const RULES = {
    orders_spike: "Orders spike",
    orders_drop: "Orders drop",
    revenue_spike: "Revenue spike",
    revenue_drop: "Revenue drop",
    order_velocity: "Many orders from one customer",
    large_first_order: "Large first order",
    repeated_declines: "Repeated payment declines",
  };

  function describeFigures(figures) {
    return Object.entries(figures || {})
      .filter(([k]) => !/(Start|End|At)$/.test(k))
      .map(([k, v]) => k.replace(/([A-Z])/g, " $1").toLowerCase() + ": " +
        (/cents$/i.test(k) ? cents(v) : count.format(v)))
      .join(" · ");
  }

  function render(s) {
    if (s.today) {
      setFigure("orders-today", s.today.ordersPlaced, count.format(s.today.ordersPlaced));
      setFigure("revenue-today", s.today.netRevenueCents, cents(s.today.netRevenueCents));
      setFigure("paid-today", s.today.ordersPaid, count.format(s.today.ordersPaid));
    }
    if (s.byStatus) {
      for (const status of ["pending", "confirmed", "paid", "cancelled", "shipped", "delivered"]) {
        const n = s.byStatus[status] || 0;
        setFigure("status-" + status, n, count.format(n));
      }
    }
    if (s.topProducts) {
      fill($("top-products"), s.topProducts.map((p) =>
        item({ "data-product-id": p.productId }, [["", p.productId], ["", count.format(p.soldUnits)]])),
        "Nothing sold yet");
    }
    if (s.lowStock) {
      fill($("low-stock"), s.lowStock.map((p) =>
        item({ "data-product-id": p.productId },
          [["", p.name || p.productId], ["", count.format(p.availableUnits)]])),
        "Every product has stock");
    }
    if (s.alerts) {
      setFigure("alerts-open", s.alerts.count, count.format(s.alerts.count));
      fill($("alerts"), s.alerts.items.map((a) => {
        const fraud = a.subject !== "shop";
        const li = item({ "data-alert-id": a.id, class: fraud ? "fraud" : "" }, [
          ["what", (RULES[a.rule] || a.rule) + (fraud ? " — " + a.subject.replace(/^customer:/, "customer ") : "")],
          ["when", " since " + (a.openedAt ? dateTime.format(new Date(a.openedAt)) : "?")],
        ]);
        const figures = document.createElement("div");
        figures.className = "figures";
        figures.textContent = describeFigures(a.figures);
        li.appendChild(figures);
        return li;
      }), "No open alerts");
    }
    if (s.lag) {
      setFigure("lag", s.lag.events, count.format(s.lag.events));
    }
    if (s.minutes) {
      const w = s.minutes.watermark;
      $("watermark").textContent = w ? dateTime.format(new Date(w)) : "no events yet";
      drawCharts(s.minutes.windows || []);
    }
  }

  function chart(id, label, color, bars, format) {
    const el = $(id);
    const opts = {
      width: Math.max(el.clientWidth, 200),
      height: 220,
      legend: { show: false },
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(max, 1)] } },
      axes: [
        { stroke: "#98a2b3", grid: { stroke: "rgba(128,128,128,0.15)" }, values: (u, ticks) => ticks.map((t) => timeOfDay.format(new Date(t * 1000))) },
        { stroke: "#98a2b3", grid: { stroke: "rgba(128,128,128,0.15)" }, size: 70, values: (u, ticks) => ticks.map(format) },
      ],
      series: [
        {},
        {
          label,
          stroke: color,
          // Solid bars; a light area under the line.
          fill: color + (bars ? "b0" : "33"),
          width: 2,
          paths: bars ? uPlot.paths.bars({ size: [0.7, 40] }) : undefined,
          points: { show: false },
        },
      ],
    };
    const u = new uPlot(opts, [[], []], el);
    new ResizeObserver(() => u.setSize({ width: Math.max(el.clientWidth, 200), height: 220 })).observe(el);
    return u;
  }

  function drawCharts(windows) {
    if (typeof uPlot === "undefined") return;
    if (!charts.orders) {
      charts.orders = chart("chart-orders", "Orders", "#2f6fdf", true, (v) => count.format(v));
      charts.revenue = chart("chart-revenue", "Net revenue", "#1a7f4b", false, (v) => money.format(v));
    }
    const xs = windows.map((w) => Date.parse(w.start) / 1000);
    charts.orders.setData([xs, windows.map((w) => w.ordersPlaced)]);
    charts.revenue.setData([xs, windows.map((w) => w.netRevenueCents / 100)]);
  }

  // --- start ---

  $("login").addEventListener("submit", (e) => {
    e.preventDefault();
    const given = $("token-input").value.trim();
    if (!given) return;
    sessionStorage.setItem(TOKEN_KEY, given);
    $("token-input").value = "";
    start(given);
  });
  $("sign-out").addEventListener("click", () => askForToken(""));

  takeTokenFromFragment();
  const stored = sessionStorage.getItem(TOKEN_KEY);
  if (stored) start(stored);
  else askForToken("");
})();
