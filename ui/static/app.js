// The lbd console: views of the daemon fed by its REST API, refreshed
// every two seconds, and its live event stream.
import { api, ApiError, token, el, clear, num, rate, bytes, ago, clock, History, sparkline, ring, color, EventStream } from "./lib.js";

const REFRESH_MS = 2000;
const HISTORY = 150; // samples: 5 minutes at 2 s
const $ = (sel) => document.querySelector(sel);

const state = {
  view: "overview",
  status: null, bgp: null, tracer: null, tracerError: "", stats: null, vips: [], rings: {},
  flows: null, conns: null, connsError: "", prevConns: new Map(),
  events: [], lastOK: 0, polling: false, reachable: true,
};
const hist = new History(HISTORY);
let stream = null;

// ---- login ---------------------------------------------------------------

function showLogin(message) {
  stopAll();
  $("#login").hidden = false;
  $("#logout").hidden = true;
  document.querySelectorAll(".view").forEach((v) => (v.hidden = true));
  $("#login-error").textContent = message || "";
  $("#token").focus();
}

async function login(ev) {
  ev.preventDefault();
  const t = $("#token").value.trim();
  if (!t) return;
  token.set(t);
  try {
    await api("/api/v1/status");
  } catch (e) {
    token.clear();
    $("#login-error").textContent = e instanceof ApiError ? e.message : "cannot reach lbd: " + e.message;
    return;
  }
  $("#token").value = "";
  start();
}

function logout() {
  token.clear();
  showLogin("Logged out.");
}

// ---- the loop ------------------------------------------------------------

let timer = null;

function start() {
  $("#login").hidden = true;
  $("#logout").hidden = false;
  route();
  stream = new EventStream({ source: $("#events-tracer").checked ? "all" : "lbd", onMessage: onEvent, onState: onStreamState });
  stream.start();
  poll();
  timer = setInterval(poll, REFRESH_MS);
}

function stopAll() {
  if (timer) clearInterval(timer);
  timer = null;
  if (stream) stream.stop();
  stream = null;
}

function setLink(text, cls) {
  const l = $("#link");
  l.textContent = text;
  l.className = "link " + cls;
}

async function optional(path) {
  try {
    return { data: (await api(path)).data };
  } catch (e) {
    if (e instanceof ApiError && e.status !== 401) return { error: e.message };
    throw e;
  }
}

async function poll() {
  if (state.polling) return;
  state.polling = true;
  try {
    const [status, stats, vips, bgp, tracer] = await Promise.all([
      api("/api/v1/status"), api("/api/v1/stats"), api("/api/v1/vips"), optional("/api/v1/bgp"), optional("/api/v1/tracer"),
    ]);
    state.status = status.data;
    state.stats = stats.data;
    state.vips = vips.data.vips;
    state.bgp = bgp.data || null;
    state.tracer = tracer.data || null;
    state.tracerError = tracer.error || "";
    const rings = await Promise.all(state.vips.map((v) => optional("/api/v1/vips/" + encodeURIComponent(v.name) + "/ring")));
    state.rings = {};
    state.vips.forEach((v, i) => (state.rings[v.name] = rings[i].data));
    if (state.view === "flows") {
      state.flows = (await api("/api/v1/flows?limit=1000&sort=bytes")).data;
    }
    if (state.view === "vips") {
      const pages = await Promise.all(state.vips.map((v) => api("/api/v1/flows?limit=1000&vip=" + encodeURIComponent(v.name))));
      state.vipFlows = {};
      state.vips.forEach((v, i) => (state.vipFlows[v.name] = pages[i].data));
    }
    if (state.view === "connections") await pollConns();
    for (const v of state.stats.vips) hist.push("vip " + v.vip, v.packets_per_second);
    for (const r of state.stats.reals) hist.push("real " + r.address, r.packets_per_second);
    state.lastOK = Date.now();
    state.reachable = true;
    setLink("live · " + clock(state.lastOK), "ok");
    render();
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) {
      token.clear();
      showLogin("The daemon refused the token (it may have a new one): log in again.");
      return;
    }
    state.reachable = false;
    setLink("daemon unreachable, retrying" + (state.lastOK ? " · last data " + clock(state.lastOK) : ""), "down");
  } finally {
    state.polling = false;
  }
}

