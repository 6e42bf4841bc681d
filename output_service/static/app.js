// output-service status page: plain DOM and hand-written SVG, no dependencies.
// Every request is a relative URL to the service that served this page.
"use strict";

const REFRESH_MS = 15000;
const PAGE_SIZE = 50;
const SPARK_RANGE_S = 24 * 3600;
const SVGNS = "http://www.w3.org/2000/svg";
const RANGES = [["1h", 3600], ["6h", 6 * 3600], ["24h", 86400], ["7d", 7 * 86400], ["30d", 30 * 86400]];
// SmokePing's colours for the median: loss picks the colour of each segment
const LOSS_COLOURS = [[0, "#1a7f37", "0%"], [5, "#1f5fbf", "<5%"], [20, "#8e24aa", "<20%"],
  [50, "#e65100", "<50%"], [101, "#c62828", ">=50%"]];

const state = { page: 0, filter: "", range: 86400, timer: null, sparks: new Map(), observer: null };

// -- small helpers -------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) node.append(c);
  return node;
}

function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const c of children.flat()) if (c !== null && c !== undefined) node.append(c);
  return node;
}

async function getJSON(url) {
  const reply = await fetch(url, { headers: { Accept: "application/json" }, cache: "no-store" });
  const body = await reply.json().catch(() => null);
  if (!reply.ok) {
    const why = body && body.error ? body.error : reply.statusText;
    throw new Error(`${url.split("?")[0]}: ${reply.status} ${why}`);
  }
  return body;
}

const ms = (ns) => (ns === null || ns === undefined ? "–" : (ns / 1e6).toFixed(ns < 1e7 ? 2 : 1));
const pct = (v) => (v === null || v === undefined ? "–" : `${v.toFixed(v && v < 10 ? 1 : 0)}%`);
const num = (v) => (v === null || v === undefined ? "–" : Number(v).toLocaleString("en"));
const isoSince = (seconds) => new Date(Date.now() - seconds * 1000).toISOString();

