// The escalated 危急值 on every portal page (loaded by _base.html for readers and admins).
// Polls GET /api/roster/critical/alerts, which answers only for the people an escalation is
// for (the lead it went to, any lead on duty now; admins when no lead was on duty), and
// shows a banner; a result not seen before also beeps (Web Audio, no sound file) and raises a
// desktop notification (the Notification API; permission is asked once, remembered).
// Uses api(), el(), fmt(), enc(), poll() and T from portal.js.
"use strict";
(() => {
  const POLL_MS = 20000;
  const ASKED = "relay.notify.asked";
  const banner = document.getElementById("critical-alert");
  const seen = new Set();
  let audio = null;

  function beep() {
    try {
      audio = audio || new (window.AudioContext || window.webkitAudioContext)();
      if (audio.state === "suspended") audio.resume().catch(() => {});
      const t0 = audio.currentTime;
      for (const [at, hz] of [[0, 880], [0.35, 660], [0.7, 880]]) {
        const osc = audio.createOscillator(), gain = audio.createGain();
        osc.type = "square"; osc.frequency.value = hz;
        gain.gain.setValueAtTime(0.0001, t0 + at);
        gain.gain.exponentialRampToValueAtTime(0.25, t0 + at + 0.02);
        gain.gain.exponentialRampToValueAtTime(0.0001, t0 + at + 0.3);
        osc.connect(gain).connect(audio.destination);
        osc.start(t0 + at); osc.stop(t0 + at + 0.32);
      }
      banner.dataset.beeps = String(Number(banner.dataset.beeps || 0) + 1);
    } catch (_) { /* no audio device: the banner and the notification remain */ }
  }

  function notify(n) {
    if (!("Notification" in window)) return;
    const show = () => {
      try {
        new Notification(T.critical_alert, { body: T.critical_alert_notify.replace("{n}", n), tag: "relay-critical",
                                             requireInteraction: true });
        banner.dataset.notified = String(Number(banner.dataset.notified || 0) + 1);
      } catch (_) { /* some browsers allow notifications only from a service worker */ }
    };
    if (Notification.permission === "granted") show();
    else if (Notification.permission === "default" && !localStorage.getItem(ASKED)) {
      localStorage.setItem(ASKED, "1");  // asked once; the browser remembers the answer
      Notification.requestPermission().then((p) => { if (p === "granted") show(); }).catch(() => {});
    }
  }

  function draw(items) {
    banner.hidden = !items.length;
    banner.replaceChildren();
    if (!items.length) return;
    const list = el("ul", {});
    for (const a of items) {
      const text = T.critical_alert_item.replace("{site}", a.site).replace("{uid}", a.study_instance_uid)
                                        .replace("{time}", fmt(a.escalated_at));
      const li = el("li", {}, text, " ", el("a", { href: `/portal/studies/${enc(a.study_instance_uid)}` }, T.critical_alert_open));
      li.dataset.delivery = String(a.delivery_id);
      list.append(li);
    }
    banner.append(el("strong", {}, `⚠ ${T.critical_alert}`), list);
  }

  async function check() {
    try {
      const items = (await api("/api/roster/critical/alerts")) || [];
      draw(items);
      const fresh = items.filter((a) => !seen.has(a.delivery_id));
      for (const a of items) seen.add(a.delivery_id);
      if (fresh.length) { beep(); notify(items.length); }
      banner.dataset.polls = String(Number(banner.dataset.polls || 0) + 1);
    } catch (_) { /* the next poll tries again */ }
  }
  // A page that was silent gets its sound on the first click (browsers start audio suspended).
  document.addEventListener("click", () => { if (audio && audio.state === "suspended") audio.resume().catch(() => {}); });
  poll(POLL_MS, check, { hidden: true });  // a lead with the portal in a background tab still hears it
})();