async function pollConns() {
  const r = await optional("/api/v1/connections?limit=500");
  state.connsError = r.error || "";
  const now = Date.now();
  const prev = state.prevConns;
  const next = new Map();
  state.conns = (r.data ? r.data.connections : []).map((c) => {
    const key = [c.protocol, c.source, c.destination, c.pid, c.netns].join(" ");
    const total = c.bytes_sent + c.bytes_received;
    const p = prev.get(key);
    next.set(key, { total, at: now });
    return { ...c, pair: c.source + " ⇄ " + c.destination, rate: p ? ((total - p.total) * 1000) / Math.max(1, now - p.at) : 0 };
  });
  state.connsTotal = r.data ? r.data.total : 0;
  state.prevConns = next;
}

// ---- routing -------------------------------------------------------------

const VIEWS = ["overview", "vips", "flows", "connections", "events", "api"];

function route() {
  const v = location.hash.replace(/^#/, "");
  state.view = VIEWS.includes(v) ? v : "overview";
  if (!token.get()) return;
  document.querySelectorAll(".view").forEach((s) => (s.hidden = s.id !== "view-" + state.view));
  document.querySelectorAll("#nav a").forEach((a) => a.classList.toggle("active", a.dataset.view === state.view));
  if (state.view === "api") renderAPI();
  render();
  if (["vips", "flows", "connections"].includes(state.view)) poll();
}

function render() {
  if (!state.status) return;
  switch (state.view) {
    case "overview": return renderOverview();
    case "vips": return renderVIPs();
    case "flows": return renderFlows();
    case "connections": return renderConns();
    case "events": return renderEvents();
  }
}

// ---- overview --------------------------------------------------------------

function kv(rows) {
  return el("table", { class: "kv" }, rows.filter(Boolean).map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, v))));
}

function card(title, ...body) {
  return el("div", { class: "card" }, el("h3", {}, title), ...body);
}