function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function ago(text) {
  if (!text) return "never";
  const s = Math.max(0, (Date.now() - Date.parse(text)) / 1000);
  if (s < 90) return `${Math.round(s)} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  if (s < 172800) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

function lossClass(loss) {
  if (!loss) return "loss-0";
  return loss < 5 ? "loss-low" : "loss-high";
}

function lossColour(loss) {
  if (!loss) return LOSS_COLOURS[0][1];
  return LOSS_COLOURS.slice(1).find(([limit]) => loss < limit)[1];
}

function showError(error) {
  const box = document.getElementById("error");
  if (error) { box.textContent = String(error.message || error); box.hidden = false; }
  else box.hidden = true;
}

function card(label, value, bad) {
  return el("div", { class: bad ? "card bad" : "card" },
    el("div", { class: "label", text: label }), el("div", { class: "value", text: value }));
}

const rows = (data, key) => (Array.isArray(data) ? data : data[key] || []);

// -- the overview: service, nodes, targets ---------------------------------------

async function overview(view) {
  const [status, nodes] = await Promise.all([getJSON("api/status"), getJSON("api/nodes")]);
  const list = await targetsPage();
  view.replaceChildren(
    el("h2", { text: "Service" }), servicePanel(status),
    el("h2", { text: "Files" }), filesTable(status.files),
    el("h2", { text: "Nodes" }), nodesTable(rows(nodes, "nodes")),
    el("h2", { text: "Targets, worst first" }), targetsTable(list));
  observeSparks();
}

function servicePanel(s) {
  const ing = s.ingest;
  const lat = ing.latency_seconds;
  const latency = (v) => (v === null ? "–" : `${(v * 1000).toFixed(1)} ms`);
  const cards = [
    card("state", s.ready ? "ready" : "NOT READY", !s.ready),
    card(`ingest (last ${Math.round(ing.window_s)} s)`, `${num(ing.results_per_s)} results/s`),
    card("results stored", num(ing.results_total)),
    card("write queue", `${num(ing.queue_results)} / ${num(ing.queue_max_results)}`,
      ing.queue_results > ing.queue_max_results / 2),
    card("latency p50 / p90 / p99", `${latency(lat.p50)} / ${latency(lat.p90)} / ${latency(lat.p99)}`),
    card("last result", ago(ing.last_result_time)),
    card("last rotation", ago(s.last_rotation)),
  ];
  if (s.hops) {
    cards.push(card("hops discovered / sent", `${num(s.hops.discovered)} / ${num(s.hops.sent)}`),
      card("hop outbox", num(s.hops.outbox), s.hops.outbox > 10000),
      card("dead letters", num(s.hops.dead_letters), s.hops.dead_letters > 0));
  } else cards.push(card("hop loop", "off"));
  return el("div", { class: "cards", id: "service" }, cards);
}

function filesTable(files) {
  if (!files) return el("p", { class: "muted", text: "this backend keeps no files" });
  return el("table", { id: "files" },
    el("tr", {}, el("th", { text: "file" }), el("th", { text: "state" }), el("th", { class: "num", text: "size" }),
      el("th", { class: "num", text: "results" })),
    files.map((f) => el("tr", {}, el("td", { text: f.name }),
      el("td", {}, el("span", { class: "badge state", text: f.state || (f.current ? "live" : "sealed") })),
      el("td", { class: "num", text: bytes(f.size_bytes ?? f.size) }),
      el("td", { class: "num", text: num(f.results) }))));
}

function nodesTable(nodes) {
  if (!nodes.length) return el("p", { class: "muted", text: "no node has sent anything yet" });
  const silentFirst = [...nodes].sort((a, b) => (b.silent === true) - (a.silent === true));
  return el("table", { id: "nodes" },
    el("tr", {}, ["node", "state", "last seen", "batches", "results", "failed", "from"].map((h, i) =>
      el("th", { class: i >= 3 && i <= 5 ? "num" : null, text: h }))),
    silentFirst.map((n) => el("tr", { class: n.silent ? "silent" : null, "data-node": n.node_id ?? "" },
      el("td", { text: n.node_id ?? "(no X-Node-ID)" }),
      el("td", {}, el("span", { class: n.silent ? "badge silent" : "badge live", text: n.silent ? "silent" : "sending" })),
      el("td", { text: ago(n.last_seen) }),
      el("td", { class: "num", text: num(n.batches) }),
      el("td", { class: "num", text: num(n.results) }),
      el("td", { class: "num", text: num(n.failed) }),
      el("td", { class: "muted", text: (n.remotes || n.remote_addresses || []).join(", ") }))));
}

async function targetsPage() {
  // one more than a page tells whether there is a next one
  const url = `api/targets?sort=loss&limit=${PAGE_SIZE + 1}&offset=${state.page * PAGE_SIZE}`;
  const data = await getJSON(url);
  return rows(data, "targets");
}

function targetsTable(list) {
  const more = list.length > PAGE_SIZE;
  const shown = list.slice(0, PAGE_SIZE).filter((t) => t.ip.includes(state.filter));
  const go = (delta) => () => { state.page = Math.max(0, state.page + delta); refresh(); };
  const filter = el("input", { type: "search", placeholder: "filter this page by IP", value: state.filter,
    onchange: (e) => { state.filter = e.target.value; refresh(); } });
  const pager = el("div", { class: "pager" },
    el("button", { onclick: go(-1), disabled: state.page === 0, text: "◀ previous" }),
    el("span", { text: `page ${state.page + 1}` }),
    el("button", { onclick: go(1), disabled: !more, text: "next ▶" }), filter);
  const table = el("table", { id: "targets" },
    el("tr", {}, ["target", "loss", "median ms", "p95 ms", "results", "nodes", "last seen", "24 h"].map((h, i) =>
      el("th", { class: i >= 1 && i <= 5 ? "num" : null, text: h }))),
    shown.map((t) => el("tr", { "data-ip": t.ip },
      el("td", {}, el("a", { href: `#/target/${encodeURIComponent(t.ip)}`, text: t.ip })),
      el("td", { class: `num ${lossClass(t.loss_pct)}`, text: pct(t.loss_pct) }),
      el("td", { class: "num", text: ms(t.rtt_p50_ns) }),
      el("td", { class: "num", text: ms(t.rtt_p95_ns) }),
      el("td", { class: "num", text: num(t.results) }),
      el("td", { class: "num", text: num(t.nodes) }),
      el("td", { text: ago(t.last_seen) }),
      el("td", {}, el("span", { class: "spark-slot", "data-ip": t.ip })))));
  return el("div", {}, pager, table);
}

