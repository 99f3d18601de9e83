// The edge fleet: one row per township edge, alarms first, refreshed every 15 s.
"use strict";
const REFRESH_MS = 15000;
function alarmTone(e) { return e.alarms.includes("silent") ? "red" : (e.alarms.length ? "amber" : ""); }
function statusBadges(e) {
  if (!e.alarms.length) return [el("span", { class: "badge green" }, T.edge_ok)];
  return e.alarms.map((a) => el("span", { class: "badge " + (a === "silent" ? "red" : "amber"), "data-alarm": a }, T["alarm_" + a] || a));
}
function offset(s) {
  if (s === null || s === undefined) return "—";
  const text = `${s >= 0 ? "+" : "−"}${dur(Math.abs(s))}`;
  return Math.abs(s) > 60 ? el("span", { class: "overdue", title: T.clock_off_hint }, text) : text;
}
function setCard(id, value, tone) {
  const c = $(id); c.querySelector(".v").textContent = value;
  c.classList.remove("red", "amber", "green"); if (tone) c.classList.add(tone);
}
async function load() {
  let edges;
  try { edges = await api("/api/edges"); $("load-error").hidden = true; } catch (e) { showError($("load-error"), e); return; }
  const rank = (e) => (alarmTone(e) === "red" ? 0 : alarmTone(e) === "amber" ? 1 : 2);
  edges.sort((a, b) => rank(a) - rank(b) || (a.display_name || a.site).localeCompare(b.display_name || b.site, LOCALE));
  const body = $("fleet").querySelector("tbody"); body.replaceChildren();
  for (const e of edges) {
    const tone = alarmTone(e);
    const tr = el("tr", { class: tone ? "alarm-" + tone : "" });
    tr.dataset.site = e.site; tr.dataset.alarms = e.alarms.join(" ");
    const beat = e.last_heartbeat_at;
    tr.append(el("td", {}, el("span", { class: "site-name" }, e.display_name || e.site),
                         e.display_name && e.display_name !== e.site ? el("span", { class: "muted site-id" }, e.site) : null),
              el("td", {}, ...statusBadges(e)),
              el("td", { title: beat ? fmt(beat) : "" }, beat ? ago(beat) : el("span", { class: "muted" }, T.hb_never)),
              el("td", { class: "num" }, e.spool_instances === null ? "—" : `${e.spool_instances.toLocaleString(LOCALE)} ${T.instances_unit}`,
                 e.spool_bytes ? el("div", { class: "muted" }, bytes(e.spool_bytes)) : null),
              el("td", { class: "num" }, e.oldest_unsent_age_s === null ? "—" :
                 (e.spool_stale ? el("span", { class: "overdue" }, dur(e.oldest_unsent_age_s)) : dur(e.oldest_unsent_age_s))),
              el("td", { class: "num" }, e.goodput_bps === null ? "—" : `${bytes(e.goodput_bps)}/s`),
              el("td", { class: "num" }, bytes(e.disk_free_bytes)),
              el("td", {}, e.version || "—"),
              el("td", { class: "num" }, offset(e.clock_offset_s)),
              el("td", { class: "err", title: e.last_error || "" }, e.last_error || ""));
    body.append(tr);
  }
  if (!edges.length) body.append(el("tr", { class: "empty-row" }, el("td", { colSpan: 10 }, T.no_edges)));
  const silent = edges.filter((e) => e.alarms.includes("silent")).length;
  const stale = edges.filter((e) => e.alarms.includes("spool_stale")).length;
  const ok = edges.filter((e) => !e.alarms.length).length;
  setCard("kpi-total", String(edges.length));
  setCard("kpi-ok", String(ok), ok === edges.length && edges.length ? "green" : "");
  setCard("kpi-silent", String(silent), silent ? "red" : "green");
  setCard("kpi-stale", String(stale), stale ? "amber" : "green");
  document.body.dataset.loaded = String(Date.now());
  stamp($("updated"));
}
poll(REFRESH_MS, load);
