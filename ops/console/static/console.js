// autocell console: countdowns and live updates over server-sent events.
// No framework, no inline script (the CSP forbids it).
"use strict";

function armCountdowns(root) {
  for (const el of root.querySelectorAll(".countdown[data-remaining-s]")) {
    el.endAt = Date.now() + parseFloat(el.dataset.remainingS) * 1000;
  }
}

function fmt(seconds) {
  if (seconds <= 0) return "overdue";
  const s = Math.floor(seconds), h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${ss}` : `${m}:${ss}`;
}

function tick() {
  for (const el of document.querySelectorAll(".countdown")) {
    if (el.endAt === undefined) continue;
    const left = (el.endAt - Date.now()) / 1000;
    el.textContent = fmt(left);
    el.classList.toggle("urgent", left < 120);
    el.classList.toggle("warn", left >= 120 && left < 300);
  }
}

// the cell clock runs on between updates while the cell is live (speed x wall time)
function armCellClock(root) {
  const el = root.querySelector("#cell-clock[data-cell-now]");
  if (!el) return;
  el.startWall = Date.now();
  el.startCell = parseFloat(el.dataset.cellNow);
  el.startShown = Date.now();
}

function tickCellClock() {
  const el = document.querySelector("#cell-clock[data-cell-now]");
  if (!el || el.startWall === undefined) return;
  const elapsed = (Date.now() - el.startWall) / 1000;
  const cell = el.startCell + elapsed * parseFloat(el.dataset.speed || "1");
  const t = el.querySelector("time"), s = el.querySelector(".cell-s");
  if (t) t.textContent = new Date().toLocaleTimeString([], {hour12: false});
  if (s) s.textContent = `(${Math.round(cell)} s)`;
  el.title = `cell time ${cell.toFixed(1)} s`;
}

// optional audible annunciation of new P1 escalations on the list (ISA-18.2): off until the
// person turns it on in this browser (a click also lets the browser play sound)
const SOUND_KEY = "autocell.sound";
let knownP1 = null, audio = null;

function soundOn() { return window.localStorage.getItem(SOUND_KEY) === "1"; }

function showSound() {
  const b = document.getElementById("sound");
  if (!b) return;
  b.setAttribute("aria-pressed", soundOn() ? "true" : "false");
  b.textContent = soundOn() ? "Sound for new P1: on" : "Sound for new P1: off";
}

function beep() {
  try {
    audio = audio || new AudioContext();
    const o = audio.createOscillator(), g = audio.createGain();
    o.frequency.value = 880; g.gain.value = 0.2;
    o.connect(g).connect(audio.destination);
    o.start(); o.stop(audio.currentTime + 0.5);
  } catch (e) { /* no audio device: the banner and colours still tell */ }
  document.body.dataset.annunciated = String(Number(document.body.dataset.annunciated || 0) + 1);
}

function annunciate() {
  const rows = document.querySelectorAll("a.esc.state-unacknowledged[data-priority='1']");
  const now = new Set(Array.from(rows, r => r.dataset.id));
  if (knownP1 !== null && soundOn() && [...now].some(id => !knownP1.has(id))) beep();
  knownP1 = now;
}

function editing(el) {
  if (!el.hasAttribute("data-keep-if-editing")) return false;
  if (el.contains(document.activeElement) && document.activeElement !== document.body) return true;
  for (const f of el.querySelectorAll("textarea, input[type=text]")) if (f.value) return true;
  for (const f of el.querySelectorAll("input[type=radio]")) if (f.checked) return true;
  return false;
}

function toLogin() {
  window.location.href = "/login?expired=1&next=" +
    encodeURIComponent(window.location.pathname + window.location.search);
}

async function refresh() {
  const r = await fetch(window.location.pathname + window.location.search,
                        {headers: {"X-Console-Fragment": "1"}, credentials: "same-origin"});
  if (r.status === 401) return toLogin();
  if (r.status === 503) {          // the store is damaged: say so instead of a stale page
    const bad = new DOMParser().parseFromString(await r.text(), "text/html");
    const main = bad.querySelector("main");
    if (main) document.querySelector("main").replaceWith(document.importNode(main, true));
    return;
  }
  if (!r.ok) return;
  const doc = new DOMParser().parseFromString(await r.text(), "text/html");
  for (const fresh of doc.querySelectorAll("[data-live][id]")) {
    const old = document.getElementById(fresh.id);
    if (old && !editing(old)) {
      old.replaceWith(document.importNode(fresh, true));
    }
  }
  // a region that is gone on the server (e.g. actions after a decision) disappears here too
  for (const old of document.querySelectorAll("[data-live][id]")) {
    if (!doc.getElementById(old.id) && !editing(old)) old.remove();
  }
  armCountdowns(document);
  armCellClock(document);
  annunciate();
  document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
}

function live() {
  if (!document.body.dataset.live) return;
  // "since": what the page shows; a change between its render and the stream's start
  // (or while the connection was down) is sent at once
  const es = new EventSource("/events?since=" + encodeURIComponent(document.body.dataset.since || ""));
  es.addEventListener("change", () => { refresh(); });
  es.addEventListener("expired", () => { es.close(); toLogin(); });
  es.addEventListener("open", () => { document.body.dataset.connected = "1"; });
}

document.addEventListener("DOMContentLoaded", () => {
  armCountdowns(document);
  armCellClock(document);
  annunciate();
  const sound = document.getElementById("sound");
  if (sound) {
    showSound();
    sound.addEventListener("click", () => {
      window.localStorage.setItem(SOUND_KEY, soundOn() ? "0" : "1");
      if (soundOn()) { audio = audio || new AudioContext(); }
      showSound();
    });
  }
  tick();
  setInterval(() => { tick(); tickCellClock(); }, 1000);
  live();
});