// Sparklines are fetched and drawn only for rows on screen, once per refresh
function observeSparks() {
  if (state.observer) state.observer.disconnect();
  state.observer = new IntersectionObserver((entries) => {
    for (const entry of entries) {
      if (!entry.isIntersecting) continue;
      state.observer.unobserve(entry.target);
      drawSpark(entry.target).catch(showError);
    }
  });
  document.querySelectorAll(".spark-slot").forEach((slot) => state.observer.observe(slot));
}

async function drawSpark(slot) {
  const ip = slot.dataset.ip;
  let series = state.sparks.get(ip);
  if (!series) {
    const data = await getJSON(`api/targets/${encodeURIComponent(ip)}?since=${isoSince(SPARK_RANGE_S)}&step=1h`);
    series = data.series || [];
    state.sparks.set(ip, series);
  }
  const points = series.filter((b) => b.rtt_p50_ns !== null && b.rtt_p50_ns !== undefined);
  const w = 120, h = 24;
  const chart = svg("svg", { class: "spark", viewBox: `0 0 ${w} ${h}`, role: "img" });
  if (points.length) {
    const t0 = Date.now() - SPARK_RANGE_S * 1000;
    const top = Math.max(...points.map((b) => b.rtt_p50_ns)) * 1.1 || 1;
    const xy = points.map((b) => [((Date.parse(b.t) - t0) / (SPARK_RANGE_S * 1000)) * w, h - (b.rtt_p50_ns / top) * h]);
    const d = xy.map(([x, y], i) => `${i ? "L" : "M"}${x.toFixed(1)},${y.toFixed(1)}`).join("");
    chart.append(svg("path", { class: "spark-line", d: points.length > 1 ? d : `${d}h2` }));
  }
  slot.replaceChildren(chart);
}

// -- one target: the SmokePing chart, loss, routes --------------------------------

async function targetView(view, ip) {
  const since = isoSince(state.range);
  const q = `since=${encodeURIComponent(since)}`;
  const [target, routes] = await Promise.all([
    getJSON(`api/targets/${encodeURIComponent(ip)}?${q}`),
    getJSON(`api/routes?ip=${encodeURIComponent(ip)}&${q}`),
  ]);
  const ranges = el("div", { class: "ranges" }, RANGES.map(([label, seconds]) =>
    el("button", { class: seconds === state.range ? "on" : null, text: label,
      onclick: () => { state.range = seconds; refresh(); } })));
  const changes = (routes.changes || []).flatMap((n) => n.changes.map((c) => ({ node: n.node, ...c })));
  view.replaceChildren(
    el("p", {}, el("a", { href: "#/", text: "◀ all targets" })),
    el("h2", { text: `Target ${ip}` }),
    el("div", { class: "cards", id: "summary" },
      card("loss", pct(target.loss_pct), target.loss_pct > 0),
      card("median", `${ms(target.rtt_p50_ns)} ms`), card("p95", `${ms(target.rtt_p95_ns)} ms`),
      card("min / max", `${ms(target.rtt_min_ns)} / ${ms(target.rtt_max_ns)} ms`),
      card("results", num(target.results)), card("nodes", num(target.nodes)),
      card("last seen", ago(target.last_seen))),
    el("h2", { text: "Latency: median coloured by loss, p10–p90 as smoke" }), ranges,
    smokeChart(target.series || [], Date.now() - state.range * 1000, Date.now(), changes), legend(),
    el("h2", { text: "Paths" }), pathsTable(routes.paths || []),
    el("h2", { text: "Route changes" }), changesTable(changes));
}

function legend() {
  return el("div", { class: "legend" }, LOSS_COLOURS.map(([, colour, label]) => {
    const swatch = svg("svg", { width: 14, height: 6 }, svg("rect", { width: 14, height: 6, fill: colour }));
    return el("span", {}, swatch, ` loss ${label}`);
  }), el("span", { class: "muted", text: "dashed: route change" }));
}

