// Operator screen: camera feeds, mode/segment, policy version, intervention counts, buttons.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const link = HIL.connect("/ws/screen", {
    onOpen: () => { $("conn").textContent = "connected"; $("conn").className = "pill ok"; },
    onClose: () => { $("conn").textContent = "disconnected"; $("conn").className = "pill bad"; },
    onFrame: (name, blob) => HIL.showFrame($("cameras"), name, blob),
    onStatus: (s) => {
      $("mode").textContent = s.mode ?? "–";
      $("mode").dataset.mode = s.mode ?? "";
      $("segment").textContent = s.segment ?? "–";
      $("policy-version").textContent = s.policy_version ?? "–";
      $("step").textContent = s.step ?? "–";
      $("device").textContent = s.device ?? "–";
      for (const [k, v] of Object.entries(s.counts || {})) { const el = $(`count-${k}`); if (el) el.textContent = v; }
      $("estop-state").hidden = !s.estop;
      document.body.classList.toggle("estopped", !!s.estop);
      const list = $("corrections");
      list.replaceChildren(...(s.language_corrections || []).map((t) => { const li = document.createElement("li"); li.textContent = t; return li; }));
      document.body.dataset.statusSeen = "1";
    },
  });
  for (const b of document.querySelectorAll("button[data-event]")) {
    b.addEventListener("click", () => link.send({ event: b.dataset.event }));
  }
  $("correction-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const text = $("correction-text").value.trim();
    if (text) { link.send({ text }); $("correction-text").value = ""; }
  });
  // spoken corrections: the browser's speech-to-text (Chrome/Edge; hidden where unsupported) fills the box
  const Speech = window.SpeechRecognition || window.webkitSpeechRecognition;
  if (Speech) {
    const speak = $("btn-speak");
    speak.hidden = false;
    speak.addEventListener("click", () => {
      const rec = new Speech();
      rec.lang = navigator.language || "en-US";
      rec.interimResults = false;
      rec.onresult = (ev) => { $("correction-text").value = ev.results[0][0].transcript; };
      rec.onend = () => { speak.textContent = "Speak"; };
      speak.textContent = "listening…";
      rec.start();
    });
  }
  document.addEventListener("keydown", (ev) => {  // space bar = e-stop, unless typing
    if (ev.code === "Space" && document.activeElement !== $("correction-text")) { ev.preventDefault(); link.send({ event: "estop" }); }
  });
})();
