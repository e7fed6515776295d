// jiggler dashboard: confirmations, select-all, and the live chart. No framework, no build step.
"use strict";

// Ask before destructive actions: data-confirm on the clicked button, else on the form.
document.addEventListener("submit", (event) => {
  const button = event.submitter;
  const text = (button && button.dataset.confirm) || event.target.dataset.confirm;
  if (text && !window.confirm(text)) event.preventDefault();
});

document.addEventListener("change", (event) => {
  if (!event.target.matches("[data-check-all]")) return;
  const table = event.target.closest("table");
  table.querySelectorAll('input[name="key"]').forEach((box) => { box.checked = event.target.checked; });
});

const MAX_POINTS = 60;

function startLive(chart) {
  const svg = chart.querySelector("svg");
  const note = chart.querySelector("[data-chart-note]");
  const select = document.querySelector("[data-poll-select]");
  const samples = [];
  let last = null;
  let timer = null;
  const stored = localStorage.getItem("jiggler.poll");
  let seconds = stored !== null ? Number(stored) : Number(chart.dataset.poll) || 5;
  if (new URLSearchParams(location.search).has("poll")) seconds = Number(chart.dataset.poll);

  function setText(selector, value) {
    document.querySelectorAll(selector).forEach((el) => {
      const text = typeof value === "number" ? value.toLocaleString("en-US") : String(value);
      if (el.textContent !== text) {
        el.textContent = text;
        const card = el.closest(".card");
        if (card) { card.classList.remove("bump"); void card.offsetWidth; card.classList.add("bump"); }
      }
    });
  }

  function draw() {
    const ns = "http://www.w3.org/2000/svg";
    svg.replaceChildren();
    if (samples.length < 2) return;
    const top = Math.max(1, ...samples.map((s) => s.processed));
    const step = 600 / (MAX_POINTS - 1);
    const offset = (MAX_POINTS - samples.length) * step;
    for (const key of ["processed", "failed"]) {
      const line = document.createElementNS(ns, "polyline");
      line.setAttribute("class", key === "processed" ? "ok" : "bad");
      line.setAttribute("points", samples.map((s, i) =>
        `${(offset + i * step).toFixed(1)},${(155 - 150 * s[key] / top).toFixed(1)}`).join(" "));
      svg.appendChild(line);
    }
    note.textContent = `peak ${top.toLocaleString("en-US")} per ${seconds} s`;
  }

  async function poll() {
    try {
      const response = await fetch(chart.dataset.src, { headers: { Accept: "application/json" }, cache: "no-store" });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const data = await response.json();
      for (const [key, value] of Object.entries(data)) {
        if (typeof value === "number") setText(`[data-stat="${key}"]`, value);
      }
      for (const [key, value] of Object.entries(data.redis || {})) setText(`[data-redis="${key}"]`, value ?? "–");
      setText("[data-clock]", new Date(data.time * 1000).toISOString().slice(11, 19) + " UTC");
      if (last) {
        samples.push({ processed: Math.max(0, data.processed - last.processed),
                       failed: Math.max(0, data.failed - last.failed) });
        if (samples.length > MAX_POINTS) samples.shift();
      }
      last = data;
      draw();
      if (samples.length < 2) note.textContent = "collecting samples…";
    } catch (err) {
      note.textContent = `cannot reach the server (${err.message}); retrying`;
    }
  }

  function schedule() {
    clearInterval(timer);
    if (select) select.value = String(seconds);
    if (seconds > 0) timer = setInterval(poll, seconds * 1000);
  }

  if (select) {
    select.addEventListener("change", () => {
      seconds = Number(select.value);
      localStorage.setItem("jiggler.poll", String(seconds));
      samples.length = 0;
      schedule();
    });
  }
  poll();
  schedule();
}

// A page part marked data-live-refresh="SECONDS" (the Busy page) is fetched again and replaced every SECONDS.
function startRefresh(part) {
  const seconds = Number(part.dataset.liveRefresh) || 5;
  setInterval(async () => {
    try {
      const response = await fetch(location.href, { headers: { Accept: "text/html" }, cache: "no-store" });
      if (!response.ok) return;
      const page = new DOMParser().parseFromString(await response.text(), "text/html");
      const fresh = page.querySelector("[data-live-refresh]");
      if (fresh) part.replaceChildren(...fresh.childNodes);
    } catch (err) {
      // the server is away for now: the next refresh tries again
    }
  }, seconds * 1000);
}

document.addEventListener("DOMContentLoaded", () => {
  const chart = document.querySelector("[data-live-chart]");
  if (chart) startLive(chart);
  const part = document.querySelector("[data-live-refresh]");
  if (part) startRefresh(part);
});