function niceStep(span, count) {
  const raw = span / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw) || raw;
}

function smokeChart(series, start, end, changes) {
  const W = 1000, H = 320, L = 56, R = 12, T = 12, B = 28, LOSS_H = 50;
  const plotH = H - T - B - LOSS_H;
  const buckets = series.filter((b) => b.results > 0);
  const chart = svg("svg", { class: "chart", id: "smoke", viewBox: `0 0 ${W} ${H}`, role: "img" });
  const rtts = buckets.flatMap((b) => [b.rtt_p90_ns, b.rtt_p50_ns]).filter((v) => v !== null && v !== undefined);
  const top = rtts.length ? Math.max(...rtts) * 1.15 : 1e7;
  const x = (t) => L + ((t - start) / (end - start)) * (W - L - R);
  const y = (ns) => T + plotH - (ns / top) * plotH;
  const step = buckets.length > 1 ? Date.parse(buckets[1].t) - Date.parse(buckets[0].t) : (end - start) / 100;
  // grid and axes
  const grid = svg("g", { class: "grid" });
  const axis = svg("g", { class: "axis" });
  const yStep = niceStep(top / 1e6, 4);
  for (let v = 0; v * 1e6 <= top; v += yStep) {
    grid.append(svg("line", { x1: L, x2: W - R, y1: y(v * 1e6), y2: y(v * 1e6) }));
    axis.append(svg("text", { x: L - 6, y: y(v * 1e6) + 4, "text-anchor": "end" }, `${+v.toFixed(3)} ms`));
  }
  for (let i = 0; i <= 6; i += 1) {
    const t = start + ((end - start) * i) / 6;
    const d = new Date(t);
    const label = end - start > 2 * 86400 * 1000 ? d.toISOString().slice(5, 10) : d.toISOString().slice(11, 16);
    axis.append(svg("text", { x: x(t), y: H - 8, "text-anchor": "middle" }, label));
  }
  chart.append(grid, axis);
  // smoke: one band from p10 to p90, broken where a bucket has no replies
  const smoke = svg("g", { class: "smoke-band" });
  for (const run of runs(buckets, step)) {
    const upper = run.map((b) => `${x(Date.parse(b.t)).toFixed(1)},${y(b.rtt_p90_ns).toFixed(1)}`);
    const lower = run.map((b) => `${x(Date.parse(b.t)).toFixed(1)},${y(b.rtt_p10_ns).toFixed(1)}`).reverse();
    const wide = run.length === 1 ? `M${x(Date.parse(run[0].t)) - 2},${y(run[0].rtt_p90_ns)}h4V${y(run[0].rtt_p10_ns)}h-4Z`
      : `M${upper.join("L")}L${lower.join("L")}Z`;
    smoke.append(svg("path", { class: "smoke", d: wide }));
  }
  chart.append(smoke);
  // the median: one segment per bucket, coloured by that bucket's loss
  const median = svg("g", { class: "median-line" });
  for (const run of runs(buckets, step)) {
    run.forEach((b, i) => {
      const t = Date.parse(b.t);
      const next = run[i + 1];
      const x2 = next ? x(Date.parse(next.t)) : x(t) + Math.max(2, x(t + step) - x(t));
      const y2 = next ? y(next.rtt_p50_ns) : y(b.rtt_p50_ns);
      const seg = svg("path", { class: "median", stroke: lossColour(b.loss_pct),
        d: `M${x(t).toFixed(1)},${y(b.rtt_p50_ns).toFixed(1)}L${x2.toFixed(1)},${y2.toFixed(1)}` });
      seg.append(svg("title", {}, `${b.t}: median ${ms(b.rtt_p50_ns)} ms, p10 ${ms(b.rtt_p10_ns)}, ` +
        `p90 ${ms(b.rtt_p90_ns)}, loss ${pct(b.loss_pct)}, ${b.results} results`));
      median.append(seg);
    });
  }
  chart.append(median);
  // loss below the chart
  const lossTop = H - B - LOSS_H + 8;
  const lossH = LOSS_H - 12;
  const bars = svg("g", { class: "loss" });
  for (const b of series) {
    if (!b.loss_pct) continue;
    const t = Date.parse(b.t);
    const h = (Math.min(100, b.loss_pct) / 100) * lossH;
    bars.append(svg("rect", { class: "lossbar", x: x(t), y: lossTop + lossH - h,
      width: Math.max(1, x(t + step) - x(t) - 1), height: h }, svg("title", {}, `${b.t}: loss ${pct(b.loss_pct)}`)));
  }
  axis.append(svg("text", { x: L - 6, y: lossTop + lossH, "text-anchor": "end" }, "loss"));
  chart.append(svg("line", { x1: L, x2: W - R, y1: lossTop + lossH, y2: lossTop + lossH, stroke: "#ccc" }), bars);
  for (const c of changes) {
    const t = Date.parse(c.at);
    if (t < start || t > end) continue;
    chart.append(svg("line", { class: "change", x1: x(t), x2: x(t), y1: T, y2: T + plotH },
      svg("title", {}, `route change at ${c.at} (node ${c.node ?? "none"})`)));
  }
  if (!buckets.length) {
    chart.append(svg("text", { x: W / 2, y: T + plotH / 2, "text-anchor": "middle", class: "muted" },
      "no replies in this range"));
  }
  return chart;
}