function renderOverview() {
  const s = state.status, dp = s.datapath || {}, limits = dp.limits || {};
  const bgp = state.bgp, tr = state.tracer;
  const reals = new Set();
  state.vips.forEach((v) => v.reals.forEach((r) => reals.add(r.address)));
  const down = state.vips.reduce((n, v) => n + v.reals.filter((r) => r.health && r.health.state === "down").length, 0);
  const node = card("Node", kv([
    ["Version", s.version],
    ["Interface", dp.interface || "—"],
    ["XDP mode", (dp.xdp_mode || "—") + (dp.fallback ? " (fallback: " + dp.fallback + ")" : "")],
    ["Health checks", dp.health_checks || "—"],
    ["VIPs", el("span", { id: "ov-vips" }, num(s.vips)), limits.max_vips ? " of " + num(limits.max_vips) : ""],
    ["Reals", el("span", { id: "ov-reals" }, num(reals.size)), limits.max_reals ? " of " + num(limits.max_reals) : ""],
    ["Reals down", el("span", { id: "ov-down", class: down ? "bad" : "" }, num(down))],
    ["Connection table", limits.max_flows ? num(limits.max_flows) + " entries" : "—"],
    ["Reconcile drifts", el("span", { id: "ov-drifts", class: s.reconcile_drifts ? "bad" : "" }, num(s.reconcile_drifts))],
    ["State file", s.state_file],
    ["Pins", (dp.pin_dir || "—") + (dp.recovered ? " (recovered after a restart)" : "")],
  ]));
  const kernel = card("Kernel features", kv([
    ["Kernel", tr ? tr.kernel : "— (tracer off)"],
    ["XDP", dp.xdp_mode || "—"],
    ["BTF", tr ? (tr.btf ? "yes" : "no") : "—"],
    ["Tracer hooks", tr ? tr.mode + " · " + tr.buffer + " · " + (tr.attached || []).length + " attached" : "—"],
  ]));
  let bgpCard;
  if (!bgp || !bgp.enabled) {
    bgpCard = card("BGP", el("p", { class: "muted" }, "Not configured: this node announces no VIP."),
      kv([["Drain", bgp && bgp.drained ? "drained" : "not drained"]]));
  } else {
    bgpCard = card("BGP",
      kv([["Drain", el("span", { id: "ov-drained", class: bgp.drained ? "bad" : "" }, bgp.drained ? "drained (no VIP announced)" : "not drained")],
        ["Local AS", bgp.local_as], ["Router ID", bgp.router_id]]),
      el("table", { class: "grid small" }, el("thead", {}, el("tr", {}, ["Peer", "AS", "State", "Up", "Last error"].map((h) => el("th", {}, h)))),
        el("tbody", {}, bgp.peers.map((p) => el("tr", {}, el("td", {}, p.address), el("td", {}, p.as),
          el("td", { class: p.state === "established" ? "good" : "bad" }, p.state),
          el("td", {}, p.established_at ? ago(p.established_at) : "—"), el("td", {}, p.last_error || ""))))),
      el("table", { class: "grid small" }, el("thead", {}, el("tr", {}, ["Prefix", "Announced", "VIPs"].map((h) => el("th", {}, h)))),
        el("tbody", {}, bgp.prefixes.map((p) => el("tr", {}, el("td", {}, p.prefix),
          el("td", { class: p.announced ? "good" : "bad" }, p.announced ? "yes" : "no" + (p.reason ? ": " + p.reason : "")),
          el("td", {}, (p.vips || []).join(", ")))))));
  }
  const lost = tr ? Object.values(tr.lost || {}).reduce((a, b) => a + b, 0) + (tr.lost_perf || 0) : 0;
  const evs = tr ? Object.values(tr.events || {}).reduce((a, b) => a + b, 0) : 0;
  const tracerCard = card("Connection tracer", tr ? kv([
    ["Status", el("span", { class: "good" }, "running")], ["Mode", tr.mode], ["Connections", num(tr.connections)],
    ["Events", el("span", { id: "ov-tracer-events" }, num(evs))],
    ["Lost events", el("span", { id: "ov-tracer-lost", class: lost ? "bad" : "" }, num(lost))],
  ]) : el("p", { class: "muted" }, state.tracerError || "not running"));
  const g = state.stats.global;
  const counters = Object.entries(g.counters).filter(([, v]) => v > 0).sort();
  const dpCard = card("Datapath counters",
    el("table", { class: "grid small" }, el("thead", {}, el("tr", {}, el("th", {}, "Counter"), el("th", { class: "num" }, "Total"), el("th", { class: "num" }, "Rate"))),
      el("tbody", {}, counters.map(([k, v]) => el("tr", { dataset: { counter: k } }, el("td", { class: k.startsWith("drop_") ? "bad" : "" }, k),
        el("td", { class: "num" }, num(v)), el("td", { class: "num" }, rate(g.rates[k], "/s")))))),
    counters.length ? null : el("p", { class: "muted" }, "No packet yet."));
  clear($("#view-overview")).append(el("div", { class: "cards" }, node, kernel, bgpCard, tracerCard, dpCard));
}

// ---- VIPs ------------------------------------------------------------------

// flowCounts counts each VIP's flows (and per real) in the connection
// table, from one page of up to 1000 per VIP ("1,000+": more exist).
function flowCounts() {
  const byVIP = new Map(), byReal = new Map(), partial = new Set();
  for (const [name, page] of Object.entries(state.vipFlows || {})) {
    byVIP.set(name, page.flows.length);
    if (page.next_cursor) partial.add(name);
    for (const f of page.flows) {
      const k = name + " " + f.real;
      byReal.set(k, (byReal.get(k) || 0) + 1);
    }
  }
  return { byVIP, byReal, partial };
}

