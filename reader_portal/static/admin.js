// Charts and formatting for the administrator's pages: inline SVG, no library, nothing
// fetched from outside the county. Loaded after portal.js, so T, LOCALE,
// ZONE and api() are defined. Every drawn mark carries its exact figure in data-* attributes and a
// <title> tooltip, so what a person sees can be checked against the API's numbers.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const PALETTE = { p50: "#1f6fb2", p90: "#9cc3e6", max: "#5b6b7a", count: "#e3e8ee", line90: "#ef6c00",
                  grid: "#e3e8ee", axis: "#5b6b7a", good: "#2e7d32" };

function svg(name, attrs = {}, ...children) {
  const e = document.createElementNS(SVG_NS, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  e.append(...children.filter((c) => c !== null && c !== undefined));
  return e;
}
function tip(text) { return svg("title", {}, text); }

function bytes(n) {
  if (n === null || n === undefined) return "—";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let v = n, i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
  return `${(v >= 10 || i === 0 ? Math.round(v) : Math.round(v * 10) / 10).toLocaleString(LOCALE)} ${units[i]}`;
}
function ago(iso) {
  if (!iso) return T.hb_never;
  return T.ago.replace("{d}", dur((Date.now() - new Date(iso).getTime()) / 1000));
}
// A "nice" axis for durations: a step people count in (30 s, 5 min, 2 h, 1 d…) and the
// first multiple of it at or above v, in at most 5 steps.
const STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1200, 1800, 3600, 7200, 10800, 14400, 21600, 43200,
               86400, 172800, 432000, 604800, 1209600, 2592000];
function niceScale(v) {
  if (!(v > 0)) return { top: 60, step: 15 };
  const step = STEPS.find((st) => v / st <= 5) || 10 ** Math.ceil(Math.log10(v / 5));
  return { top: Math.ceil(v / step) * step, step };
}
function ticks({ top, step }) { return Array.from({ length: Math.round(top / step) + 1 }, (_, i) => i * step); }
// A "nice" axis for counts: 1, 2 or 5 × 10^k per step.
function niceCount(v) {
  if (!(v > 0)) return { top: 1, step: 1 };
  const raw = v / 4, p = 10 ** Math.floor(Math.log10(raw));
  const step = Math.max(1, [1, 2, 5, 10].find((m) => m * p >= raw) * p);
  return { top: Math.ceil(v / step) * step, step };
}

// A stage's figures, one row per group: a dark bar to p50, a light band from p50 to p90 (the
// "box"), a whisker to the maximum (an arrow at the edge when the maximum is off the scale,
// which is set by the p90s so that one outlier does not flatten everyone).
function stageChart({ stage, title, rows, width = 620 }) {
  const labelW = 100, valueW = 200, rowH = 26, top = 8, axisH = 20;
  const plotW = width - labelW - valueW;
  const scale = niceScale(Math.max(...rows.map((r) => r.f.p90_s)) * 1.05), scaleMax = scale.top;
  const x = (v) => labelW + Math.min(v, scaleMax) / scaleMax * plotW;
  const height = top + rows.length * rowH + axisH;
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, style: `width:100%;max-width:${width * 1.25}px;height:auto`,
                            class: "chart stage-chart",
                            "data-stage": stage, "data-scale-max": scaleMax, "data-x0": labelW, "data-plot-w": plotW,
                            role: "img", "aria-label": title });
  for (const t of ticks(scale)) {
    root.append(svg("line", { x1: x(t), x2: x(t), y1: top - 4, y2: height - axisH + 2, stroke: PALETTE.grid }),
                svg("text", { x: x(t), y: height - 5, "text-anchor": "middle", class: "tick" }, dur(t)));
  }
  rows.forEach((r, i) => {
    const y = top + i * rowH, mid = y + rowH / 2, f = r.f;
    const g = svg("g", { class: "row", "data-group": r.key, "data-n": f.n, "data-p50": f.p50_s, "data-p90": f.p90_s,
                         "data-max": f.max_s },
                  tip(`${r.label} · ${title}\n${T.studies_n.replace("{n}", f.n)}\nP50 ${dur(f.p50_s)} · P90 ${dur(f.p90_s)} · ${T.fig_max} ${dur(f.max_s)}`));
    g.append(svg("text", { x: labelW - 8, y: mid + 4, "text-anchor": "end", class: "label" }, r.label));
    const offScale = f.max_s > scaleMax;
    g.append(svg("line", { x1: x(f.p90_s), x2: x(f.max_s) - (offScale ? 6 : 0), y1: mid, y2: mid, stroke: PALETTE.max,
                           "stroke-width": 1.2, class: "whisker" }));
    g.append(offScale
      ? svg("path", { d: `M${x(f.max_s) - 7},${mid - 4} L${x(f.max_s)},${mid} L${x(f.max_s) - 7},${mid + 4} Z`, fill: PALETTE.max, class: "max-mark" })
      : svg("line", { x1: x(f.max_s), x2: x(f.max_s), y1: mid - 5, y2: mid + 5, stroke: PALETTE.max, "stroke-width": 1.5, class: "max-mark" }));
    g.append(svg("rect", { x: x(f.p50_s), y: y + 5, width: Math.max(0, x(f.p90_s) - x(f.p50_s)), height: rowH - 10,
                           fill: PALETTE.p90, class: "bar-p90", rx: 2 }));
    g.append(svg("rect", { x: labelW, y: y + 5, width: Math.max(1, x(f.p50_s) - labelW), height: rowH - 10,
                           fill: PALETTE.p50, class: "bar-p50", rx: 2 }));
    g.append(svg("text", { x: width - valueW + 8, y: mid + 4, class: "value" },
                 svg("tspan", { class: "v50" }, dur(f.p50_s)), svg("tspan", { class: "sep", dx: 4 }, "/"),
                 svg("tspan", { class: "v90", dx: 4 }, dur(f.p90_s)),
                 svg("tspan", { class: "vmax", dx: 6 }, `${T.max_short} ${dur(f.max_s)}`)));
    root.append(g);
  });
  return root;
}

