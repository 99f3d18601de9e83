// The readers' roster: the week's shifts, who is on duty now, the open critical results,
// and (for those who may edit) adding shifts and the manual on-duty switch.
"use strict";
const CAN_EDIT = PAGE.can_edit;
const CAN_SEE_CRITICAL = PAGE.can_see_critical;
const leadBadge = () => el("span", { class: "badge-lead", title: T.lead_shift }, T.lead);
const DAYS = T.weekdays.split(",");
const localDate = (d) => d.toLocaleDateString("sv-SE", { timeZone: ZONE });  // YYYY-MM-DD in the county's zone
const hhmm = (iso) => new Date(iso).toLocaleTimeString("en-GB", { timeZone: ZONE, hour: "2-digit", minute: "2-digit", hour12: false });
function addDays(ymd, n) { const d = new Date(`${ymd}T12:00:00Z`); d.setUTCDate(d.getUTCDate() + n); return d.toISOString().slice(0, 10); }
function mondayOf(ymd) { const wd = (new Date(`${ymd}T12:00:00Z`).getUTCDay() + 6) % 7; return addDays(ymd, -wd); }
const TODAY = localDate(new Date());
let weekStart = new URLSearchParams(location.search).get("week") || mondayOf(TODAY);

function shiftChip(o) {
  const night = localDate(new Date(o.end)) !== localDate(new Date(o.start));
  const chip = el("div", { class: "shift" + (o.leave ? " leave" : night ? " night" : "") },
    el("span", { class: "time" }, `${hhmm(o.start)}–${night ? T.next_day + " " : ""}${hhmm(o.end)}`), " ",
    el("span", {}, o.leave ? `${T.leave} ${o.label}` : o.label), el("br"),
    el("span", {}, o.display_name || o.username), o.lead ? leadBadge() : null,
    o.weekly ? el("span", { class: "tag" }, T.weekly) : null);
  chip.dataset.shift = o.shift_id;
  chip.dataset.user = o.username;
  if (CAN_EDIT) {
    const x = el("button", { type: "button", title: T.remove, "aria-label": T.remove }, "×");
    x.addEventListener("click", async () => {
      if (!confirm(o.weekly ? T.remove_weekly_confirm : T.remove_confirm)) return;
      await api(`/api/roster/shifts/${o.shift_id}`, { method: "DELETE" });
      load();
    });
    chip.append(x);
  }
  return chip;
}

async function loadWeek() {
  const week = await api(`/api/roster/week?start=${weekStart}`);
  const box = $("week"); box.replaceChildren();
  for (let i = 0; i < 7; i++) {
    const day = addDays(weekStart, i);
    const col = el("div", { class: "day" + (day === TODAY ? " today" : "") },
                   el("h3", {}, el("span", {}, DAYS[i]), el("span", {}, day.slice(5))));
    col.dataset.day = day;
    const here = week.occurrences.filter((o) => localDate(new Date(o.start)) === day);
    col.append(...(here.length ? here.map(shiftChip) : [el("div", { class: "empty" }, T.no_shifts)]));
    box.append(col);
  }
  $("range").textContent = `${weekStart} – ${addDays(weekStart, 6)} (${week.timezone})`;
}

async function loadNow() {
  const list = await api("/api/roster/on-duty");
  const box = $("now-list");
  if (!list.length) { box.replaceChildren(el("span", { class: "nobody" }, T.roster_nobody)); return; }
  box.replaceChildren(...list.map((d) => {
    const why = d.shift ? `${d.shift.label || ""} ${hhmm(d.shift.start)}–${hhmm(d.shift.end)}` : T.by_switch;
    const chip = el("span", { class: "who" }, `${d.display_name || d.username} · ${why.trim()}`,
                    d.lead ? leadBadge() : null);
    chip.dataset.user = d.username;
    return chip;
  }));
}

