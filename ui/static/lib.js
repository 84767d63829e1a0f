// Helpers of the lbd console: the API client, DOM building (text only,
// never HTML), formatting, a small canvas chart and the event stream.

const TOKEN_KEY = "lbd-token";

export const token = {
  get: () => sessionStorage.getItem(TOKEN_KEY) || "",
  set: (t) => sessionStorage.setItem(TOKEN_KEY, t),
  clear: () => sessionStorage.removeItem(TOKEN_KEY),
};

// ApiError is a refused request: the API's problem+json.
export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

// api calls the REST API with the token. It returns {data, etag}; a
// refusal throws ApiError, a network failure a TypeError.
export async function api(path, { method = "GET", body, ifMatch, signal } = {}) {
  const headers = { Authorization: "Bearer " + token.get(), Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (ifMatch) headers["If-Match"] = ifMatch; // only when the API gave an ETag
  const resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal, cache: "no-store" });
  const type = resp.headers.get("Content-Type") || "";
  let data = null;
  if (resp.status !== 204) {
    data = type.includes("json") ? await resp.json().catch(() => null) : await resp.text();
  }
  if (!resp.ok) {
    const p = data && typeof data === "object" ? data : { title: resp.statusText, detail: String(data || "") };
    p.status = p.status || resp.status;
    throw new ApiError(resp.status, p);
  }
  return { data, etag: resp.headers.get("ETag") };
}

// el builds an element: attrs are properties or attributes (no event
// handler strings, no HTML); children are nodes or text.
export function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "dataset") Object.assign(e.dataset, v);
    else if (k === "onclick" || k === "onchange" || k === "oninput") e.addEventListener(k.slice(2), v);
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

export const clear = (node) => { node.replaceChildren(); return node; };

export function num(n) {
  return Number(n || 0).toLocaleString("en-US");
}

export function rate(n, unit) {
  const v = Number(n || 0);
  if (v >= 1e9) return (v / 1e9).toFixed(2) + " G" + unit;
  if (v >= 1e6) return (v / 1e6).toFixed(2) + " M" + unit;
  if (v >= 1e3) return (v / 1e3).toFixed(1) + " k" + unit;
  return v.toFixed(v < 10 && v !== 0 ? 1 : 0) + " " + unit;
}

export function bytes(n) {
  const v = Number(n || 0);
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0, x = v;
  while (x >= 1024 && i < u.length - 1) { x /= 1024; i++; }
  return (i === 0 ? x.toFixed(0) : x.toFixed(1)) + " " + u[i];
}

export function ago(t, now = Date.now()) {
  const ms = now - new Date(t).getTime();
  if (!isFinite(ms)) return "";
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return s + "s";
  if (s < 3600) return Math.floor(s / 60) + "m" + String(s % 60).padStart(2, "0") + "s";
  if (s < 86400) return Math.floor(s / 3600) + "h" + String(Math.floor(s / 60) % 60).padStart(2, "0") + "m";
  return Math.floor(s / 86400) + "d";
}

