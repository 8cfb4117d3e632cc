// The experimenter page: polls api/experimenter every few seconds with the token (kept in
// this tab's sessionStorage only) and shows the numbers. Everything is inserted as text.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const POLL_MS = 3000;
  let timer = null;

  function cell(row, text, cls) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    row.append(td);
    return td;
  }

  let limits = null; // the report's R-hat thresholds, sent with the numbers
  // numbers arrive as JSON numbers, null (nothing to show) or "inf" / "-inf"
  const num = (x) => x === "inf" ? Infinity : x === "-inf" ? -Infinity : x;
  function rhatClass(r) {
    r = num(r);
    return r === null ? "" : r < limits.rhat_good ? "good" : r > limits.rhat_bad ? "bad" : "meh";
  }

  function fixed(x, digits) {
    x = num(x);
    if (x === null || x === undefined) return "—";
    return Number.isFinite(x) ? x.toFixed(digits) : (x > 0 ? "∞" : "−∞");
  }

  // what the experimenter may do to a session, by its status (mcmcp.online.study.manage)
  const ACTIONS = [["release", ["consent", "running", "complete"]], ["end", ["consent", "running"]],
    ["reset", ["consent", "running", "complete", "declined", "ended"]]];
  const WHAT = {
    release: "its link will open it in a new browser (the current browser loses it)",
    end: "it stops here; the participant cannot go on",
    reset: "it stops here and the participant's link starts a new session",
  };

  function device(d) {
    // "desktop · Chrome 120 · 1920×1080 ×2 · 60 Hz" from what the page measured at the start
    if (!d) return "—";
    return [d.device, d.browser, d.screen ? `${d.screen[0]}×${d.screen[1]}` : null,
      d.dpr && d.dpr !== 1 ? `×${d.dpr}` : null,
      d.refresh_hz ? `${Math.round(d.refresh_hz)} Hz` : null].filter((x) => x).join(" · ") || "—";
  }

  async function manage(p, action) {
    if (!window.confirm(`${action} the session of ${p.participant}? ${WHAT[action]}. `
      + "This is recorded; answered trials are kept.")) return;
    const token = sessionStorage.getItem("experimenter-token");
    const res = await fetch("api/experimenter/session", {
      method: "POST", cache: "no-store",
      headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
      body: JSON.stringify({ uid: p.uid, action }),
    });
    const data = await res.json().catch(() => ({}));
    $("error").textContent = res.status === 200 ? "" : data.error || `error ${res.status}`;
    poll();
  }

  function render(data) {
    limits = data;
    $("study").textContent = data.study;
    const counts = [["in progress", data.counts.in_progress], ["done", data.counts.done],
      ["declined", data.counts.declined], ["abandoned", data.counts.abandoned],
      ["trials answered", data.counts.trials_answered]];
    $("counts").replaceChildren(...counts.map(([label, n]) => {
      const card = document.createElement("div");
      card.className = "card";
      const b = document.createElement("b");
      b.textContent = String(n);
      card.append(b, label);
      return card;
    }));
    $("emotions").tBodies[0].replaceChildren(...data.emotions.map((e) => {
      const tr = document.createElement("tr");
      cell(tr, e.emotion);
      cell(tr, String(e.n_chains));
      cell(tr, String(e.n_draws));
      cell(tr, fixed(e.rhat, 3), rhatClass(e.rhat));
      cell(tr, e.verdict);
      cell(tr, e.prototype);
      return tr;
    }));
    $("participants").tBodies[0].replaceChildren(...data.participants.map((p) => {
      const tr = document.createElement("tr");
      tr.dataset.uid = p.uid;
      cell(tr, p.participant + (p.session > 1 ? ` · ${p.session}` : ""));
      cell(tr, p.status);
      const td = cell(tr, "");
      const bar = document.createElement("span");
      bar.className = "bar";
      const fill = document.createElement("span");
      fill.style.width = `${(100 * p.shown) / Math.max(1, p.of)}%`;
      bar.append(fill);
      td.append(bar, `${p.shown} / ${p.of}`);
      const acc = p.catch_accuracy === null ? "—" : `${Math.round(100 * p.catch_accuracy)}% of ${p.catch_n}`;
      cell(tr, acc, p.catch_accuracy === null ? "" : p.catch_flagged ? "bad" : "good");
      cell(tr, fixed(p.rhat, 3), rhatClass(p.rhat));
      cell(tr, device(p.device));
      cell(tr, String(p.fullscreen_exits), p.fullscreen_exits ? "meh" : "");
      cell(tr, p.verdicts.length ? p.verdicts.join("; ") : "—");
      cell(tr, p.started.slice(0, 19).replace("T", " "));
      cell(tr, p.updated.slice(0, 19).replace("T", " "));
      const actions = cell(tr, "");
      for (const [action, statuses] of ACTIONS) {
        if (!statuses.includes(p.status)) continue;
        const button = document.createElement("button");
        button.type = "button";
        button.className = `action ${action}`;
        button.textContent = action;
        button.addEventListener("click", () => manage(p, action));
        actions.append(button);
      }
      return tr;
    }));
    renderShared(data.shared);
    $("updated").textContent = `updated ${new Date().toLocaleTimeString()}; refreshes every ${POLL_MS / 1000} s`;
    $("numbers").hidden = false;
    document.body.dataset.loaded = "true";
  }

  function renderShared(shared) {
    // an across-participant study: each chain's length, holder, expired leases; the group verdicts
    $("shared").hidden = !shared;
    if (!shared) return;
    $("groups").tBodies[0].replaceChildren(...shared.groups.map((g) => {
      const tr = document.createElement("tr");
      cell(tr, g.emotion);
      cell(tr, g.estimate);
      cell(tr, fixed(g.cone95_deg, 1));
      cell(tr, fixed(g.rhat, 3), rhatClass(g.rhat));
      cell(tr, `${g.verdict}; ${g.rhat_verdict}`);
      cell(tr, String(g.participants));
      return tr;
    }));
    $("chains").tBodies[0].replaceChildren(...shared.chains.map((c) => {
      const tr = document.createElement("tr");
      cell(tr, String(c.chain));
      cell(tr, c.emotion);
      cell(tr, `${c.shown} / ${c.target}`);
      cell(tr, c.holder === null ? "free" : c.holder);
      cell(tr, String(c.expired_leases), c.expired_leases ? "meh" : "");
      cell(tr, String(c.late), c.late ? "meh" : "");
      return tr;
    }));
  }

  async function poll() {
    const token = sessionStorage.getItem("experimenter-token");
    if (!token) return;
    try {
      const res = await fetch("api/experimenter", { cache: "no-store", headers: { Authorization: `Bearer ${token}` } });
      const data = await res.json();
      if (res.status === 200) {
        $("error").textContent = "";
        $("login").hidden = true;
        render(data);
      } else {
        $("error").textContent = data.error || `error ${res.status}`;
        if (res.status === 401) { sessionStorage.removeItem("experimenter-token"); $("login").hidden = false; return; }
      }
    } catch (err) {
      $("error").textContent = "cannot reach the server; retrying";
    }
    clearTimeout(timer);
    timer = setTimeout(poll, POLL_MS);
  }

  function open() {
    sessionStorage.setItem("experimenter-token", $("token").value.trim());
    poll();
  }

  $("open").addEventListener("click", open);
  $("token").addEventListener("keydown", (event) => { if (event.key === "Enter") open(); });
  poll();
})();
