// The study page's image viewer: the series strip, one Viewer per pane (windowing, zoom,
// pan, cine, linked scrolling) and a prior study opened beside the current one. Loaded by
// study.html after portal.js; study.js starts it. Uses PAGE.presets and study.js's ``study``.
"use strict";
const PRESETS = PAGE.presets;
const ECG_PREFIX = "1.2.840.10008.5.1.4.1.1.9.";
const tag = (ds, t) => (ds[t] && ds[t].Value && ds[t].Value.length) ? ds[t].Value[0] : undefined;
function dicomDate(d) { return d && d.length === 8 ? `${d.slice(0, 4)}-${d.slice(4, 6)}-${d.slice(6)}` : (d || ""); }

// ---------------------------------------------------------------- viewers
// One Viewer per viewport: the current study in #pane-main, a prior beside it in #pane-prior.
// Each has its own series, stack position, window/level, zoom and cine; the two share only
// the image cache. Elements are found by data-v inside the pane (the main pane's also carry ids).
const meta = new Map();   // sop -> metadata promise {frames, window, colour, fps}
const blobs = new Map();  // URL -> object URL, kept for smooth scrolling (bounded)
const isEcg = (inst) => inst && inst.sopClass.startsWith(ECG_PREFIX);
// Window/level means nothing for an ECG or a colour image: there the drag pans instead.
const noWindow = (inst) => !inst || isEcg(inst) || inst.colour;

async function fetchImage(url) {
  if (blobs.has(url)) return blobs.get(url);
  const objectUrl = URL.createObjectURL(await api(url, { accept: "image/png" }));
  blobs.set(url, objectUrl);
  if (blobs.size > 300) {  // forget the oldest, never one on screen
    const shown = new Set([...document.querySelectorAll("img[data-v=image]")].map((i) => i.src));
    for (const [k, v] of blobs) { if (!shown.has(v)) { URL.revokeObjectURL(v); blobs.delete(k); break; } }
  }
  return objectUrl;
}
function describe(ds) {  // what the viewer needs from an instance's DICOM JSON header
  const c = parseFloat(tag(ds, "00281050")), w = parseFloat(tag(ds, "00281051"));
  const photometric = tag(ds, "00280004") || "MONOCHROME2";
  // the modality's own playback rate: Recommended Display Frame Rate, Cine Rate, or Frame Time (ms)
  const frameTime = parseFloat(tag(ds, "00181063"));
  const fps = parseFloat(tag(ds, "00082144")) || parseFloat(tag(ds, "00180040")) || (frameTime > 0 ? 1000 / frameTime : NaN);
  return { frames: parseInt(tag(ds, "00280008") || "1", 10) || 1, window: isFinite(c) && isFinite(w) ? [c, w] : null,
           colour: !photometric.startsWith("MONOCHROME"), fps: isFinite(fps) && fps > 0 ? Math.round(fps) : null };
}
function instanceMeta(base, inst) {  // filled for a whole series by showSeries; one request per instance only as a fallback
  if (!meta.has(inst.sop)) {
    meta.set(inst.sop, api(`${base}/metadata`, { accept: "application/dicom+json" }).then(([ds]) => describe(ds))
      .catch(() => ({ frames: 1, window: null, colour: false, fps: null })));
  }
  return meta.get(inst.sop);
}

let linked = false;  // linked scrolling between the two viewports
let active = null;   // the viewer the keyboard drives

class Viewer {
  constructor(root, studyUid, info, seriesBox) {
    Object.assign(this, { root, study: studyUid, info, seriesBox, series: [], current: null, instances: [],
                          index: 0, frame: 1, window: null, fileWindow: null, zoom: 1, panX: 0, panY: 0, mode: "wl",
                          autoPan: false, fitNext: true, wanted: null, wlTimer: null, partner: null,
                          playing: false, cineTimer: null, fpsTouched: false });
    this.root.dataset.playing = "false";
    this.wire();
  }
  q(name) { return this.root.querySelector(`[data-v="${name}"]`); }
  seriesBase(uid) { return `/dicomweb/studies/${enc(this.study)}/series/${enc(uid)}`; }
  instanceBase(inst) { return `${this.seriesBase(this.current.uid)}/instances/${enc(inst.sop)}`; }
  imageUrl(inst, frame, win) {
    if (isEcg(inst)) return `${this.instanceBase(inst)}/rendered`;
    const path = inst.frames > 1 ? `${this.instanceBase(inst)}/frames/${frame}/rendered` : `${this.instanceBase(inst)}/rendered`;
    return win ? `${path}?window=${Math.round(win[0])},${Math.round(win[1])}` : path;
  }