function renderVIPs() {
  const root = clear($("#view-vips"));
  if (state.vips.length === 0) {
    root.append(el("p", { class: "muted" }, "No VIP yet: add one with lbd vip add (see docs/cli.md)."));
    return;
  }
  const stats = new Map(state.stats.vips.map((v) => [v.vip, v]));
  const realStats = new Map(state.stats.reals.map((r) => [r.address, r]));
  const fc = flowCounts();
  const flows = (vip, n) => (state.vipFlows ? num(n || 0) + (fc.partial.has(vip) ? "+" : "") : "…");
  for (const v of state.vips) {
    const st = stats.get(v.name) || {};
    const rg = state.rings[v.name];
    const shares = new Map(rg ? rg.reals.map((r) => [r.address, r.share]) : []);
    const hc = v.health_check || {};
    const flags = [v.protocol.toUpperCase(), "encap " + v.encap, "ring " + v.ring_size,
      // the flags: the VIP's boolean keys but "disabled" (lb.VIPFlagTable), so a new one shows here unchanged
      ...Object.keys(v).filter((k) => v[k] === true && k !== "disabled").map((k) => k.replaceAll("_", " ")),
      hc.type && hc.type !== "none" ? "health " + hc.type + (hc.port ? " port " + hc.port : "") + (hc.path ? " " + hc.path : "") + (hc.interval ? " every " + hc.interval : "") : "no health check",
      "down flows " + v.down_flows, "all down: " + v.all_down].filter(Boolean);
    const chart = el("canvas", { class: "spark", width: 320, height: 56, title: "packets/s, last 5 minutes" });
    const donut = el("canvas", { class: "donut", width: 84, height: 84, title: "share of the ring per real" });
    const rows = v.reals.map((r, i) => {
      const rs = realStats.get(r.address) || {};
      const h = r.health;
      const share = shares.get(r.address) || 0;
      const bar = el("span", { class: "bar" }, el("span", { class: "fill" }));
      bar.firstChild.style.width = (share * 100).toFixed(1) + "%"; // CSSOM, allowed by the CSP
      bar.firstChild.style.background = color(i);
      const spark = el("canvas", { class: "spark small", width: 120, height: 24 });
      const draining = r.state === "draining";
      const tr = el("tr", { dataset: { real: r.address } },
        el("td", {}, el("span", { class: "swatch", dataset: { i } }), r.address),
        el("td", { class: "num", dataset: { field: "weight" } }, num(r.weight)),
        el("td", { dataset: { field: "state" }, class: draining ? "warn" : "" }, r.state),
        el("td", { dataset: { field: "health" }, class: h ? (h.state === "up" ? "good" : "bad") : "" },
          h ? h.state + " since " + ago(h.last_change) : "not checked",
          h && h.last_result && !h.last_result.ok ? el("div", { class: "muted small" }, "last probe: " + h.last_result.reason) : null),
        el("td", {}, bar, " ", el("span", { dataset: { field: "share" } }, (share * 100).toFixed(1) + "%")),
        el("td", { class: "num", dataset: { field: "flows" } }, flows(v.name, fc.byReal.get(v.name + " " + r.address))),
        el("td", { class: "num", dataset: { field: "pps" } }, rate(rs.packets_per_second, "pkt/s")),
        el("td", {}, spark),
        el("td", { class: "actions" },
          el("button", { type: "button", class: "drain", onclick: () => actDrain(v, r, !draining) }, draining ? "Undrain" : "Drain"),
          el("button", { type: "button", class: "weight", onclick: () => actWeight(v, r) }, "Weight…")));
      tr.querySelector(".swatch").style.background = color(i);
      requestAnimationFrame(() => sparkline(spark, hist.get("real " + r.address), color(i)));
      return tr;
    });
    const c = el("div", { class: "card vip", dataset: { vip: v.name } },
      el("div", { class: "vip-head" },
        el("div", {}, el("h3", {}, v.name,
          v.disabled ? el("span", { class: "badge bad", dataset: { field: "disabled" }, text: "disabled", title: "new flows are dropped; established flows keep their reals" }) : null,
          v.description ? el("span", { class: "vip-desc", dataset: { field: "description" }, text: v.description }) : null),
          el("div", { class: "chips" }, flags.map((f) => el("span", { class: "chip" }, f)))),
        el("div", { class: "figures" },
          fig("pkt/s", rate(st.packets_per_second, ""), "pps"), fig("bytes/s", bytes(st.bytes_per_second) + "/s", "bps"),
          fig("packets", num(st.packets), "packets"), fig("bytes", bytes(st.bytes), "bytes"), fig("flows", flows(v.name, fc.byVIP.get(v.name)), "flows")),
        el("div", { class: "actions" },
          el("button", { type: "button", class: "disable", onclick: () => actDisable(v, !v.disabled) }, v.disabled ? "Enable" : "Disable")),
        chart, donut),
      el("table", { class: "grid reals" },
        el("thead", {}, el("tr", {}, ["Real", "Weight", "State", "Health", "Ring share", "Flows", "pkt/s (all VIPs)", "last 5 min", ""].map((h) => el("th", {}, h)))),
        el("tbody", {}, rows)));
    root.append(c);
    requestAnimationFrame(() => {
      sparkline(chart, hist.get("vip " + v.name));
      ring(donut, v.reals.map((r) => shares.get(r.address) || 0));
    });
  }
}

