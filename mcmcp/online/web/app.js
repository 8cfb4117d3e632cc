// The participant's page: shows what the server says is on screen and sends back only which
// screen it answers, the side chosen and the page's own timing. It decides nothing about
// trials: order, pairs, sides, breaks and the end all come from the server (mcmcp/online.py).
//
// Timing: a trial's pair is decoded before it is shown (the server sends the next pair with the
// current one, so usually it is decoded already); the pair goes on screen inside a
// requestAnimationFrame callback and the onset is the timestamp of the next frame's callback,
// the first frame on which the pair can have been presented. RTs are event timestamps minus the
// onset, on the performance.now() clock.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const app = $("app");
  const decoded = new Map(); // image key -> decoded <img>, kept for the current and next pair
  const KEYS = ["PROLIFIC_PID", "STUDY_ID", "SESSION_ID", "participant"];
  let view = null;
  let display = null;
  let onset = null; // performance.now() ms of the pair on show; null when no pair is on show
  let gap = null; // seconds from the previous response to this onset, or null
  let lastResponse = null; // ms of the previous response on this page, null after a message
  let busy = false;

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  const frame = () => new Promise((resolve) => requestAnimationFrame(resolve));

  function status(text) { $("status").textContent = text; }

  async function api(method, path, body) {
    // Retries while the server cannot be reached (or fails), so a restart loses nothing: a
    // retried answer the server already saved comes back 409 and the page reloads the state.
    for (let attempt = 0; ; attempt++) {
      let res = null;
      try {
        res = await fetch(path, {
          method, cache: "no-store", credentials: "same-origin",
          headers: body ? { "Content-Type": "application/json" } : {},
          body: body ? JSON.stringify(body) : undefined,
        });
      } catch (err) { res = null; }
      if (res && res.status < 500) {
        status("");
        let data;
        try { data = await res.json(); } catch (err) { data = { error: "unreadable reply" }; }
        return { code: res.status, data };
      }
      let wait = "Lost the connection to the server; trying again…";
      if (res && res.status === 503) {  // the server is up but cannot save: its message says so
        try { wait = (await res.json()).error || wait; } catch (err) { /* keep the default */ }
      }
      status(wait);
      await sleep(Math.min(500 * 2 ** attempt, 5000));
    }
  }

  async function decode(keys, images) {
    await Promise.all(keys.map(async (key) => {
      if (decoded.has(key)) return;
      const img = new Image();
      img.alt = "";
      img.draggable = false;
      img.dataset.key = key;
      img.src = images[key];
      await img.decode();
      decoded.set(key, img);
    }));
  }

  function keep(keys) {
    for (const key of [...decoded.keys()]) if (!keys.includes(key)) decoded.delete(key);
  }

  function layout(img) {
    // the lab's geometry (face height, centre offset) scaled down to fit narrow screens
    const width = display.face_size * img.naturalWidth / img.naturalHeight;
    const scale = Math.min(1, (window.innerWidth - 16) / (2 * display.face_offset + width),
      (window.innerHeight - 160) / display.face_size);
    app.style.setProperty("--face", `${display.face_size * scale}px`);
    app.style.setProperty("--offset", `${display.face_offset * scale}px`);
  }

  function setKind(kind) {
    app.dataset.kind = kind;
    app.dataset.screen = view.screen.id;
    app.dataset.ready = "false";
  }

  async function show(next) {
    view = next;
    display = next.display;
    const screen = next.screen;
    onset = null;
    const wanted = [...(screen.images || []), ...(next.next || [])];
    keep(wanted);
    if (screen.kind !== "trial") {
      lastResponse = null; // a gap across a message measures the reader, not the page
      showMessage(screen);
      if (next.next) decode(next.next, next.images).catch(() => {});
      return;
    }
    await decode(screen.images, next.images);
    if (next.next) decode(next.next, next.images).catch(() => {});
    const [left, right] = screen.images.map((key) => decoded.get(key));
    left.className = "left";
    right.className = "right";
    $("message").hidden = true;
    $("prompt").textContent = screen.prompt;
    $("progress").textContent = screen.progress;
    layout(left);
    setKind("trial");
    await frame();
    $("faces").replaceChildren(left, right);
    $("fixation").hidden = true;
    $("trial").hidden = false;
    for (const id of ["prompt", "faces", "progress"]) $(id).style.visibility = "visible";
    onset = await frame(); // the frame after the one that painted the pair
    gap = lastResponse === null ? null : (onset - lastResponse) / 1000;
    app.dataset.ready = "true";
  }

  function showMessage(screen) {
    $("trial").hidden = true;
    $("message").hidden = false;
    $("message-text").textContent = screen.text;
    const consent = screen.kind === "consent";
    const final = screen.kind === "end" || screen.kind === "declined";
    $("continue").hidden = consent || final;
    $("agree").hidden = !consent;
    $("decline").hidden = !consent;
    $("code").hidden = true;
    $("redirect").hidden = true;
    $("close").hidden = !(screen.kind === "end" && view.end && !view.end.redirect);
    if (screen.kind === "end" && view.end) {
      if (view.end.code) {
        $("code-value").textContent = view.end.code;
        $("code").hidden = false;
      }
      if (view.end.redirect) {
        $("redirect-link").href = view.end.redirect;
        $("redirect").hidden = false;
        setTimeout(() => window.location.assign(view.end.redirect), 4000);
      }
    }
    setKind(screen.kind);
    app.dataset.ready = "true";
    if (!consent && !final) $("continue").focus();
  }

  async function recover(code, data, refresh = true) {
    // 409 on a step: the screen was answered elsewhere (another tab, a retried answer the
    // server had saved): show where the session really is.
    status(refresh ? data.error || "" : "");
    if (code === 409 && refresh) {
      const state = await api("GET", "api/state");
      if (state.code === 200) { await show(state.data); return; }
      data = state.data;
    }
    $("trial").hidden = true;
    $("message").hidden = false;
    $("message-text").textContent = data.error || "Something went wrong.";
    for (const id of ["continue", "agree", "decline", "code", "redirect", "close"]) $(id).hidden = true;
    app.dataset.kind = "error";
    app.dataset.ready = "true";
  }

  async function acknowledge(consent) {
    if (busy || !view || view.screen.kind === "trial") return;
    busy = true;
    const body = { screen: view.screen.id };
    if (consent !== undefined) body.consent = consent;
    const res = await api("POST", "api/ack", body);
    busy = false;
    if (res.code === 200) await show(res.data); else await recover(res.code, res.data);
  }

  async function respond(side, time, device) {
    if (busy || onset === null || time < onset) return; // nothing on show, or pressed before it
    busy = true;
    const body = { trial: view.screen.id, side, rt: (time - onset) / 1000, onset: onset / 1000, gap,
                   device };
    onset = null;
    lastResponse = time;
    for (const id of ["prompt", "faces", "progress"]) $(id).style.visibility = "hidden";
    $("fixation").hidden = false;
    app.dataset.ready = "false";
    const fixation = sleep(display.fixation * 1000);
    const res = await api("POST", "api/answer", body);
    await fixation;
    busy = false;
    if (res.code === 200) await show(res.data); else await recover(res.code, res.data);
  }

  document.addEventListener("keydown", (event) => {
    if (event.repeat || !view) return;
    const kind = view.screen.kind;
    if (kind === "trial" && display) {
      const key = event.key.length === 1 ? event.key.toLowerCase() : event.key;
      const side = key === display.keys.left ? "left" : key === display.keys.right ? "right" : null;
      if (side) {
        event.preventDefault();
        respond(side, event.timeStamp || performance.now(), "keyboard");
      }
    } else if (event.key === " " && !["consent", "end", "declined", "error"].includes(kind)) {
      event.preventDefault();
      acknowledge();
    }
  });
  $("faces").addEventListener("pointerdown", (event) => {
    if (!display || !display.mouse || !event.target.classList) return;
    const side = event.target.classList.contains("left") ? "left"
      : event.target.classList.contains("right") ? "right" : null;
    if (side) respond(side, event.timeStamp || performance.now(), "mouse");
  });
  $("continue").addEventListener("click", () => acknowledge());
  $("agree").addEventListener("click", () => acknowledge(true));
  $("decline").addEventListener("click", () => acknowledge(false));

  async function refreshRate() {
    // median frame interval over 30 frames: the participant's screen refresh, for session.json
    const times = [];
    for (let i = 0; i < 31; i++) times.push(await frame());
    const steps = times.slice(1).map((t, i) => t - times[i]).sort((a, b) => a - b);
    const median = steps[15];
    return median > 0 ? Math.min(1000, Math.max(1, 1000 / median)) : null;
  }

  async function main() {
    const url = new URLSearchParams(window.location.search);
    const body = {};
    for (const key of KEYS) if (url.get(key) !== null) body[key] = url.get(key);
    body.client = {
      viewport: [window.innerWidth, window.innerHeight],
      dpr: window.devicePixelRatio || 1,
      refresh_hz: await refreshRate(),
    };
    const res = await api("POST", "api/start", body);
    if (res.code === 200) await show(res.data); else await recover(res.code, res.data, false);
  }

  main();
})();