// Where the time goes: per group, the medians of the consecutive stages side by side in one
// bar (a sum of medians, not the median of the sums: it shows proportions, not a total).
const STAGE_COLORS = ["#5b8fb9", "#f2a541", "#e07a5f", "#1f6fb2", "#81b29a", "#9c89b8"];
function stackChart({ rows, stages, width = 1240 }) {
  const labelW = 110, valueW = 110, rowH = 30, top = 6, axisH = 22;
  const plotW = width - labelW - valueW;
  const total = (r) => stages.reduce((a, st) => a + (r.figures[st.key] ? r.figures[st.key].p50_s : 0), 0);
  const scale = niceScale(Math.max(...rows.map(total)) * 1.02);
  const x = (v) => labelW + (v / scale.top) * plotW;
  const height = top + rows.length * rowH + axisH;
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, style: "width:100%;height:auto", class: "chart stack-chart",
                            "data-scale-max": scale.top, role: "img" });
  for (const t of ticks(scale)) {
    root.append(svg("line", { x1: x(t), x2: x(t), y1: top - 2, y2: height - axisH + 2, stroke: PALETTE.grid }),
                svg("text", { x: x(t), y: height - 6, "text-anchor": "middle", class: "tick" }, dur(t)));
  }
  rows.forEach((r, i) => {
    const y = top + i * rowH;
    const g = svg("g", { class: "row", "data-group": r.key },
                  svg("text", { x: labelW - 8, y: y + rowH / 2 + 4, "text-anchor": "end", class: "label" }, r.label));
    let at = 0;
    stages.forEach((st, k) => {
      const f = r.figures[st.key];
      if (!f) return;
      g.append(svg("rect", { x: x(at), y: y + 5, width: Math.max(0, x(at + f.p50_s) - x(at)), height: rowH - 10,
                             fill: STAGE_COLORS[k % STAGE_COLORS.length], "data-stage": st.key, "data-value": f.p50_s, class: "seg" },
                   tip(`${r.label} · ${st.label}: P50 ${dur(f.p50_s)} (${T.studies_n.replace("{n}", f.n)})`)));
      at += f.p50_s;
    });
    g.append(svg("text", { x: x(at) + 8, y: y + rowH / 2 + 4, class: "value" }, svg("tspan", { class: "v50" }, dur(at))));
    root.append(g);
  });
  return root;
}