// Consecutive buckets with replies (a gap breaks the line and the smoke)
function runs(buckets, step) {
  const out = [];
  let run = [];
  for (const b of buckets) {
    if (b.rtt_p50_ns === null || b.rtt_p50_ns === undefined) continue;
    const prev = run[run.length - 1];
    if (prev && Date.parse(b.t) - Date.parse(prev.t) > step * 1.5) { out.push(run); run = []; }
    run.push(b);
  }
  if (run.length) out.push(run);
  return out;
}

const pathText = (hops) => hops.map((h) => h ?? "*").join(" → ");

function pathsTable(paths) {
  if (!paths.length) return el("p", { class: "muted", text: "no traceroutes in this range" });
  return el("table", { id: "paths" },
    el("tr", {}, ["#", "hops", "results", "nodes", "first seen", "last seen"].map((h) => el("th", { text: h }))),
    paths.map((p, i) => el("tr", {}, el("td", { text: String(i + 1) }),
      el("td", {}, el("code", { class: "path", text: pathText(p.hops) })),
      el("td", { class: "num", text: num(p.results) }), el("td", { class: "num", text: num(p.nodes) }),
      el("td", { text: p.first_seen }), el("td", { text: p.last_seen }))));
}

function changesTable(changes) {
  if (!changes.length) return el("p", { class: "muted", text: "no route changes in this range" });
  return el("table", { id: "changes" },
    el("tr", {}, ["when", "node", "from", "to"].map((h) => el("th", { text: h }))),
    changes.map((c) => el("tr", {}, el("td", { text: c.at }), el("td", { text: c.node ?? "(none)" }),
      el("td", {}, el("code", { class: "path", text: pathText(c.from) })),
      el("td", {}, el("code", { class: "path", text: pathText(c.to) })))));
}

// -- routing and refresh ----------------------------------------------------------

async function refresh() {
  clearTimeout(state.timer);
  const view = document.getElementById("view");
  const match = location.hash.match(/^#\/target\/(.+)$/);
  try {
    if (match) await targetView(view, decodeURIComponent(match[1]));
    else await overview(view);
    showError(null);
    document.getElementById("updated").textContent = `updated ${new Date().toLocaleTimeString("en-GB")}`;
    document.body.dataset.loaded = match ? "target" : "overview";
  } catch (error) {
    showError(error);
  }
  if (document.getElementById("auto").checked) state.timer = setTimeout(tick, REFRESH_MS);
}

function tick() {
  state.sparks.clear();
  if (document.hidden) state.timer = setTimeout(tick, REFRESH_MS);
  else refresh();
}

window.addEventListener("hashchange", () => { state.filter = ""; refresh(); });
document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("auto").addEventListener("change", refresh);
  refresh();
});