  async loadSeries() {
    const list = await api(`/dicomweb/studies/${enc(this.study)}/series`, { accept: "application/dicom+json" });
    this.series = list.map((ds) => ({ uid: tag(ds, "0020000E"), modality: tag(ds, "00080060") || "", desc: tag(ds, "0008103E") || "",
                                      number: parseInt(tag(ds, "00200011") || "0", 10), count: parseInt(tag(ds, "00201209") || "0", 10) }))
                      .sort((a, b) => a.number - b.number);
    this.seriesBox.replaceChildren();
    for (const s of this.series) {
      const img = el("img", { alt: "" });
      const b = el("button", { class: "series", title: s.desc }, img,
                   el("div", { class: "meta" }, `${s.modality} #${s.number || ""} · ${s.count} ${T.images}`), el("div", {}, s.desc));
      b.dataset.series = s.uid;
      b.addEventListener("click", () => { this.pause(); this.showSeries(s); });
      this.seriesBox.append(b);
      s.button = b;
      // the series' stored thumbnail (its middle instance; an ECG's paper)
      api(`${this.seriesBase(s.uid)}/thumbnail`, { accept: "image/jpeg" })
        .then((blob) => { img.src = URL.createObjectURL(blob); }).catch(() => { img.alt = "—"; });
    }
    if (this.series.length) await this.showSeries(this.series[0]);
    else this.q("status").textContent = "—";
  }

  async showSeries(s) {
    this.current = s;
    for (const x of this.series) x.button.classList.toggle("current", x === s);
    // the whole series' headers in one request, answered from the county's index
    const list = await api(`${this.seriesBase(s.uid)}/metadata`, { accept: "application/dicom+json" });
    this.instances = list.map((ds) => {
      const inst = { sop: tag(ds, "00080018"), number: parseInt(tag(ds, "00200013") || "0", 10),
                     sopClass: tag(ds, "00080016") || "", frames: null };
      meta.set(inst.sop, Promise.resolve(describe(ds)));
      return inst;
    }).sort((a, b) => a.number - b.number);
    Object.assign(this, { index: 0, frame: 1, window: null, fileWindow: null, fitNext: true });
    this.buildPresets(s.modality);
    await this.showCurrent();
  }

  buildPresets(modality) {
    const box = this.q("presets"); box.replaceChildren();
    if (this.instances.every(isEcg)) return;
    const def = el("button", { class: "on", title: T.default_window }, T.default_window);
    def.dataset.preset = "default";
    def.addEventListener("click", () => this.setWindow(null));
    box.append(def);
    for (const p of PRESETS[modality] || []) {
      const b = el("button", { title: `${p.center} / ${p.width}` }, p.label);
      b.dataset.preset = p.key;
      b.addEventListener("click", () => this.setWindow([p.center, p.width], p.key));
      box.append(b);
    }
  }
  updateTools(inst) {
    const off = noWindow(inst);
    this.q("presets").hidden = off; this.q("mode-wl").hidden = off;
    if (off && this.mode === "wl") { this.setMode("pan"); this.autoPan = true; }
    else if (!off && this.autoPan) { this.setMode("wl"); this.autoPan = false; }
    this.q("ov-tl").hidden = isEcg(inst);  // the ECG paper prints its own header
    this.q("cine-box").hidden = !this.canPlay();
    this.q("help").textContent = (off ? T.viewer_help_pan : T.viewer_help) + (this.canPlay() ? ` · ${T.cine_help}` : "");
  }
  markPreset(key) { for (const b of this.q("presets").children) b.classList.toggle("on", b.dataset.preset === key); }
  canPlay() {
    const inst = this.instances[this.index];
    return this.instances.length > 1 || (inst && inst.frames > 1);
  }