function fig(label, value, field) {
  return el("div", { class: "fig" }, el("div", { class: "value", dataset: { field } }, value), el("div", { class: "label" }, label));
}

// ---- actions ---------------------------------------------------------------

// confirm opens the dialog; run is called on Confirm and keeps the
// dialog open with the API's problem when it throws.
function confirmAction({ title, text, extra, okLabel, run }) {
  const dlg = $("#confirm");
  $("#confirm-title").textContent = title;
  $("#confirm-text").textContent = text;
  clear($("#confirm-extra"));
  if (extra) $("#confirm-extra").append(extra);
  const errBox = $("#confirm-error");
  errBox.hidden = true;
  clear(errBox);
  const ok = $("#confirm-ok");
  ok.textContent = okLabel;
  ok.disabled = false;
  ok.onclick = async (e) => {
    e.preventDefault();
    ok.disabled = true;
    try {
      await run();
      dlg.close();
      poll();
    } catch (err) {
      showProblem(errBox, err);
      ok.disabled = false;
    }
  };
  dlg.showModal();
}

function showProblem(box, err) {
  clear(box);
  if (err instanceof ApiError) {
    const p = err.problem;
    // (DOM append would show a null as the text "null")
    box.append(el("strong", {}, p.status + " " + (p.title || "")), el("div", { class: "detail" }, p.detail || ""));
    if (p.field) box.append(el("div", { class: "muted" }, "field: " + p.field));
  } else {
    box.append(el("strong", {}, "The daemon did not answer"), el("div", {}, String(err.message || err)));
  }
  box.hidden = false;
}

const realPath = (v, r) => "/api/v1/vips/" + encodeURIComponent(v.name) + "/reals/" + encodeURIComponent(r.address);

// putReal reads the real (and its ETag, if the API gives one) and PUTs
// its settings with the change: PUT replaces them as a whole.
async function putReal(v, r, change) {
  const cur = await api(realPath(v, r));
  const body = { weight: cur.data.weight, state: cur.data.state, ...change };
  await api(realPath(v, r), { method: "PUT", body, ifMatch: cur.etag || undefined });
}