export function clock(t) {
  const d = new Date(t);
  return isNaN(d) ? "" : d.toLocaleTimeString("en-GB", { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
}

// History keeps the last n samples of named series (rates over time).
export class History {
  constructor(n) { this.n = n; this.series = new Map(); }
  push(name, v) {
    let s = this.series.get(name);
    if (!s) { s = []; this.series.set(name, s); }
    s.push(v);
    if (s.length > this.n) s.shift();
  }
  get(name) { return this.series.get(name) || []; }
}

const COLORS = ["#2f6fde", "#e0822b", "#2a9d5b", "#c2403a", "#8a5cc7", "#3aa3b8", "#b5922a", "#d15b9b", "#6b7a8f", "#5aa02c"];
export const color = (i) => COLORS[i % COLORS.length];

// sparkline draws values (oldest first) on a canvas, with the maximum.
export function sparkline(canvas, values, stroke = "#2f6fde") {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || canvas.width, h = canvas.clientHeight || canvas.height;
  canvas.width = w * dpr; canvas.height = h * dpr;
  const g = canvas.getContext("2d");
  g.scale(dpr, dpr);
  g.clearRect(0, 0, w, h);
  g.strokeStyle = "#e3e7ee"; g.lineWidth = 1;
  g.beginPath(); g.moveTo(0, h - 0.5); g.lineTo(w, h - 0.5); g.stroke();
  if (values.length < 2) return;
  const max = Math.max(...values, 1);
  const step = w / (values.length - 1);
  g.beginPath();
  values.forEach((v, i) => {
    const x = i * step, y = h - 2 - (v / max) * (h - 12);
    if (i === 0) g.moveTo(x, y); else g.lineTo(x, y);
  });
  g.strokeStyle = stroke; g.lineWidth = 1.5; g.stroke();
  g.lineTo(w, h); g.lineTo(0, h); g.closePath();
  g.globalAlpha = 0.12; g.fillStyle = stroke; g.fill(); g.globalAlpha = 1;
  g.fillStyle = "#6b7280"; g.font = "10px system-ui, sans-serif"; g.textBaseline = "top";
  g.fillText("max " + rate(max, ""), 3, 1);
}

// ring draws the shares (0..1) of a ring as a donut.
export function ring(canvas, shares) {
  const dpr = window.devicePixelRatio || 1;
  const s = canvas.clientWidth || canvas.width;
  canvas.width = s * dpr; canvas.height = s * dpr;
  const g = canvas.getContext("2d");
  g.scale(dpr, dpr);
  g.clearRect(0, 0, s, s);
  const r = s / 2 - 2;
  let a = -Math.PI / 2;
  const total = shares.reduce((x, y) => x + y, 0);
  if (total === 0) {
    g.beginPath(); g.arc(s / 2, s / 2, r, 0, 2 * Math.PI); g.fillStyle = "#e3e7ee"; g.fill();
  }
  shares.forEach((v, i) => {
    if (v <= 0) return;
    const b = a + 2 * Math.PI * v;
    g.beginPath(); g.moveTo(s / 2, s / 2); g.arc(s / 2, s / 2, r, a, b); g.closePath();
    g.fillStyle = color(i); g.fill();
    a = b;
  });
  g.beginPath(); g.arc(s / 2, s / 2, r * 0.55, 0, 2 * Math.PI); g.fillStyle = "#fff"; g.fill();
}

// EventStream follows /api/v1/events with fetch (EventSource cannot send
// the Authorization header), resuming after the last id it saw
// (Last-Event-ID) whenever the connection breaks.
export class EventStream {
  constructor({ source, onMessage, onState }) {
    this.source = source;
    this.onMessage = onMessage;
    this.onState = onState;
    this.lastID = "";
    this.stopped = false;
    this.retry = 500;
  }
  start() { this.stopped = false; this.loop(); }
  stop() { this.stopped = true; if (this.ctrl) this.ctrl.abort(); }
  restart(source) { this.source = source; if (this.ctrl) this.ctrl.abort(); }
  async loop() {
    while (!this.stopped) {
      this.ctrl = new AbortController();
      try {
        this.onState("connecting");
        const headers = { Authorization: "Bearer " + token.get(), Accept: "text/event-stream" };
        if (this.lastID) headers["Last-Event-ID"] = this.lastID;
        const resp = await fetch("/api/v1/events?source=" + this.source, { headers, signal: this.ctrl.signal, cache: "no-store" });
        if (resp.status === 401) { this.onState("unauthorized"); return; }
        if (!resp.ok) throw new Error("HTTP " + resp.status);
        this.onState("live");
        this.retry = 500;
        await this.read(resp.body);
      } catch (e) {
        if (this.stopped) return;
      }
      if (this.stopped) return;
      this.onState("reconnecting");
      await new Promise((r) => setTimeout(r, this.retry));
      this.retry = Math.min(this.retry * 2, 5000);
    }
  }
  async read(body) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "", id = "", event = "", data = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += value;
      let nl;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl).replace(/\r$/, "");
        buf = buf.slice(nl + 1);
        if (line === "") {
          if (event) {
            let parsed = null;
            try { parsed = JSON.parse(data); } catch { parsed = { raw: data }; }
            if (id) this.lastID = id;
            this.onMessage({ id, event, data: parsed });
          }
          id = event = data = "";
        } else if (line.startsWith("id:")) id = line.slice(3).trim();
        else if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data += line.slice(5).trim();
      }
    }
  }
}
