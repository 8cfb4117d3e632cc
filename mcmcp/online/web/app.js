// The participant's page: shows what the server says is on screen and sends back only which
// screen it answers, the side chosen and the page's own timing. It decides nothing about
// trials: order, pairs, sides, breaks and the end all come from the server (mcmcp/online.py).
//
// Faces come as PNGs, or (`online.faces: browser`) as each face's child and code, which the
// page's decoder (decoder.js, a Web Worker: the model's decoder written out) turns into the
// same pixels; either way a face is an <img> before it is used.
//
// Timing: a trial's pair is decoded before it is shown (the server sends the next pair with the
// current one, so usually it is decoded already); the pair goes on screen inside a
// requestAnimationFrame callback and the onset is the timestamp of the next frame's callback,
// the first frame on which the pair can have been presented. RTs are event timestamps minus the
// onset, on the performance.now() clock.
//
// A GSP slider trial (screen.slider) shows one face of its K, the track and the handle: LEFT /
// RIGHT, a mouse drag or a touch drag move the handle, SPACE or OK confirm. The page knows slider
// positions only (the server maps them to circle points) and sends the handle's path with the
// answer: [seconds from onset, position] per move.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const app = $("app");
  // image key -> decoded <img>: the current and next trial's, and the most recent others up to
  // KEEP. Answers name them (`have`), so the server sends only faces the page has not got (in
  // MCMCP a chain's current face was shown before: each answer brings one new face)
  const decoded = new Map();
  const KEEP = 64; // at most mcmcp/online/app.py's MAX_HAVE
  const decoding = new Map(); // image key -> the promise of its decode, while it runs
  let worker = null; // the face decoder (decoder.js), started at the first face sent as a code
  const drawing = new Map(); // message id -> [resolve, reject] of a face the worker draws
  let messages = 0;
  const KEYS = ["PROLIFIC_PID", "STUDY_ID", "SESSION_ID", "participant", "sig"];
  // last pages: no Continue; a code and a return link when the study gives them
  const FINAL = ["end", "declined", "screened_out", "full", "ended", "reset", "resize",
    "error"];
  const CODE_LABEL = { end: "Your completion code:", declined: "Your code for the recruitment site:",
    screened_out: "Your code for the recruitment site:",
    full: "Your code for the recruitment site:" };
  let view = null;
  let display = null;
  let onset = null; // performance.now() ms of the pair on show; null when no pair is on show
  let gap = null; // seconds from the previous response to this onset, or null
  let lastResponse = null; // ms of the previous response on this page, null after a message
  let busy = false;
  let slider = null; // a slider trial on show: {keys, position, moves, dragging}
  let blocked = false; // the window is too small or left full screen: nothing can be answered
  let leftFullscreen = false; // an exit was recorded and the participant has not come back yet
  let hz; // the refresh-rate estimate, measured once
  let starting = false; // a start request is on its way (a resize fires many events)
  const MAX_MOVES = 2000; // handle moves sent per slider trial (mcmcp/online/slider.py)

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

  function startWorker() {
    worker = new Worker("static/decoder.js");
    worker.onmessage = (event) => {
      const { id, error } = event.data;
      const [resolve, reject] = drawing.get(id);
      drawing.delete(id);
      if (error) reject(new Error(error)); else resolve(event.data);
    };
    worker.onerror = (event) => {
      for (const [, reject] of drawing.values()) reject(new Error(event.message || "decoder"));
      drawing.clear();
      worker = null;
    };
  }

  async function draw(face) {
    // a face sent as {child, code}: its pixels from the decoder, as a PNG data URL
    if (!worker) startWorker();
    const id = ++messages;
    const base = new URL("api/", document.baseURI).href;
    const { width, height, pixels } = await new Promise((resolve, reject) => {
      drawing.set(id, [resolve, reject]);
      worker.postMessage({ id, base, child: face.child, code: face.code });
    });
    const canvas = document.createElement("canvas");
    canvas.width = width;
    canvas.height = height;
    const context = canvas.getContext("2d");
    const image = context.createImageData(width, height);
    for (let i = 0; i < pixels.length; i++) {
      image.data.fill(pixels[i], 4 * i, 4 * i + 3);
      image.data[4 * i + 3] = 255;
    }
    context.putImageData(image, 0, 0);
    return canvas.toDataURL("image/png");
  }

  function decode(keys, images) {
    // a face the server sent before (views leave out what the page was given) is decoded
    // already or on its way; one neither here nor sent rejects, and the page asks for all
    return Promise.all(keys.map((key) => {
      if (decoded.has(key)) return null;
      if (!decoding.has(key)) {
        if (!images[key]) return Promise.reject(new Error(`face ${key} is missing`));
        const img = new Image();
        img.alt = "";
        img.draggable = false;
        img.dataset.key = key;
        const source = images[key];
        const src = typeof source === "string" ? Promise.resolve(source) : draw(source);
        decoding.set(key, src.then((url) => { img.src = url; return img.decode(); }).then(
          () => { decoded.set(key, img); decoding.delete(key); },
          (err) => { decoding.delete(key); throw err; }));
      }
      return decoding.get(key);
    }));
  }

  function keep(keys) {
    // the faces named now become the most recent; the oldest others go beyond KEEP
    for (const key of keys) {
      const img = decoded.get(key);
      if (img) { decoded.delete(key); decoded.set(key, img); }
    }
    for (const key of [...decoded.keys()]) {
      if (decoded.size <= KEEP) break;
      if (!keys.includes(key)) decoded.delete(key);
    }
  }

  function layout(img) {
    // the lab's geometry (face height, centre offset) scaled down to fit narrow screens; a
    // slider's one face is centred, and its track and OK take height below it
    const width = display.face_size * img.naturalWidth / img.naturalHeight;
    const span = slider ? width : 2 * display.face_offset + width;
    const scale = Math.min(1, (window.innerWidth - 16) / span,
      (window.innerHeight - (slider ? 330 : 160)) / display.face_size);
    app.style.setProperty("--face", `${display.face_size * scale}px`);
    app.style.setProperty("--offset", `${display.face_offset * scale}px`);
  }

  function setKind(kind) {
    app.dataset.kind = kind;
    app.dataset.screen = view.screen.id;
    app.dataset.ready = "false";
  }

  async function show(next, whole = false) {
    if (next.screen.kind === "trial" && !whole) {
      // the faces must be here before anything is shown; if one is not, ask for them all
      try { await decode(next.screen.images, next.images); } catch (err) {
        const state = await api("GET", "api/state");
        if (state.code === 200) await show(state.data, true); else await recover(state.code, state.data, false);
        return;
      }
    }
    view = next;
    display = next.display;
    block();
    const screen = next.screen;
    onset = null;
    const wanted = [...(screen.images || []), ...(next.next || [])];
    keep(wanted);
    if (screen.kind !== "trial") {
      slider = null;
      lastResponse = null; // a gap across a message measures the reader, not the page
      showMessage(screen);
      if (screen.kind === "wait") waitForChain(next);
      if (next.next) decode(next.next, next.images).catch(() => {});
      return;
    }
    await decode(screen.images, next.images);
    if (next.next) decode(next.next, next.images).catch(() => {});
    $("message").hidden = true;
    $("prompt").textContent = screen.prompt;
    $("progress").textContent = screen.progress;
    let faces;
    if (screen.slider) {
      slider = { keys: screen.images, position: screen.slider.start, moves: [], dragging: false };
      faces = [decoded.get(slider.keys[slider.position])];
      faces[0].className = "single";
      placeHandle();
    } else {
      slider = null;
      faces = screen.images.map((key) => decoded.get(key));
      faces[0].className = "left";
      faces[1].className = "right";
    }
    layout(faces[0]);
    setKind("trial");
    await frame();
    $("faces").replaceChildren(...faces);
    $("control").hidden = !slider;
    $("ok").hidden = !display.mouse;
    $("fixation").hidden = true;
    $("trial").hidden = false;
    for (const id of ["prompt", "faces", "control", "progress"]) $(id).style.visibility = "visible";
    onset = await frame(); // the frame after the one that painted the pair
    gap = lastResponse === null ? null : (onset - lastResponse) / 1000;
    app.dataset.ready = "true";
  }

  async function waitForChain(waiting) {
    // shared chains, none free yet: ask again after the seconds the server names, until the
    // trial is there (nothing to press meanwhile)
    $("continue").hidden = true;
    await sleep(waiting.retry * 1000);
    if (view !== waiting) return;
    const res = await api("GET", "api/state");
    if (view !== waiting) return;
    if (res.code === 200) await show(res.data); else await recover(res.code, res.data, false);
  }

  function showMessage(screen) {
    $("trial").hidden = true;
    $("message").hidden = false;
    $("message-text").textContent = screen.text;
    const consent = screen.kind === "consent";
    const final = FINAL.includes(screen.kind);
    $("continue").hidden = consent || final;
    $("agree").hidden = !consent;
    $("decline").hidden = !consent;
    $("code").hidden = true;
    $("redirect").hidden = true;
    $("close").hidden = !(screen.kind === "end" && view.end && !view.end.redirect);
    if (final && view.end) {
      if (view.end.code) {
        $("code-label").textContent = CODE_LABEL[screen.kind];
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
    if (final) exitFullscreen();
    if (!consent && !final) $("continue").focus();
  }

  // ---------------------------------------------------------------- screening on the page

  function tooSmall() {
    const min = display && display.min_window;
    return Boolean(min) && (window.innerWidth < min[0] || window.innerHeight < min[1]);
  }

  function block() {
    // the blocker covers everything while the window is too small or full screen was left
    const small = tooSmall() && view && !FINAL.includes(view.screen.kind);
    const out = leftFullscreen && view && !FINAL.includes(view.screen.kind);
    blocked = Boolean(small || out);
    $("blocker").hidden = !blocked;
    $("fullscreen").hidden = small || !out;
    if (small) {
      const [w, h] = display.min_window;
      $("blocker-text").textContent = "Please make this browser window larger (or maximise it): "
        + `the study needs at least ${w} x ${h} pixels, and it is `
        + `${window.innerWidth} x ${window.innerHeight}. It goes on as soon as it fits.`;
    } else if (out) {
      $("blocker-text").textContent = "The study runs in full screen. Please go back to full "
        + "screen to go on.";
    }
    app.dataset.blocked = String(blocked);
  }

  function enterFullscreen() {
    // called from a click or key press only (browsers allow full screen on a user gesture)
    if (display && display.fullscreen && document.fullscreenEnabled && !document.fullscreenElement) {
      document.documentElement.requestFullscreen().catch(() => {});
    }
  }

  function exitFullscreen() {
    if (document.fullscreenElement) document.exitFullscreen().catch(() => {});
  }

  document.addEventListener("fullscreenchange", () => {
    if (!display || !display.fullscreen || !view || FINAL.includes(view.screen.kind)) return;
    const inside = Boolean(document.fullscreenElement);
    if (inside === !leftFullscreen) return;
    leftFullscreen = !inside;
    api("POST", "api/event", { kind: inside ? "fullscreen_enter" : "fullscreen_exit" });
    block();
  });
  window.addEventListener("resize", () => {
    if (view && view.screen.kind === "resize") {
      if (!tooSmall()) main();
      return;
    }
    block();
  });
  $("fullscreen").addEventListener("click", () => enterFullscreen());

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
    if (busy || blocked || !view || view.screen.kind === "trial") return;
    if (consent !== false) enterFullscreen();
    busy = true;
    const body = { screen: view.screen.id, have: [...decoded.keys()].slice(-KEEP) };
    if (consent !== undefined) body.consent = consent;
    const res = await api("POST", "api/ack", body);
    busy = false;
    if (res.code === 200) await show(res.data); else await recover(res.code, res.data);
  }

  function placeHandle() {
    $("handle").style.left = `${(100 * (slider.position + 0.5)) / slider.keys.length}%`;
    $("handle").dataset.position = String(slider.position);
    $("handle").setAttribute("aria-valuemax", String(slider.keys.length - 1));
    $("handle").setAttribute("aria-valuenow", String(slider.position));
  }

  function moveTo(position, time) {
    // the handle to a slider position (clamped to the track), recorded when it changes
    if (!slider || onset === null || busy || blocked || time < onset) return;
    position = Math.max(0, Math.min(slider.keys.length - 1, position));
    if (position === slider.position) return;
    slider.position = position;
    // seconds from onset, floored to 0.1 ms (never after the confirm); past MAX_MOVES the last
    // entry is replaced, so the path still ends where the handle is
    const move = [Math.floor((time - onset) * 10) / 10000, position];
    if (slider.moves.length >= MAX_MOVES) slider.moves[MAX_MOVES - 1] = move;
    else slider.moves.push(move);
    const img = decoded.get(slider.keys[position]);
    img.className = "single";
    $("faces").replaceChildren(img);
    placeHandle();
  }

  function trackPosition(event) {
    const box = $("track").getBoundingClientRect();
    return Math.floor(((event.clientX - box.left) / box.width) * slider.keys.length);
  }

  async function respond(side, time, device) {
    // nothing on show, pressed before it, or the page is blocked
    if (busy || blocked || onset === null || time < onset) return;
    busy = true;
    const rt = (time - onset) / 1000;
    const have = [...decoded.keys()].slice(-KEEP);
    const body = slider
      ? { trial: view.screen.id, position: slider.position, moves: slider.moves, rt,
          onset: onset / 1000, gap, device, have }
      : { trial: view.screen.id, side, rt, onset: onset / 1000, gap, device, have };
    onset = null;
    lastResponse = time;
    for (const id of ["prompt", "faces", "control", "progress"]) $(id).style.visibility = "hidden";
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
      const time = event.timeStamp || performance.now();
      if (slider && (side || key === " ")) {
        event.preventDefault();
        if (key === " ") respond(null, time, "keyboard");
        else moveTo(slider.position + (side === "left" ? -1 : 1), time);
      } else if (side) {
        event.preventDefault();
        respond(side, time, "keyboard");
      }
    } else if (event.key === " " && kind !== "consent" && kind !== "wait" && !FINAL.includes(kind)) {
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
  // a drag starts on the track (or the handle) and follows the pointer anywhere until released
  $("track").addEventListener("pointerdown", (event) => {
    if (!slider || !display.mouse || busy || onset === null) return;
    event.preventDefault();
    slider.dragging = true;
    $("track").setPointerCapture(event.pointerId);
    moveTo(trackPosition(event), event.timeStamp || performance.now());
  });
  $("track").addEventListener("pointermove", (event) => {
    if (slider && slider.dragging) moveTo(trackPosition(event), event.timeStamp || performance.now());
  });
  for (const type of ["pointerup", "pointercancel"]) {
    $("track").addEventListener(type, () => { if (slider) slider.dragging = false; });
  }
  $("ok").addEventListener("pointerdown", (event) => {
    if (!slider || !display.mouse) return;
    event.preventDefault();
    respond(null, event.timeStamp || performance.now(),
      event.pointerType === "touch" ? "touch" : "mouse");
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
    if (starting) return;
    starting = true;
    try { await start(); } finally { starting = false; }
  }

  async function start() {
    const url = new URLSearchParams(window.location.search);
    const body = {};
    for (const key of KEYS) if (url.get(key) !== null) body[key] = url.get(key);
    if (hz === undefined) hz = await refreshRate();
    const pointer = ["coarse", "fine"].find((p) => window.matchMedia(`(pointer: ${p})`).matches);
    body.client = {
      viewport: [window.innerWidth, window.innerHeight],
      screen: [window.screen.width, window.screen.height],
      dpr: window.devicePixelRatio || 1,
      refresh_hz: hz,
      pointer: pointer || "none",
      touch_points: Math.min(100, navigator.maxTouchPoints || 0),
    };
    const res = await api("POST", "api/start", body);
    if (res.code === 200) await show(res.data); else await recover(res.code, res.data, false);
    block();
  }

  main();
})();