function actDrain(v, r, drain) {
  confirmAction({
    title: (drain ? "Drain " : "Undrain ") + r.address,
    text: drain
      ? `Drain real ${r.address} of ${v.name}: it gets no new flows; its established flows stay.`
      : `Put real ${r.address} of ${v.name} back in the ring: it gets new flows again.`,
    okLabel: drain ? "Drain" : "Undrain",
    run: () => putReal(v, r, { state: drain ? "draining" : "active" }),
  });
}

const vipPath = (v) => "/api/v1/vips/" + encodeURIComponent(v.name);

// actDisable disables or enables a VIP: PATCH {"disabled": ...}, with the
// VIP's ETag as If-Match if the API gives one.
function actDisable(v, disable) {
  confirmAction({
    title: (disable ? "Disable " : "Enable ") + v.name,
    text: disable
      ? `Disable VIP ${v.name}: its new flows are dropped; its established flows keep their reals. It stays configured, with its counters.`
      : `Enable VIP ${v.name}: it takes new flows again, with the ring it had.`,
    okLabel: disable ? "Disable" : "Enable",
    run: async () => {
      const cur = await api(vipPath(v));
      await api(vipPath(v), { method: "PATCH", body: { disabled: disable }, ifMatch: cur.etag || undefined });
    },
  });
}

function actWeight(v, r) {
  const input = el("input", { type: "number", id: "weight-input", min: 0, max: 1000000, value: r.weight });
  confirmAction({
    title: "Weight of " + r.address,
    text: `Change the weight of real ${r.address} of ${v.name} (its share of the ring follows; 0 takes it out of the ring).`,
    extra: el("label", {}, "Weight ", input),
    okLabel: "Set weight",
    run: () => putReal(v, r, { weight: Number(input.value) }),
  });
}

// ---- sortable, filterable tables ----------------------------------------------

const sorts = { flows: { key: "bytes", desc: true }, conns: { key: "bytes_sent", desc: true } };

function sortRows(rows, s) {
  return rows.sort((a, b) => {
    const x = a[s.key], y = b[s.key];
    const c = typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y), "en", { numeric: true });
    return s.desc ? -c : c;
  });
}

function wireSort(tableSel, name) {
  document.querySelectorAll(tableSel + " th[data-key]").forEach((th) => th.addEventListener("click", () => {
    const s = sorts[name];
    if (s.key === th.dataset.key) s.desc = !s.desc;
    else { s.key = th.dataset.key; s.desc = true; }
    render();
  }));
}

function markSort(tableSel, s) {
  document.querySelectorAll(tableSel + " th[data-key]").forEach((th) => {
    th.classList.toggle("sorted", th.dataset.key === s.key);
    th.classList.toggle("desc", th.dataset.key === s.key && s.desc);
  });
}

function matches(row, keys, q) {
  return !q || keys.some((k) => String(row[k]).toLowerCase().includes(q));
}

function renderFlows() {
  const body = clear($("#flows-table tbody"));
  if (!state.flows) return;
  const now = Date.now();
  const q = $("#flows-filter").value.trim().toLowerCase();
  let rows = state.flows.flows.map((f) => ({ ...f, age: now - new Date(f.first_seen), idle: now - new Date(f.last_seen) }))
    .filter((f) => matches(f, ["vip", "protocol", "client", "real", "destination"], q));
  rows = sortRows(rows, sorts.flows);
  markSort("#flows-table", sorts.flows);
  $("#flows-info").textContent = `${rows.length} of ${state.flows.flows.length} flows` + (state.flows.next_cursor ? " (the 1000 with most bytes; more exist: lbd flows --all)" : "");
  body.append(...rows.map((f) => el("tr", {},
    el("td", {}, f.vip), el("td", {}, f.protocol), el("td", {}, f.client), el("td", {}, f.real || "—"),
    el("td", { class: "num" }, num(f.packets)), el("td", { class: "num" }, bytes(f.bytes)),
    el("td", { class: "num" }, ago(f.first_seen, now)), el("td", { class: "num" }, ago(f.last_seen, now)))));
}

