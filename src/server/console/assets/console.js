// pushwerk console: local times, parameter search and copy, live preview.
// No inline script anywhere (the Content-Security-Policy forbids it).
"use strict";

function localTimes() {
  for (const t of document.querySelectorAll("time[datetime]")) {
    const d = new Date(t.getAttribute("datetime"));
    if (!isNaN(d)) {
      t.title = t.getAttribute("datetime");
      t.textContent = d.toLocaleString();
    }
  }
}

function parameterSearch() {
  const box = document.getElementById("param-search");
  if (!box) return;
  const rows = Array.from(document.querySelectorAll("tr.param"));
  const none = document.getElementById("no-match");
  box.addEventListener("input", () => {
    const q = box.value.trim().toLowerCase();
    let shown = 0;
    for (const r of rows) {
      const hit = !q || r.dataset.search.includes(q);
      r.hidden = !hit;
      if (hit) shown++;
    }
    if (none) none.hidden = shown > 0;
  });
}

function copyButtons() {
  const status = document.getElementById("copy-status");
  const say = (text) => { if (status) status.textContent = text; };
  for (const b of document.querySelectorAll("button.copy[data-copy]")) {
    b.addEventListener("click", async () => {
      const text = b.dataset.copy;
      try {
        await navigator.clipboard.writeText(text);
        say("Copied " + text);
      } catch (e) {
        // No clipboard access (not a secure context, or refused): fall
        // back to a selected text field and the older copy command.
        const field = document.createElement("textarea");
        field.value = text;
        document.body.appendChild(field);
        field.select();
        const ok = document.execCommand && document.execCommand("copy");
        field.remove();
        say(ok ? "Copied " + text : "Copy by hand: " + text);
      }
    });
  }
}

function livePreview() {
  const form = document.getElementById("preview-form");
  if (!form) return;
  const out = document.getElementById("preview");
  const state = document.getElementById("preview-state");
  let timer = null, seq = 0;
  const run = async () => {
    const mine = ++seq;
    state.textContent = "rendering…";
    try {
      const r = await fetch(form.action, {
        method: "POST",
        body: new URLSearchParams(new FormData(form)),
        headers: { "x-console-fetch": "1" },
        credentials: "same-origin",
      });
      const text = await r.text();
      if (mine !== seq) return;
      out.textContent = text;
      out.classList.toggle("error", !r.ok);
      state.textContent = r.ok ? "" : "cannot render";
    } catch (e) {
      if (mine === seq) state.textContent = "the daemon does not answer";
    }
  };
  form.addEventListener("submit", (ev) => { ev.preventDefault(); run(); });
  document.getElementById("event").addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(run, 400);
  });
  // Show the preview for the event already in the form.
  if (!out.dataset.rendered) run();
}

document.addEventListener("DOMContentLoaded", () => {
  localTimes();
  parameterSearch();
  copyButtons();
  livePreview();
});