const timeText = (iso) => iso ? `${localDate(new Date(iso))} ${hhmm(iso)}` : "–";
function escalation(c) {
  if (!c.escalated_at) return el("span", {}, T.not_escalated);
  if (!c.escalated_to.length) return el("span", { class: "no-lead" }, `${T.escalated_no_lead} ${timeText(c.escalated_at)}`);
  return el("span", {}, `${T.escalated_to} ${c.escalated_to.join(", ")} ${timeText(c.escalated_at)}`);
}
async function loadCritical() {
  const list = await api("/api/roster/critical");
  const box = $("critical-list");
  if (!list.length) { box.replaceChildren(el("span", { class: "empty" }, T.critical_none)); return; }
  const head = el("tr", {}, ...[T.site, T.study_uid, T.signed_at, T.alerted_at, T.escalation].map((h) => el("th", {}, h)));
  box.replaceChildren(el("table", {}, el("thead", {}, head), el("tbody", {}, ...list.map((c) => {
    const row = el("tr", {}, el("td", {}, c.site), el("td", {}, c.study_instance_uid), el("td", {}, timeText(c.signed_at)),
                   el("td", {}, timeText(c.notified_at)), el("td", {}, escalation(c)));
    row.dataset.delivery = c.delivery_id;
    return row;
  }))));
}

function load() {
  loadWeek().catch((e) => { $("week").textContent = failure(e); });
  loadNow().catch(() => {});
  if (CAN_SEE_CRITICAL) loadCritical().catch((e) => { $("critical-list").textContent = failure(e); });
}

// The manual switch: on duty at any time, whatever the roster (PATCH /api/users/{name}).
function renderSwitches(readers) {
  $("switch-list").replaceChildren(...readers.map((r) => {
    const box = el("input", { type: "checkbox", checked: r.on_duty_switch });
    box.dataset.user = r.username;
    box.addEventListener("change", async () => {
      try { await api(`/api/users/${enc(r.username)}`, { method: "PATCH", body: { on_duty: box.checked } }); load(); }
      catch (e) { box.checked = !box.checked; $("f-msg").textContent = failure(e); }
    });
    return el("label", {}, box, r.display_name || r.username);
  }));
}
async function wireForm() {
  const readers = await api("/api/roster/readers");
  renderSwitches(readers);
  $("f-reader").replaceChildren(...readers.map((r) => el("option", { value: r.username },
    r.display_name && r.display_name !== r.username ? `${r.display_name} (${r.username})` : r.username)));
  $("f-weekday").replaceChildren(...DAYS.map((d, i) => el("option", { value: String(i) }, d)));
  $("f-date").value = TODAY;
  $("f-repeat").addEventListener("change", () => {
    const dated = $("f-repeat").value === "dated";
    $("l-weekday").hidden = dated; $("l-date").hidden = !dated; $("l-leave").hidden = !dated;
    if (!dated) { $("f-leave").checked = false; $("l-lead").hidden = false; }
  });
  $("f-leave").addEventListener("change", () => {  // a leave line cannot make a lead
    $("l-lead").hidden = $("f-leave").checked; if ($("f-leave").checked) $("f-lead").checked = false;
  });
  for (const b of document.querySelectorAll("[data-preset]")) {
    b.addEventListener("click", () => { [$("f-start").value, $("f-end").value] = b.dataset.preset.split(","); $("f-label").value = b.textContent; });
  }
  $("add").addEventListener("submit", async (e) => {
    e.preventDefault();
    const dated = $("f-repeat").value === "dated";
    const body = { username: $("f-reader").value, start: $("f-start").value, end: $("f-end").value,
                   label: $("f-label").value, leave: $("f-leave").checked, lead: $("f-lead").checked,
                   weekday: dated ? null : parseInt($("f-weekday").value, 10), on_date: dated ? $("f-date").value : null };
    try {
      await api("/api/roster/shifts", { method: "POST", body });
      $("f-msg").textContent = "";
      if (dated) weekStart = mondayOf(body.on_date);
      load();
    } catch (err) { $("f-msg").textContent = failure(err); }
  });
}

$("prev").addEventListener("click", () => { weekStart = addDays(weekStart, -7); load(); });
$("next").addEventListener("click", () => { weekStart = addDays(weekStart, 7); load(); });
$("this").addEventListener("click", () => { weekStart = mondayOf(TODAY); load(); });
if (CAN_EDIT) wireForm().catch((e) => { $("f-msg").textContent = failure(e); });
load();
