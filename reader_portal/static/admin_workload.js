// The readers' workload: what each holds, signs per day and their median reading time.
"use strict";
const perDay = (r) => Math.round((r.signed_7d / 7) * 10) / 10;
async function load() {
  let rows;
  try { rows = await api("/api/readers/workload"); $("load-error").hidden = true; } catch (e) { showError($("load-error"), e); return; }
  const body = $("workload").querySelector("tbody"); body.replaceChildren();
  for (const r of rows) {
    const tr = el("tr", {}); tr.dataset.reader = r.reader;
    tr.append(el("td", {}, r.reader), el("td", { class: "num" }, String(r.holding)), el("td", { class: "num" }, String(r.signed_today)),
              el("td", { class: "num" }, String(r.signed_7d)), el("td", { class: "num" }, perDay(r).toLocaleString(LOCALE)),
              el("td", { class: "num" }, dur(r.median_read_s)));
    body.append(tr);
  }
  if (!rows.length) body.append(el("tr", { class: "empty-row" }, el("td", { colSpan: 6 }, T.no_readers)));
  const sum = (k) => rows.reduce((a, r) => a + r[k], 0);
  for (const [id, v] of [["kpi-holding", sum("holding")], ["kpi-today", sum("signed_today")], ["kpi-week", sum("signed_7d")]]) {
    $(id).querySelector(".v").textContent = v.toLocaleString(LOCALE);
  }
  $("kpi-week").querySelector(".s").textContent = T.per_day_avg.replace("{n}", (Math.round(sum("signed_7d") / 7 * 10) / 10).toLocaleString(LOCALE));
  const bars = (key, value, format, color) => barChart({ title: key, color, format,
    rows: rows.map((r) => ({ key: r.reader, label: r.reader, value: value(r) })) });
  $("chart-holding").replaceChildren(bars("holding", (r) => r.holding, String, "#ef8f00"));
  $("chart-per-day").replaceChildren(bars("per_day", perDay, (v) => v.toLocaleString(LOCALE), "#1f6fb2"));
  $("chart-median").replaceChildren(bars("median", (r) => r.median_read_s, dur, "#2e7d32"));
  document.body.dataset.loaded = String(Date.now());
  stamp($("updated"));
}
poll(60000, load);