  async showCurrent() {
    const inst = this.instances[this.index];
    if (!inst) return;
    if (inst.frames === null) {
      const m = await instanceMeta(this.instanceBase(inst), inst);
      inst.frames = m.frames; inst.colour = m.colour;
      if (!this.fileWindow && m.window) this.fileWindow = m.window;
      if (m.fps && !this.fpsTouched) this.q("fps").value = String(Math.min(60, m.fps));
    }
    this.updateTools(inst);
    this.frame = Math.min(Math.max(1, this.frame), inst.frames);
    const url = this.imageUrl(inst, this.frame, this.window);
    this.wanted = url;
    this.overlays();
    const status = this.q("status");
    if (!blobs.has(url)) status.textContent = T.loading;
    try {
      const objectUrl = await fetchImage(url);
      if (this.wanted !== url) return;  // the reader has moved on meanwhile
      const img = this.q("image");
      img.dataset.src = url;
      if (img.src !== objectUrl) { img.src = objectUrl; await img.decode().catch(() => {}); }
      status.textContent = "";
      this.root.dataset.index = String(this.index); this.root.dataset.frame = String(this.frame);
      this.q("viewport").classList.toggle("ecg", isEcg(inst));
      if (this.fitNext) { this.fit(); this.fitNext = false; } else this.applyTransform();
      this.prefetch();
    } catch (e) {
      if (this.wanted === url) status.textContent = `${T.cannot_render}: ${e.message}`;
    }
  }
  prefetch() {  // the neighbours at the current window, so scrolling does not wait
    for (const d of [1, -1, 2]) {
      const inst = this.instances[this.index + d];
      if (inst && inst.frames === 1) fetchImage(this.imageUrl(inst, 1, this.window)).catch(() => {});
    }
  }
  overlays() {
    const inst = this.instances[this.index];
    const s = this.current;
    if (!s) return;
    const info = this.info;
    this.q("ov-tl").replaceChildren(el("div", {}, info.name || ""), el("div", {}, info.pid || ""),
                                    info.date ? el("div", {}, info.date) : null, el("div", {}, `${s.modality} ${s.desc}`));
    const parts = [el("div", {}, `${T.image} ${this.index + 1} / ${this.instances.length}`)];
    if (inst && inst.frames > 1) parts.push(el("div", {}, `${T.frame} ${this.frame} / ${inst.frames}`));
    this.q("ov-tr").replaceChildren(...parts);
    const w = this.window || this.fileWindow;
    this.q("ov-bl").textContent = isEcg(inst) ? T.ecg : inst && inst.colour ? "" : (w ? `WL ${Math.round(w[0])}  WW ${Math.round(w[1])}` : `W/L ${T.default_window}`);
    this.q("ov-br").textContent = `${Math.round(this.zoom * 100)}%`;
    const total = this.instances.length, bar = this.q("stackbar").firstElementChild;
    bar.style.width = inst && inst.frames > 1 ? `${(100 * this.frame) / inst.frames}%`
      : total > 1 ? `${(100 * (this.index + 1)) / total}%` : "100%";
  }

  // stack scrolling: frames within an instance, then the next instance; `wrap` (cine) goes
  // round to the start; with linked scrolling the other viewport takes the same step
  step(delta, { wrap = false, follow = true } = {}) {
    if (follow && linked && this.partner) this.partner.step(delta, { wrap, follow: false });
    const inst = this.instances[this.index];
    if (!inst) return Promise.resolve();
    if (inst.frames > 1) {
      const f = this.frame + delta;
      if (f >= 1 && f <= inst.frames) { this.frame = f; return this.showCurrent(); }
    }
    let i = this.index + delta;
    if (i < 0 || i >= this.instances.length) {
      if (!wrap) return Promise.resolve();
      i = delta > 0 ? 0 : this.instances.length - 1;
    }
    const multi = this.instances[i].frames > 1 || inst.frames > 1;
    this.index = i; this.frame = delta > 0 || (wrap && multi && i === 0) ? 1 : Infinity;
    return this.showCurrent();
  }
  goTo(end) { this.index = end ? this.instances.length - 1 : 0; this.frame = end ? Infinity : 1; this.showCurrent(); }