function renderConns() {
  const body = clear($("#conns-table tbody"));
  if (state.connsError) {
    $("#conns-info").textContent = state.connsError;
    return;
  }
  if (!state.conns) return;
  const q = $("#conns-filter").value.trim().toLowerCase();
  let rows = state.conns.filter((c) => matches(c, ["comm", "pid", "source", "destination", "protocol", "state", "netns"], q));
  rows = sortRows(rows, sorts.conns);
  markSort("#conns-table", sorts.conns);
  $("#conns-info").textContent = `${rows.length} shown of ${state.connsTotal} traced connections`;
  body.append(...rows.map((c) => el("tr", {},
    el("td", {}, c.protocol.toUpperCase()), el("td", { class: "num" }, c.pid), el("td", {}, c.comm), el("td", { class: "num" }, c.netns),
    el("td", {}, c.pair), el("td", {}, c.state), el("td", { class: "num" }, bytes(c.bytes_sent)), el("td", { class: "num" }, bytes(c.bytes_received)),
    el("td", { class: "num" }, bytes(c.rate) + "/s"), el("td", { class: "num" + (c.retransmits ? " warn" : "") }, num(c.retransmits)),
    el("td", { class: "num" }, c.srtt_us ? (c.srtt_us / 1000).toFixed(2) + " ms" : "—"))));
}

// ---- events ------------------------------------------------------------------

const MAX_EVENTS = 500;

function onStreamState(s) {
  const info = { connecting: "connecting…", live: "live", reconnecting: "reconnecting (the daemon went away?)", unauthorized: "refused the token" }[s] || s;
  $("#events-info").textContent = "stream " + info;
  if (s === "unauthorized") { token.clear(); showLogin("The daemon refused the token: log in again."); }
}

function onEvent({ id, event, data }) {
  if (event === "resumed") {
    const text = data.complete ? `resumed: ${data.replayed} missed events replayed` : `resumed, some events may be missing: ${data.reason}`;
    addEvent({ time: new Date().toISOString(), type: "stream", detail: text, cls: data.complete ? "" : "warn" });
  } else if (event === "dropped") {
    addEvent({ time: new Date().toISOString(), type: "stream", detail: `${data.dropped} tracer events missed (this page fell behind)`, cls: "warn" });
  } else if (event === "end") {
    addEvent({ time: new Date().toISOString(), type: "stream", detail: "the tracer stopped" });
  } else if (id) {
    addEvent({ id, time: data.time, type: data.type || event, vip: data.vip, real: data.real, state: data.state,
      detail: [data.reason, data.flows_removed ? data.flows_removed + " flows removed" : ""].filter(Boolean).join(" · ") });
    if (event === "vip_changed" || event === "real_health") poll();
  } else {
    addEvent({ time: data.time, type: "tracer " + (data.type || event), detail: `${data.comm || ""} pid ${data.pid} ${data.protocol || ""} ${data.source || ""} ⇄ ${data.destination || ""}`.trim() });
  }
}

function addEvent(e) {
  state.events.unshift(e);
  if (state.events.length > MAX_EVENTS) state.events.length = MAX_EVENTS;
  if (state.view === "events") renderEvents();
}

function renderEvents() {
  const body = clear($("#events-table tbody"));
  body.append(...state.events.map((e) => el("tr", { class: e.cls || "", dataset: { type: e.type, id: e.id } },
    el("td", {}, clock(e.time)), el("td", {}, e.type), el("td", {}, e.vip || ""), el("td", {}, e.real || ""),
    el("td", { class: e.state === "down" ? "bad" : e.state === "up" ? "good" : "" }, e.state || ""), el("td", {}, e.detail || ""))));
  if (state.events.length === 0) body.append(el("tr", {}, el("td", { colspan: 6, class: "muted" }, "No event since this page opened.")));
}

