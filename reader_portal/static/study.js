// The study page: the header (patient, priority), the priors and the name check, and the
// start that opens the study for reading, then the viewer (viewer.js) and report (report.js).
"use strict";
const STUDY = PAGE.study;
let main = null;  // the study's viewer (viewer.js)
// ---------------------------------------------------------------- header, priors
let study = { modality: "" };
async function loadHeader() {
  const [qido] = await api(`/dicomweb/studies?StudyInstanceUID=${enc(STUDY)}`, { accept: "application/dicom+json" });
  const item = ((await api("/api/worklist").catch(() => [])) || []).find((i) => i.study_instance_uid === STUDY);
  const ds = qido || {};
  study = { modality: item ? item.modality : (tag(ds, "00080061") || ""), name: personName(tag(ds, "00100010")),
            pid: tag(ds, "00100020") || T.no_patient_id, desc: tag(ds, "00081030") || "", date: dicomDate(tag(ds, "00080020")),
            accession: tag(ds, "00080050") || "", item };
  document.title = `${study.name} · ${T.title}`;
  const p = $("patient"); p.replaceChildren();
  if (item && item.priority !== "routine") p.append(el("span", { class: "prio-" + item.priority }, T[item.priority]));
  const pidAttrs = tag(ds, "00100020") ? {} : { class: "no-pid", title: T.no_patient_id_hint };  // a patient of its own
  p.append(el("b", {}, study.name), el("span", pidAttrs, study.pid), el("span", {}, study.modality.replaceAll("\\", "/")),
           el("span", {}, study.desc), el("span", {}, `${T.study_date} ${study.date}`));
  if (item) p.append(el("span", {}, item.site));
}
// The same patient ID + issuer under more than one name (a corrected or mistyped name at a
// township): say so, with where each name comes from, rather than show one name silently.
function warnNames(found) {
  const seen = new Map();  // shown name -> where it was seen
  const add = (pn, where) => { const n = personName(pn); if (n) seen.set(n, [...(seen.get(n) || []), where]); };
  add(found.study_patient_name, T.current_study);
  for (const p of found.priors) add(p.patient_name, `${T.prior_study} ${dicomDate(p.study_date)}`);
  if (![...seen.keys()].includes(personName(found.patient_name))) add(found.patient_name, T.patient);
  const own = personName(found.study_patient_name);
  if (own && own !== study.name) {  // the index keeps the first name; show the one this study's images carry
    study.name = own; document.title = `${own} · ${T.title}`;
    const b = $("patient").querySelector("b"); if (b) b.textContent = own;
    if (main) main.overlays();
  }
  const box = $("name-warning");
  box.hidden = seen.size < 2;
  if (box.hidden) return;
  const names = [...seen].map(([n, where]) => `${n}（${where.join("、")}）`).join("、");
  box.replaceChildren(el("b", {}, `⚠ ${T.name_changed}`), el("div", {}, T.name_changed_detail.replace("{names}", names)));
  $("patient").append(el("span", { class: "name-warn", title: box.textContent }, `⚠ ${T.name_changed}`));
}
async function loadPriors() {
  const box = $("priors");
  try {
    const found = await api(`/api/studies/${enc(STUDY)}/priors`);
    const { priors } = found;
    warnNames(found);
    box.replaceChildren(...priors.map((s) => {
      const label = `${dicomDate(s.study_date)} ${s.modality.replaceAll("\\", "/")} ${s.description}`;
      const compare = el("button", { type: "button", class: "compare", title: T.compare }, T.compare);
      const row = el("div", { class: "prior" },
                     el("a", { href: `/portal/studies/${enc(s.study_instance_uid)}`, target: "_blank", title: s.site }, label),
                     personName(s.patient_name) !== personName(found.study_patient_name)
                       ? el("div", { class: "pname" }, personName(s.patient_name)) : null,
                     compare);
      row.dataset.study = s.study_instance_uid;
      compare.addEventListener("click", () => openPrior(s));
      return row;
    }));
    if (!priors.length) box.textContent = T.no_priors;
  } catch (e) { box.textContent = e.message; }
}


// ---------------------------------------------------------------- the order (申请单)
// What the clinician asked: the linked order's clinical question and who asked, above the
// report. A study whose identity contradicts its order shows a warning instead.
const ORDER_ROWS = ["procedure_description", "clinical_diagnosis", "exam_purpose", "history_summary",
                    "ordering_doctor", "ordering_department", "accession_number"];
const ORDER_LABELS = { procedure_description: "requested_procedure", accession_number: "accession" };
async function loadOrder() {
  const box = $("order-box");
  const found = await api(`/api/studies/${enc(STUDY)}/order`);
  box.hidden = false; box.classList.toggle("warn", found.order_match === "conflict");
  if (found.order_match === "conflict") {
    box.replaceChildren(el("h3", {}, `⚠ ${T.identity_conflict}`), el("div", {}, T.order_conflict_note));
    return;
  }
  if (!found.order) { box.replaceChildren(el("h3", {}, T.order_box), el("div", { class: "muted" }, T.no_order)); return; }
  const o = found.order;
  const title = el("h3", {}, T.order_box, el("span", { class: "no" }, `${T.placer_no} ${o.placer_order_number}`));
  for (const note of ["order_cancelled", "name_unverified"]) {
    if (found.fields.includes(note)) title.append(el("span", { class: "note" }, T[note + "_note"]));
  }
  const dl = el("dl", {});
  for (const key of ORDER_ROWS) {
    if (o[key]) dl.append(el("dt", {}, T[ORDER_LABELS[key] || key]), el("dd", { "data-field": key }, o[key]));
  }
  box.replaceChildren(title, dl);
}

// ---------------------------------------------------------------- start
async function start() {
  wireKeys(); wireReport();
  // Reading starts when the holder opens the study; someone else's study stays read-only.
  try { await api(`/api/worklist/${enc(STUDY)}/open`, { method: "POST" }); R.canWrite = true; }
  catch (e) {
    R.canWrite = false;
    if (e.status === 409 || e.status === 403) { notice(T.not_holder, "warn"); $("claim").hidden = false; }
    else notice(failure(e), "err");
  }
  await loadHeader().catch((e) => notice(failure(e), "err"));
  main = new Viewer($("pane-main"), STUDY, study, $("series-list"));
  main.activate();
  loadPriors();
  loadOrder().catch((e) => { $("order-box").hidden = false; $("order-box").textContent = failure(e); });
  main.loadSeries().catch((e) => { $("status").textContent = failure(e); });
  await loadTemplates().catch(() => {});
  await loadReports().catch((e) => notice(failure(e), "err"));
  if (!R.canWrite && R.reports.some((r) => r.status === "signed")) { notice(""); $("claim").hidden = true; }
}
start();