  // cine: play through the frames (or the stack) at the chosen rate, round and round
  play() {
    if (this.playing || !this.canPlay()) return;
    this.playing = true; this.root.dataset.playing = "true";
    const b = this.q("cine"); b.textContent = `■ ${T.pause}`; b.title = T.pause; b.classList.add("on");
    this.tick();
  }
  async tick() {
    if (!this.playing) return;
    const started = performance.now();
    await this.step(1, { wrap: true });  // the next frame is on screen before the clock runs on
    if (!this.playing) return;
    const fps = Math.min(60, Math.max(1, parseFloat(this.q("fps").value) || 10));
    this.cineTimer = setTimeout(() => { this.cineTimer = null; this.tick(); },
                                Math.max(0, 1000 / fps - (performance.now() - started)));
  }
  pause() {
    if (!this.playing) return;
    this.playing = false; this.root.dataset.playing = "false";
    clearTimeout(this.cineTimer); this.cineTimer = null;
    const b = this.q("cine"); b.textContent = `▶ ${T.play}`; b.title = T.play; b.classList.remove("on");
  }
  toggleCine() { if (this.playing) this.pause(); else this.play(); }

  // window / level
  setWindow(win, presetKey) {
    this.window = win;
    this.markPreset(presetKey || (win ? "" : "default"));
    this.overlays();
    clearTimeout(this.wlTimer);
    this.showCurrent();
  }
  dragWindow(dx, dy) {  // right = wider, down = higher level, as on most workstations
    const base = this.window || this.fileWindow || [40, 400];
    const k = Math.max(1, base[1] / 256);
    this.window = [base[0] + dy * k, Math.max(1, base[1] + dx * k)];
    this.markPreset("");
    this.overlays();
    clearTimeout(this.wlTimer);
    this.wlTimer = setTimeout(() => this.showCurrent(), 150);  // re-request once the mouse rests
  }

  // zoom and pan by CSS transform
  applyTransform() {
    this.q("image").style.transform = `translate(${this.panX}px, ${this.panY}px) scale(${this.zoom})`;
    this.overlays();
  }
  fit() {
    const img = this.q("image"), vp = this.q("viewport");
    if (!img.naturalWidth) return;
    this.zoom = Math.min(vp.clientWidth / img.naturalWidth, vp.clientHeight / img.naturalHeight);
    this.panX = (vp.clientWidth - img.naturalWidth * this.zoom) / 2;
    this.panY = (vp.clientHeight - img.naturalHeight * this.zoom) / 2;
    this.applyTransform();
  }
  zoomBy(factor, cx, cy) {
    const vp = this.q("viewport");
    if (cx === undefined) { cx = vp.clientWidth / 2; cy = vp.clientHeight / 2; }
    const z = Math.min(20, Math.max(0.05, this.zoom * factor));
    this.panX = cx - (cx - this.panX) * (z / this.zoom);
    this.panY = cy - (cy - this.panY) * (z / this.zoom);
    this.zoom = z;
    this.applyTransform();
  }
  setMode(mode) {
    this.mode = mode;
    this.q("mode-wl").classList.toggle("on", mode === "wl");
    this.q("mode-pan").classList.toggle("on", mode === "pan");
    this.q("viewport").classList.toggle("pan", mode === "pan");
  }
  activate() {
    active = this;
    for (const p of document.querySelectorAll(".pane")) p.classList.toggle("active", p === this.root);
  }

  wire() {
    const vp = this.q("viewport");
    let wheelSum = 0;
    vp.addEventListener("wheel", (e) => {
      e.preventDefault();
      this.activate();
      if (e.ctrlKey) { const r = vp.getBoundingClientRect(); this.zoomBy(e.deltaY < 0 ? 1.15 : 1 / 1.15, e.clientX - r.left, e.clientY - r.top); }
      else {
        // a mouse notch is one slice; a trackpad's many small deltas add up to one
        const d = e.deltaMode === 0 ? e.deltaY : e.deltaY * 40;
        wheelSum = Math.abs(d) >= 50 ? d : wheelSum + d;
        if (Math.abs(wheelSum) >= 50) { this.step(Math.sign(wheelSum)); wheelSum = 0; }
      }
    }, { passive: false });
    let drag = null;
    vp.addEventListener("mousedown", (e) => {
      vp.focus();
      this.activate();
      const pan = this.mode === "pan" || e.shiftKey || e.button === 1;
      drag = { x: e.clientX, y: e.clientY, pan: pan || noWindow(this.instances[this.index]),
               start: this.window || this.fileWindow || [40, 400], panX: this.panX, panY: this.panY };
      e.preventDefault();
    });
    window.addEventListener("mousemove", (e) => {
      if (!drag) return;
      const dx = e.clientX - drag.x, dy = e.clientY - drag.y;
      if (drag.pan) { this.panX = drag.panX + dx; this.panY = drag.panY + dy; this.applyTransform(); }
      else { this.window = drag.start; this.dragWindow(dx, dy); }
    });
    window.addEventListener("mouseup", () => { drag = null; });
    vp.addEventListener("dblclick", () => this.fit());
    this.q("zoom-in").addEventListener("click", () => this.zoomBy(1.25));
    this.q("zoom-out").addEventListener("click", () => this.zoomBy(1 / 1.25));
    this.q("zoom-fit").addEventListener("click", () => this.fit());
    this.q("mode-wl").addEventListener("click", () => this.setMode("wl"));
    this.q("mode-pan").addEventListener("click", () => this.setMode("pan"));
    this.q("cine").addEventListener("click", () => { this.activate(); this.toggleCine(); });
    this.q("fps").addEventListener("change", () => { this.fpsTouched = true; });
  }
}