// A trend over days or weeks: p50 and p90 lines of one stage, with the number of studies as
// pale bars behind (their own scale, on the right).
function trendChart({ points, title, width = 1040, height = 260 }) {
  const left = 64, right = 48, top = 16, bottom = 36;
  const plotW = width - left - right, plotH = height - top - bottom;
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, width: "100%", height, class: "chart trend-chart",
                            role: "img", "aria-label": title, preserveAspectRatio: "xMidYMid meet" });
  if (!points.length) {
    root.append(svg("text", { x: width / 2, y: height / 2, "text-anchor": "middle", class: "empty" }, T.no_data));
    return root;
  }
  const yScale = niceScale(Math.max(...points.map((p) => p.f.p90_s)) * 1.05), yMax = yScale.top;
  const nMax = niceCount(Math.max(...points.map((p) => p.f.n))).top;
  const step = plotW / points.length;
  const cx = (i) => left + step * (i + 0.5), y = (v) => top + plotH - (v / yMax) * plotH;
  root.dataset.yMax = yMax;
  for (const t of ticks(yScale)) {
    root.append(svg("line", { x1: left, x2: width - right, y1: y(t), y2: y(t), stroke: PALETTE.grid }),
                svg("text", { x: left - 6, y: y(t) + 4, "text-anchor": "end", class: "tick" }, dur(t)));
  }
  const bars = svg("g", { class: "counts" });
  points.forEach((p, i) => {
    const h = (p.f.n / nMax) * plotH * 0.6, w = Math.min(step * 0.7, 56);  // behind the lines, below them
    bars.append(svg("rect", { x: cx(i) - w / 2, y: top + plotH - h, width: w, height: h, fill: PALETTE.count,
                              "data-n": p.f.n }, tip(`${p.label}: ${T.studies_n.replace("{n}", p.f.n)}`)));
    if (points.length <= 31) bars.append(svg("text", { x: cx(i), y: top + plotH - 4, "text-anchor": "middle", class: "count" }, p.f.n));
  });
  root.append(bars);
  const every = Math.ceil(points.length / 14);
  points.forEach((p, i) => {
    if (i % every === 0) root.append(svg("text", { x: cx(i), y: height - bottom + 18, "text-anchor": "middle", class: "tick" }, p.short));
  });
  for (const [key, color, dash] of [["p90_s", PALETTE.line90, "5 4"], ["p50_s", PALETTE.p50, ""]]) {
    const d = points.map((p, i) => `${i ? "L" : "M"}${cx(i).toFixed(1)},${y(p.f[key]).toFixed(1)}`).join(" ");
    root.append(svg("path", { d, fill: "none", stroke: color, "stroke-width": 2.2, "stroke-dasharray": dash, class: `line-${key}` }));
    const dots = svg("g", { class: `dots-${key}` });
    points.forEach((p, i) => dots.append(svg("circle", { cx: cx(i), cy: y(p.f[key]), r: 3.5, fill: "#fff", stroke: color,
                                                         "stroke-width": 2, "data-key": p.key, "data-value": p.f[key] },
      tip(`${p.label} · ${key === "p50_s" ? "P50" : "P90"} ${dur(p.f[key])} · ${T.studies_n.replace("{n}", p.f.n)}`))));
    root.append(dots);
  }
  return root;
}

// Horizontal bars of one figure per row (the readers' workload), with the value written.
function barChart({ title, rows, format = (v) => String(v), color = PALETTE.p50, width = 340 }) {
  const labelW = 90, valueW = 70, rowH = 24, top = 4;
  const plotW = width - labelW - valueW;
  const max = Math.max(...rows.map((r) => r.value ?? 0), 0) || 1;
  const height = top * 2 + rows.length * rowH;
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, width, height, class: "chart bar-chart", role: "img",
                            "aria-label": title });
  rows.forEach((r, i) => {
    const y = top + i * rowH, w = r.value ? (r.value / max) * plotW : 0;
    root.append(svg("g", { class: "row", "data-key": r.key, "data-value": r.value ?? "" },
      svg("text", { x: labelW - 8, y: y + rowH / 2 + 4, "text-anchor": "end", class: "label" }, r.label),
      svg("rect", { x: labelW, y: y + 4, width: Math.max(w, r.value ? 1 : 0), height: rowH - 8, fill: color, rx: 2 }),
      svg("text", { x: labelW + w + 6, y: y + rowH / 2 + 4, class: "value" }, r.value === null || r.value === undefined ? "—" : format(r.value)),
      tip(`${r.label}: ${r.value === null || r.value === undefined ? "—" : format(r.value)}`)));
  });
  return root;
}

// Times the administrator types are the site's (ZONE); the API wants UTC instants.
function zoneOffset(date = new Date()) {
  const part = new Intl.DateTimeFormat("en-US", { timeZone: ZONE, timeZoneName: "longOffset" })
    .formatToParts(date).find((p) => p.type === "timeZoneName").value;
  const m = /GMT([+-]\d\d):?(\d\d)?/.exec(part);
  return m ? `${m[1]}:${m[2] || "00"}` : "+00:00";
}
function localToIso(value) {  // "2026-11-23" or "2026-11-23T08:30" in ZONE -> ISO instant
  if (!value) return "";
  const full = value.length === 10 ? `${value}T00:00:00` : (value.length === 16 ? `${value}:00` : value);
  return new Date(`${full}${zoneOffset(new Date(full + "Z"))}`).toISOString();
}
function localDay(date = new Date()) {  // YYYY-MM-DD in ZONE
  return new Intl.DateTimeFormat("en-CA", { timeZone: ZONE, year: "numeric", month: "2-digit", day: "2-digit" }).format(date);
}
// A list and the X-Total-Count header that says how many there are beyond its limit.
async function apiWithTotal(url) {
  const r = await api(url, { raw: true });
  const rows = await r.json();
  const total = Number(r.headers.get("X-Total-Count"));
  return { rows, total: Number.isFinite(total) && r.headers.has("X-Total-Count") ? total : rows.length };
}
