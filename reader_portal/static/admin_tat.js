// The turnaround dashboard: cards, live SLA breaches, where the time goes, each stage's
// figures per group and the trend (charts from admin.js).
"use strict";
const STAGES = PAGE.stages;
const TOTALS = ["arrival_to_signature", "end_to_end"];
const PRIORITY_ORDER = ["stat", "urgent", "routine"];
const BREACH_ROWS = 50;  // the most overdue; the card counts them all (X-Total-Count)
const params = new URLSearchParams(location.search);
const state = { range: params.get("range") || "7d", group: params.get("group") || "site",
                from: params.get("from") || "", to: params.get("to") || "",
                stage: params.get("stage") || "arrival_to_signature" };
const siteNames = {};

function windowIso() {
  if (state.range === "custom" && state.from) {
    const until = state.to ? new Date(new Date(localToIso(state.to)).getTime() + 86400000).toISOString() : new Date().toISOString();
    return { since: localToIso(state.from), until };
  }
  const days = { "1d": 1, "7d": 7, "30d": 30, "90d": 90 }[state.range] || 7;
  const until = new Date();
  return { since: new Date(until.getTime() - days * 86400000).toISOString(), until: until.toISOString() };
}
function groupLabel(group, key) {
  if (group === "priority") return T[key] || key;
  if (group === "reader") return key || T.not_signed_yet;
  if (group === "site") return siteNames[key] || key;
  return key;
}
function sortedKeys(group, groups) {
  const keys = Object.keys(groups);
  if (group === "priority") return keys.sort((a, b) => PRIORITY_ORDER.indexOf(a) - PRIORITY_ORDER.indexOf(b));
  return keys.sort((a, b) => (a === "") - (b === "") || groupLabel(group, a).localeCompare(groupLabel(group, b), LOCALE));
}
function syncControls() {
  $("range").value = state.range;
  $("custom-range").hidden = state.range !== "custom";
  $("from").value = state.from; $("to").value = state.to;
  $("trend-stage").value = state.stage;
  for (const b of document.querySelectorAll("#group-by button")) b.classList.toggle("on", b.dataset.group === state.group);
  const q = new URLSearchParams({ range: state.range, group: state.group, stage: state.stage });
  if (state.range === "custom") { q.set("from", state.from); q.set("to", state.to); }
  if (params.get("lang")) q.set("lang", params.get("lang"));
  history.replaceState(null, "", `${location.pathname}?${q}`);
}
function card(id, value, sub, tone) {
  const c = $(id);
  c.querySelector(".v").textContent = value;
  if (sub !== undefined) c.querySelector(".s").textContent = sub;
  c.classList.remove("red", "amber", "green");
  if (tone) c.classList.add(tone);
}
function drawKpis(all) {
  const sign = all.arrival_to_signature, e2e = all.end_to_end;
  const n = (f) => (f ? T.studies_n.replace("{n}", f.n) : T.no_data);
  card("kpi-sign-p50", sign ? dur(sign.p50_s) : "—", n(sign));
  card("kpi-sign-p90", sign ? dur(sign.p90_s) : "—", sign ? `${T.fig_max} ${dur(sign.max_s)}` : T.no_data);
  card("kpi-e2e-p50", e2e ? dur(e2e.p50_s) : "—", e2e ? `P90 ${dur(e2e.p90_s)} · ${n(e2e)}` : T.no_data);
}
function drawStages(data) {
  const box = $("stage-charts"); box.replaceChildren();
  const keys = sortedKeys(data.group_by, data.groups);
  const order = [...TOTALS, ...data.stages.filter((s) => !TOTALS.includes(s))];
  for (const stage of order) {
    const title = T["stage_" + stage] || stage;
    const rows = keys.filter((k) => data.groups[k][stage]).map((k) => ({ key: k, label: groupLabel(data.group_by, k), f: data.groups[k][stage] }));
    const panel = el("div", { class: "panel" + (TOTALS.includes(stage) ? " total" : ""), "data-stage": stage },
                     el("h3", {}, title, el("span", { class: "sub" }, T["stage_hint_" + stage] || "")));
    panel.append(rows.length ? stageChart({ stage, title, rows }) : el("p", { class: "muted" }, T.no_data));
    box.append(panel);
  }
  $("group-hint").textContent = T.grouped_by.replace("{g}", T["group_" + data.group_by]);
}
const SEQUENCE = STAGES.filter((st) => !TOTALS.includes(st));
function drawStack(data) {
  const keys = sortedKeys(data.group_by, data.groups).filter((k) => SEQUENCE.some((st) => data.groups[k][st]));
  const stages = SEQUENCE.map((key) => ({ key, label: T["stage_" + key] || key }));
  $("stack-legend").replaceChildren(...stages.map((st, k) =>
    el("span", {}, el("i", { style: `background:${STAGE_COLORS[k]}` }), st.label)));
  $("stack").replaceChildren(keys.length
    ? stackChart({ stages, rows: keys.map((k) => ({ key: k, label: groupLabel(data.group_by, k), figures: data.groups[k] })),
                   width: Math.max(700, $("stack").clientWidth || 1240) })
    : el("p", { class: "muted" }, T.no_data));
}
function drawTrend(data, unit) {
  const stage = state.stage;
  const points = Object.keys(data.groups).filter((k) => k && data.groups[k][stage]).sort()
    .map((k) => ({ key: k, label: unit === "week" ? T.week_of.replace("{d}", k) : k, short: k.slice(5), f: data.groups[k][stage] }));
  const title = `${T["stage_" + stage]} · ${unit === "week" ? T.per_week : T.per_day}`;
  $("trend").replaceChildren(trendChart({ points, title, width: Math.max(640, $("trend").clientWidth || 1040) }));
  $("trend").firstChild.dataset.stage = stage;
  $("trend").firstChild.dataset.unit = unit;
  $("trend-hint").textContent = title;
}
async function load() {
  syncControls();
  const { since, until } = windowIso();
  const w = `since=${enc(since)}&until=${enc(until)}`;
  $("csv").href = `/api/tat.csv?${w}`;
  const unit = (new Date(until) - new Date(since)) / 86400000 > 45 ? "week" : "day";
  try {
    const [groups, all, trend] = await Promise.all([
      api(`/api/tat?group_by=${state.group}&${w}`), api(`/api/tat?group_by=all&${w}`), api(`/api/tat?group_by=${unit}&${w}`)]);
    $("load-error").hidden = true;
    drawKpis(all.groups.all || {});
    drawStack(groups);
    drawStages(groups);
    drawTrend(trend, unit);
    document.body.dataset.loaded = `${state.group}|${state.range}|${state.stage}`;
    stamp($("updated"));
  } catch (e) { showError($("load-error"), e); }
}
function stateLabel(s) { return T["breach_state_" + s] || T[s] || s; }
async function loadBreaches() {
  let rows, total;
  try { ({ rows, total } = await apiWithTotal(`/api/sla/breaches?limit=${BREACH_ROWS}`)); }
  catch (e) { showError($("load-error"), e); return; }
  const body = $("breaches").querySelector("tbody"); body.replaceChildren();
  for (const b of rows) {
    const tr = el("tr", { class: b.priority });
    tr.dataset.study = b.study_instance_uid;
    tr.append(el("td", {}, el("span", { class: "badge " + b.priority }, T[b.priority] || b.priority)),
              el("td", {}, el("span", { class: "uid", title: b.study_instance_uid }, b.study_instance_uid)),
              el("td", {}, siteNames[b.site] || b.site),
              el("td", {}, stateLabel(b.state)),
              el("td", {}, b.held_by || el("span", { class: "muted" }, T.nobody)),
              el("td", { class: "num" }, el("span", { class: "overdue" }, dur(b.overdue_s))),
              el("td", {}, fmt(b.sla_due_at)));
    body.append(tr);
  }
  if (!rows.length) body.append(el("tr", { class: "empty-row" }, el("td", { colSpan: 7 }, T.no_breaches)));
  const stat = rows.filter((b) => b.priority === "stat").length;
  const sub = !total ? T.no_breaches
    : total > rows.length ? T.breaches_more.replace("{n}", rows.length) : T.of_which_stat.replace("{n}", stat);
  card("kpi-breaches", total.toLocaleString(LOCALE), sub, total ? "red" : "green");
}
async function loadSiteNames() {
  try { for (const e of await api("/api/edges")) siteNames[e.site] = e.display_name || e.site; } catch (_) { /* names only */ }
}

$("controls").addEventListener("submit", (e) => e.preventDefault());
$("range").addEventListener("change", () => {
  state.range = $("range").value;
  if (state.range === "custom" && !state.from) { state.to = localDay(); state.from = localDay(new Date(Date.now() - 6 * 86400000)); }
  refresh();
});
for (const id of ["from", "to"]) $(id).addEventListener("change", () => { state[id] = $(id).value; if (state.from) refresh(); });
for (const b of document.querySelectorAll("#group-by button")) b.addEventListener("click", () => { state.group = b.dataset.group; refresh(); });
$("trend-stage").addEventListener("change", () => { state.stage = $("trend-stage").value; refresh(); });
// The figures every 5 minutes and the breaches every 30 s, once the townships' names are known.
let figures = null;
function refresh() { if (figures) figures.now(); }  // before that, the first load reads the new state
loadSiteNames().then(() => { figures = poll(300000, load); poll(30000, loadBreaches); });