function wireKeys() {
  window.addEventListener("resize", () => { for (const v of [main, prior]) if (v && v.zoom) v.fit(); });
  document.addEventListener("keydown", (e) => {
    if (e.target.closest("textarea, input, select")) return;
    const v = active || main;
    const keys = { ArrowDown: 1, ArrowRight: 1, PageDown: 1, ArrowUp: -1, ArrowLeft: -1, PageUp: -1 };
    if (e.key in keys) { e.preventDefault(); v.step(keys[e.key]); }
    else if (e.key === "Home") v.goTo(false);
    else if (e.key === "End") v.goTo(true);
    else if (e.key === " " && !e.target.closest("button") && v.canPlay()) { e.preventDefault(); v.toggleCine(); }
  });
  // the arrow keys go back to the images at once (a focused checkbox would keep them)
  $("link-scroll").addEventListener("change", () => { linked = $("link-scroll").checked; $("link-scroll").blur(); });
}

// ---------------------------------------------------------------- a prior beside the study
let prior = null;  // the prior study beside it (study.js makes ``main``, the study's own viewer)
const mainTemplate = $("pane-main").cloneNode(true);  // before anything fills it: the prior pane's shape
function openPrior(p) {
  if (prior) { prior.pause(); if (prior.study === p.study_instance_uid) return; }
  const pane = $("pane-prior");
  const fresh = mainTemplate.cloneNode(true);
  for (const e of fresh.querySelectorAll("[id]")) e.removeAttribute("id");
  pane.replaceChildren(...fresh.childNodes);
  pane.classList.remove("active");
  pane.querySelector("[data-v=status]").textContent = T.loading;
  const head = pane.querySelector("[data-v=head]");
  const close = el("button", { type: "button", class: "close-prior", title: T.close_compare }, `✕ ${T.close_compare}`);
  const strip = el("div", { class: "strip" });
  head.replaceChildren(el("div", { class: "title" }, el("b", {}, T.prior_study),
    el("span", {}, `${dicomDate(p.study_date)} ${p.modality.replaceAll("\\", "/")} ${p.description}`), el("span", {}, p.site), close), strip);
  head.hidden = false;
  for (const l of pane.querySelectorAll("label")) if (!l.querySelector("[data-v=fps]")) l.remove();  // the link box lives on the main pane
  pane.hidden = false; pane.dataset.study = p.study_instance_uid;
  $("panes").classList.add("compare"); $("link-box").hidden = false;
  for (const row of document.querySelectorAll("#priors .prior")) row.classList.toggle("shown", row.dataset.study === p.study_instance_uid);
  prior = new Viewer(pane, p.study_instance_uid, { name: personName(p.patient_name) || study.name, pid: study.pid,
                                                  date: dicomDate(p.study_date) }, strip);
  prior.partner = main; main.partner = prior;
  close.addEventListener("click", closePrior);
  requestAnimationFrame(() => main.fit());
  prior.loadSeries().catch((e) => { pane.querySelector("[data-v=status]").textContent = failure(e); });
}
function closePrior() {
  if (!prior) return;
  prior.pause();
  prior = null; main.partner = null; main.activate();
  const pane = $("pane-prior"); pane.hidden = true; pane.replaceChildren(); delete pane.dataset.study;
  $("panes").classList.remove("compare"); $("link-box").hidden = true; $("link-scroll").checked = linked = false;
  for (const row of document.querySelectorAll("#priors .prior")) row.classList.remove("shown");
  requestAnimationFrame(() => main.fit());
}