// ---- API reference ---------------------------------------------------------------

let apiDoc = null;

async function renderAPI() {
  const root = $("#view-api");
  if (!apiDoc) {
    try {
      apiDoc = (await api("/api/v1/openapi.json")).data;
    } catch (e) {
      clear(root).append(el("p", { class: "error" }, "Cannot load the API document: " + e.message));
      return;
    }
  }
  const doc = apiDoc;
  const schemaName = (s) => (s && s.$ref ? s.$ref.split("/").pop() : s && s.type ? s.type : "");
  const ops = [];
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(item)) {
      if (!["get", "post", "put", "patch", "delete"].includes(method)) continue;
      const params = [...(item.parameters || []), ...(op.parameters || [])];
      const body = op.requestBody && op.requestBody.content ? Object.values(op.requestBody.content)[0] : null;
      const resp = Object.entries(op.responses || {}).filter(([c]) => c !== "default").map(([c, r]) => {
        const ct = r.content ? Object.values(r.content)[0] : null;
        return c + (ct ? " " + schemaName(ct.schema) : "") + (r.description ? " — " + r.description : "");
      });
      ops.push(el("details", { class: "op" },
        el("summary", {}, el("span", { class: "method " + method }, method.toUpperCase()), el("code", {}, path), " ", op.summary || ""),
        op.description ? el("p", { class: "desc" }, op.description) : null,
        params.length ? el("table", { class: "grid small" }, el("thead", {}, el("tr", {}, ["Parameter", "In", "Type", "Description"].map((h) => el("th", {}, h)))),
          el("tbody", {}, params.map((p) => el("tr", {}, el("td", {}, el("code", {}, p.name)), el("td", {}, p.in), el("td", {}, schemaName(p.schema)), el("td", {}, p.description || ""))))) : null,
        body ? el("p", {}, "Body: ", el("code", {}, schemaName(body.schema))) : null,
        resp.length ? el("p", {}, "Answers: " + resp.join("; ")) : null));
    }
  }
  const schemas = Object.entries((doc.components || {}).schemas || {}).map(([name, s]) => el("details", { class: "op" },
    el("summary", {}, el("code", {}, name), " ", s.description || ""),
    el("table", { class: "grid small" }, el("tbody", {}, Object.entries(s.properties || {}).map(([k, p]) => el("tr", {},
      el("td", {}, el("code", {}, k), (s.required || []).includes(k) ? " *" : ""), el("td", {}, schemaName(p.items ? p.items : p) + (p.type === "array" ? "[]" : "")),
      el("td", {}, p.description || (p.enum ? p.enum.join(" | ") : ""))))))));
  clear(root).append(el("div", { class: "card" },
    el("h2", {}, doc.info.title + " " + doc.info.version),
    el("p", { class: "desc" }, doc.info.description || ""),
    el("p", { class: "muted" }, "Every request but /healthz and /readyz needs Authorization: Bearer <token>. The document itself: GET /api/v1/openapi.json. ",
      el("a", { href: "swagger/", id: "swagger-link" }, "Open it in Swagger UI"), " (with “Try it out”, using this tab's token; 1.9 MB)."),
    el("h3", {}, "Operations"), ...ops, el("h3", {}, "Schemas"), ...schemas));
}

// ---- wiring ------------------------------------------------------------------------

$("#login-form").addEventListener("submit", login);
$("#logout").addEventListener("click", logout);
$("#flows-filter").addEventListener("input", () => renderFlows());
$("#conns-filter").addEventListener("input", () => renderConns());
$("#events-tracer").addEventListener("change", (e) => { if (stream) stream.restart(e.target.checked ? "all" : "lbd"); });
wireSort("#flows-table", "flows");
wireSort("#conns-table", "conns");
window.addEventListener("hashchange", route);
if (token.get()) start();
else showLogin("");
