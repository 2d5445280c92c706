// The till page: reads /api/alerts and /api/batch, answers through /api/alerts/<code>/answer.
// Text from the journal is only ever set with textContent, never as HTML.
// Countdowns run on the till's clock: each reply carries the till's "now", and the page keeps the
// offset to the phone's own clock (a phone's clock may be off; a demo's till runs on simulated time).
"use strict";

(function () {
  const body = document.body;
  let csrf = body.dataset.csrf || "";
  let offset = 0;                 // till time minus phone time, in ms
  let refreshTimer = null;
  const REFRESH_MS = 15000;
  const SEVERITY = { high: "高 high", medium: "中 medium", low: "低 low" };

  const $ = (id) => document.getElementById(id);

  function tillNow() { return Date.now() + offset; }

  function noteNow(iso) {
    if (iso) offset = Date.parse(iso) - Date.now();
  }

  async function api(method, path, payload) {
    const opts = { method, credentials: "same-origin", headers: {} };
    if (method !== "GET") {
      opts.headers["X-CSRF-Token"] = csrf;
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(payload || {});
    }
    const resp = await fetch(path, opts);
    let data = {};
    try { data = await resp.json(); } catch (e) { data = { ok: false, error: "HTTP " + resp.status }; }
    if (resp.status === 401 && path !== "/api/login") { showLogin(); }
    return { status: resp.status, data };
  }

  // -- sign-in ---------------------------------------------------------------------------------
  function showLogin() {
    body.dataset.signedIn = "no";
    $("login").hidden = false;
    $("app").hidden = true;
    $("who").hidden = true;
    if (refreshTimer) { clearInterval(refreshTimer); refreshTimer = null; }
  }

  function showApp(name) {
    body.dataset.signedIn = "yes";
    $("login").hidden = true;
    $("app").hidden = false;
    $("who").hidden = false;
    $("who-name").textContent = name;
    refresh();
    if (!refreshTimer) refreshTimer = setInterval(refresh, REFRESH_MS);
  }

  $("login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const err = $("login-error");
    err.hidden = true;
    const { status, data } = await api("POST", "/api/login", { pin: $("pin").value });
    $("pin").value = "";
    if (status === 200 && data.ok) {
      csrf = data.csrf;
      body.dataset.role = data.role;
      body.dataset.name = data.name;
      showApp(data.name);
    } else {
      err.textContent = data.error || "登录失败 / sign-in failed";
      err.hidden = false;
    }
  });

  $("logout").addEventListener("click", async () => {
    await api("POST", "/api/logout");
    csrf = "";
    showLogin();
  });

  // -- alerts ----------------------------------------------------------------------------------
  function card(alert, closed) {
    const v = alert.view;
    const li = $("alert-card").content.firstElementChild.cloneNode(true);
    li.dataset.code = v.code;
    li.dataset.state = alert.state;
    li.classList.add("sev-" + alert.severity);
    if (alert.certainty) li.classList.add("certainty-" + alert.certainty);
    li.querySelector(".code").textContent = v.code;
    li.querySelector(".sev").textContent = SEVERITY[alert.severity] || alert.severity;
    li.querySelector(".state").textContent = v.state_zh + " · " + v.state_en;
    li.querySelector(".why").textContent = alert.reason_zh || alert.reason;
    li.querySelector(".amount").textContent = v.amount;
    li.querySelector(".voucher").textContent = v.voucher || "–";
    li.querySelector(".when").textContent = v.time;
    const s = alert.suggestion || {};
    li.querySelector(".steps-zh").textContent = s.steps_zh || "";
    li.querySelector(".steps-en").textContent = s.steps_en || "";
    const cd = li.querySelector(".countdown");
    if (!closed && s.deadline) { cd.dataset.deadline = s.deadline; } else { cd.remove(); }
    const answers = li.querySelector(".answers");
    if (closed) { answers.remove(); } else {
      answers.querySelectorAll("button.answer").forEach((b) => {
        const allowed = v.answers.includes(b.dataset.answer);
        b.hidden = !allowed;
        b.addEventListener("click", () => onAnswer(alert, b.dataset.answer, li));
      });
    }
    const answered = li.querySelector(".answered");
    const a = alert.answer;
    if (a && a.by) {
      answered.textContent = a.by + "：" + (a.note || a.answer);
    } else { answered.remove(); }
    const hist = li.querySelector(".history");
    hist.addEventListener("toggle", () => { if (hist.open) loadHistory(alert.id, li); });
    if (v.has_evidence) {
      const link = li.querySelector(".evidence");
      // By id: a short code is unique among active alerts only, and a closed card's code may be reused.
      link.href = "/api/alerts/" + encodeURIComponent(alert.id) + "/evidence";
      link.hidden = false;
    }
    return li;
  }

  async function loadHistory(code, li) {
    const { status, data } = await api("GET", "/api/alerts/" + encodeURIComponent(code));
    const log = li.querySelector(".log");
    log.replaceChildren();
    if (status !== 200) { return; }
    for (const h of data.history) {
      const item = document.createElement("li");
      item.textContent = fmtTime(h.at) + " " + h.state + " — " + h.actor + (h.note ? "：" + h.note : "");
      log.appendChild(item);
    }
  }

  function fmtTime(iso) {
    // The till's own wall time as it wrote it ("2026-11-27T14:03:00+08:00" -> "11-27 14:03").
    const m = /^\d{4}-(\d\d)-(\d\d)T(\d\d):(\d\d)/.exec(iso || "");
    return m ? `${m[1]}-${m[2]} ${m[3]}:${m[4]}` : (iso || "");
  }

  function fmtLeft(ms) {
    if (ms <= 0) return null;
    const total = Math.floor(ms / 1000);
    const h = Math.floor(total / 3600), m = Math.floor((total % 3600) / 60), s = total % 60;
    const pad = (n) => String(n).padStart(2, "0");
    return (h ? h + ":" + pad(m) : String(m)) + ":" + pad(s);
  }

  function tick() {
    document.querySelectorAll(".countdown[data-deadline]").forEach((el) => {
      const left = Date.parse(el.dataset.deadline) - tillNow();
      const text = fmtLeft(left);
      el.classList.toggle("late", text === null);
      el.classList.toggle("soon", text !== null && left < 30 * 60 * 1000);
      const en = document.createElement("small");
      en.textContent = text === null ? " past the cutoff" : " left before the cutoff";
      el.replaceChildren(text === null
        ? "已过结算时间 " + fmtTime(el.dataset.deadline)
        : "距结算还剩 " + text + "（" + fmtTime(el.dataset.deadline).slice(6) + " 前）", en);
    });
  }

  async function onAnswer(alert, answer, li) {
    let note = null;
    if (answer === "legit") {
      note = await askReason(alert);
      if (note === null) return;
    }
    const { status, data } = await api("POST", "/api/alerts/" + encodeURIComponent(alert.id) + "/answer",
      { answer, note });
    if (status === 200 && data.ok) {
      $("app-error").hidden = true;
      refresh();
    } else {
      showError(data.error || ("HTTP " + status));
    }
  }

  function askReason(alert) {
    const dlg = $("legit-dialog");
    const note = $("legit-note");
    const err = $("legit-error");
    note.value = "";
    err.hidden = true;
    dlg.querySelector(".legit-what").textContent = alert.view.code + " · " + alert.view.amount + " · " +
      (alert.reason_zh || alert.reason);
    return new Promise((resolve) => {
      const done = (value) => {
        $("legit-form").removeEventListener("submit", onOk);
        $("legit-cancel").removeEventListener("click", onCancel);
        dlg.close();
        resolve(value);
      };
      const onOk = (ev) => {
        ev.preventDefault();
        const text = note.value.trim();
        if (!text) { err.textContent = "请写明原因 / a reason is required"; err.hidden = false; return; }
        done(text);
      };
      const onCancel = () => done(null);
      $("legit-form").addEventListener("submit", onOk);
      $("legit-cancel").addEventListener("click", onCancel);
      dlg.showModal();
      note.focus();
    });
  }

  function showError(text) {
    const el = $("app-error");
    el.textContent = text;
    el.hidden = false;
  }

  async function refresh() {
    const [open, closed, batch] = await Promise.all([
      api("GET", "/api/alerts?state=open"),
      api("GET", "/api/alerts?state=closed"),
      api("GET", "/api/batch"),
    ]);
    if (open.status !== 200) { if (open.status !== 401) showError(open.data.error); return; }
    noteNow(open.data.now);
    const list = $("open-list");
    list.replaceChildren(...open.data.alerts.map((a) => card(a, false)));
    $("open-empty").hidden = open.data.alerts.length > 0;
    $("open-count").textContent = open.data.alerts.length ? String(open.data.alerts.length) : "";
    if (closed.status === 200) {
      $("closed-list").replaceChildren(...closed.data.alerts.map((a) => card(a, true)));
      $("closed-empty").hidden = closed.data.alerts.length > 0;
    }
    if (batch.status === 200) showBatch(batch.data);
    bringForward();
    body.dataset.loaded = "yes";
    tick();
  }

  // A message's link (/a/CODE) names one alert: show it first and open its history, once.
  function bringForward() {
    const focus = body.dataset.focus;
    if (!focus) return;
    const li = document.querySelector(`li[data-code="${CSS.escape(focus)}"]`);
    if (!li) return;
    body.dataset.focus = "";
    li.classList.add("focus");
    const hist = li.querySelector(".history");
    if (hist) hist.open = true;
    li.scrollIntoView({ block: "start" });
  }

  function showBatch(b) {
    $("batch-count").textContent = b.count + " 笔";
    $("batch-total").textContent = b.totals.length ? b.totals.map((t) => t.text).join("，") : "0";
    $("batch-review").textContent = b.next_review ? fmtTime(b.next_review) : "–";
    $("batch-cutoff").textContent = b.cutoff_manual ? "手动 manual" : (b.cutoff ? fmtTime(b.cutoff) : "–");
    const ul = $("sources");
    ul.replaceChildren(...b.sources.map((s) => {
      const li = document.createElement("li");
      li.className = s.ok ? "ok" : "bad";
      li.textContent = s.name + "：" + (s.wire ? s.wire.zh + " · " + s.wire.en : (s.ok ? "正常 ok" : "异常 " + s.state));
      return li;
    }));
    if (!b.healthy) {
      const li = document.createElement("li");
      li.className = "bad";
      li.textContent = "服务异常 / unhealthy: " + b.problems.join("; ");
      ul.appendChild(li);
    }
  }

  setInterval(tick, 1000);
  if (body.dataset.signedIn === "yes") showApp(body.dataset.name || "");
})();
