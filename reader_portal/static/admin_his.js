// HIS 回传: signed reports on their way to the HIS; refused or overdue ones red, refreshed every 15 s.
"use strict";
const HIS_REFRESH_MS = 15000;
const CHANNELS = { hl7: "HL7 ORU^R01", fhir: "FHIR" };
function tone(m) { return m.state === "rejected" || m.overdue ? "red" : ""; }
function stateBadges(m) {
  const colour = { rejected: "red", acked: "green", pending: m.overdue ? "red" : "grey" }[m.state] || "grey";
  const badges = [el("span", { class: "badge " + colour }, T["his_state_" + m.state] || m.state)];
  if (m.overdue && m.state !== "rejected") badges.push(el("span", { class: "badge red" }, T.his_overdue));
  if (m.order_cancelled) badges.push(el("span", { class: "badge amber" }, T.his_order_cancelled));
  return badges;
}
function setHisCard(id, value, colour) {
  const c = $(id); c.querySelector(".v").textContent = String(value);
  c.classList.remove("red", "amber", "green"); if (colour) c.classList.add(colour);
}
let view = null;
// Messages an administrator made due now, with their attempt count then: the row says so
// until the next attempt is recorded (the table is redrawn at every refresh).
const retried = new Map();
async function retry(m, button) {
  button.disabled = true;
  try { await api(`/api/his/messages/${m.id}/retry`, { method: "POST" }); retried.set(m.id, m.attempts); }
  catch (e) { showError($("load-error"), e); button.disabled = false; }
  if (view) view.now();
}
function retryButton(m) {
  if (m.state === "acked") return null;
  const waiting = retried.get(m.id) === m.attempts;
  const button = el("button", { class: "btn secondary", type: "button", disabled: waiting },
                    waiting ? T.his_retry_done : T.his_retry);
  button.addEventListener("click", () => retry(m, button));
  return button;
}
function row(m) {
  const tr = el("tr", { class: tone(m) ? "alarm-red" : "" });
  tr.dataset.message = m.message_id; tr.dataset.state = m.state;
  const report = [el("span", { class: "uid" }, m.study_instance_uid),
    el("div", { class: "muted" }, m.kind === "addendum" ? T.his_addendum : T.his_revision.replace("{n}", m.revision))];
  tr.append(el("td", {}, ...stateBadges(m)), el("td", {}, ...report), el("td", {}, CHANNELS[m.channel] || m.channel),
            el("td", { class: "uid" }, m.message_id), el("td", { class: "num" }, String(m.attempts)),
            el("td", { title: fmt(m.last_attempt_at) }, m.last_attempt_at ? ago(m.last_attempt_at) : "—"),
            el("td", {}, m.state === "acked" ? fmt(m.acked_at) : fmt(m.next_attempt_at)),
            el("td", {}, m.ack_code ? el("span", { class: m.state === "rejected" ? "overdue" : "" }, m.ack_code) : "—"),
            el("td", { class: "err", title: m.last_error || "" }, m.last_error || ""), el("td", {}, retryButton(m)));
  return tr;
}
async function load() {
  let list;
  try { list = await api("/api/his/messages"); $("load-error").hidden = true; } catch (e) { showError($("load-error"), e); return; }
  const body = $("his").querySelector("tbody"); body.replaceChildren(...list.map(row));
  if (!list.length) body.append(el("tr", { class: "empty-row" }, el("td", { colSpan: 10 }, T.his_none)));
  const count = (f) => list.filter(f).length;
  const rejected = count((m) => m.state === "rejected"), overdue = count((m) => m.overdue);
  setHisCard("kpi-rejected", rejected, rejected ? "red" : "green");
  setHisCard("kpi-overdue", overdue, overdue ? "red" : "green");
  setHisCard("kpi-pending", count((m) => m.state === "pending"), "");
  setHisCard("kpi-acked", count((m) => m.state === "acked"), "green");
  document.body.dataset.loaded = String(Date.now());
  stamp($("updated"));
}
view = poll(HIS_REFRESH_MS, load);
