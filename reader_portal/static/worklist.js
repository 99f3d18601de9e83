// The reading worklist: filters <-> the query string <-> GET /api/worklist, the SLA
// countdown on the server's clock, polling, and claiming a study by opening it.
"use strict";
const table = $("worklist");
const form = $("filters");
const pageParams = new URLSearchParams(location.search);
const POLL_MS = Math.max(1, Number(pageParams.get("refresh")) || 10) * 1000;
const SIMPLE = ["priority", "modality", "site", "state"];
const OTHER_LANG = new URLSearchParams($("lang-switch").search).get("lang");

// --- filters: controls <-> the page's query string <-> the API's -------------------------
function control(name) { return form.elements.namedItem(name); }
function fromUrl() {
  for (const name of SIMPLE) {
    const select = control(name), value = pageParams.get(name);
    if (!select || !value) continue;
    if (![...select.options].some((o) => o.value === value)) select.append(el("option", { value }, value));
    select.value = value;
  }
  const mine = pageParams.has("mine"), free = pageParams.has("unassigned");
  if (control("holder")) control("holder").value = mine && free ? "mine_or_free" : mine ? "mine" : free ? "unassigned" : "";
  control("patient").value = pageParams.get("patient") || "";
}
function filterQuery() {
  const q = new URLSearchParams();
  for (const name of SIMPLE) { const c = control(name); if (c && c.value) q.set(name, c.value); }
  const holder = control("holder") ? control("holder").value : "";
  if (holder === "mine" || holder === "mine_or_free") q.set("mine", "1");
  if (holder === "unassigned" || holder === "mine_or_free") q.set("unassigned", "1");
  const patient = control("patient").value.trim();
  if (patient) q.set("patient", patient);
  return q;
}
// The address bar shows the filters (a bookmark reopens this view); the language switch keeps them.
function toUrl() {
  const q = filterQuery();
  for (const keep of ["refresh", "lang"]) if (pageParams.get(keep)) q.set(keep, pageParams.get(keep));
  history.replaceState(null, "", q.toString() ? `?${q}` : location.pathname);
  const other = new URLSearchParams(q); other.set("lang", OTHER_LANG);
  $("lang-switch").href = `?${other}`;
}
function filtersChanged() { toUrl(); load(); }
form.addEventListener("change", (e) => { if (e.target.name !== "patient") filtersChanged(); });
form.addEventListener("submit", (e) => { e.preventDefault(); filtersChanged(); });
let typing = null;
control("patient").addEventListener("input", () => { clearTimeout(typing); typing = setTimeout(filtersChanged, 300); });
$("clear-filters").addEventListener("click", () => { form.reset(); filtersChanged(); });

// --- SLA countdown: ticks every second from sla_due_at, on the server's clock -------------
let clockOffsetMs = 0;  // server clock minus this PC's, from the last answer (PC clocks drift)
function tick() {
  const now = Date.now() + clockOffsetMs;
  for (const td of table.querySelectorAll("td.sla")) {
    const left = (Number(td.dataset.due) - now) / 1000;
    td.firstChild.textContent = left < 0 ? `${T.overdue} ${duration(left)}` : `${T.left} ${duration(left)}`;
    td.firstChild.className = left < 0 ? "overdue" : "";
  }
}
setInterval(tick, 1000);

// --- the table ---------------------------------------------------------------------------
function cell(text, cls) { return el("td", {}, el("span", cls ? { class: cls } : {}, text ?? "")); }
// 申请项目 (the linked order's requested procedure) above the study's own description
function procedure(it) {
  const td = cell(it.requested_procedure, "requested");
  if (it.description && it.description !== it.requested_procedure) {
    td.append(it.requested_procedure ? el("div", { class: "desc" }, it.description) : it.description);
  }
  return td;
}
function show(items) {
  if (items.length) clockOffsetMs = Date.parse(items[0].sla_due_at) - items[0].sla_remaining_s * 1000 - Date.now();
  const body = table.querySelector("tbody"); body.replaceChildren();
  for (const it of items) {
    const tr = el("tr", { class: it.priority, tabIndex: 0, title: T.open_hint });
    tr.dataset.study = it.study_instance_uid;
    tr.addEventListener("click", () => openStudy(it));
    tr.addEventListener("keydown", (e) => { if (e.key === "Enter") openStudy(it); });
    const sla = el("td", { class: "sla" }, el("span"));
    sla.dataset.due = String(Date.parse(it.sla_due_at));
    // the study's own name; a study without a usable patient ID is a patient of its own: 无患者ID
    const name = cell(personName(it.patient_name));
    if (it.name_differs) name.append(el("span", { class: "name-warn", title: T.name_differs_hint }, `⚠ ${T.name_changed}`));
    // the images' identity contradicts the order: shown as the images have it until an administrator decides
    if (it.identity_conflict) name.append(el("span", { class: "id-warn", title: T.identity_conflict_hint }, `⚠ ${T.identity_conflict}`));
    for (const note of ["order_cancelled", "name_unverified"]) {
      if (it.identity_flags.includes(note) && !it.identity_conflict) name.append(el("span", { class: "order-note" }, T[note + "_note"]));
    }
    const pid = it.has_patient_id ? cell(it.patient_id)
      : el("td", {}, el("span", { class: "no-pid", title: T.no_patient_id_hint }, T.no_patient_id));
    tr.append(cell(T[it.priority] || it.priority, "prio-" + it.priority), name, pid,
              cell(it.modality), procedure(it), cell(it.site), cell(T[it.state] || it.state), cell(fmt(it.arrived_at)), sla);
    body.appendChild(tr);
  }
  tick();
  table.hidden = items.length === 0; $("empty").hidden = items.length !== 0;
  $("empty").textContent = filterQuery().toString() ? T.filtered_empty : T.empty;
  stamp($("updated"));
}

// --- polling (portal.js's poll): one request at a time, paused while the tab is hidden ----
async function fetchWorklist() {
  const query = filterQuery().toString();
  try {
    const items = await api("/api/worklist" + (query ? `?${query}` : ""));
    $("load-error").hidden = true;
    if (query !== filterQuery().toString()) return poll.AGAIN;  // filters moved on meanwhile
    show(items);
  } catch (e) {
    if (e.status === 401) throw e;  // on the way to the login page
    showError($("load-error"), e);
  }
  return null;
}
function load() { worklist.now(); }

// Clicking a row takes the study (if nobody holds it) and opens the study page, which
// tells the server reading has started (POST /open).
async function openStudy(it) {
  const uid = it.study_instance_uid;
  if (!it.assigned_to) {
    try { await api(`/api/worklist/${enc(uid)}/claim`, { method: "POST" }); }
    catch (e) { if (e.status !== 401) { alert(T.claim_failed); load(); } return; }
  }
  location.href = `/portal/studies/${enc(uid)}`;
}
fromUrl(); toUrl();
const worklist = poll(POLL_MS, fetchWorklist);
