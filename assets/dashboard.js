// hxlog dashboard: polls /api/current at the sampling interval and
// /api/samples for the charts. Every request goes to this server only.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const COLORS = ["#dc2626", "#ea580c", "#2563eb", "#0891b2", "#7c3aed", "#15803d"];
  let win = "24h";
  let intervalMs = 30000;
  let windowMock = false;
  let newestMock = false;
  let charts = {};
  let timer = null;
  // The chart is fetched again once a new point can show: every sampling
  // interval for raw samples, every bucket for a downsampled window.
  let chartEveryMs = 0;
  let chartAt = 0;

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  async function getJSON(url) {
    const r = await fetch(url, { cache: "no-store" });
    if (!r.ok) throw new Error(url + ": " + r.status + " " + (await r.text()));
    return r.json();
  }

  function num(v, digits) {
    return v === null || v === undefined ? "n/a" : v.toFixed(digits);
  }

  function ago(iso) {
    if (!iso) return "never";
    const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
    if (s < 90) return Math.round(s) + " s ago";
    if (s < 5400) return Math.round(s / 60) + " min ago";
    if (s < 172800) return Math.round(s / 3600) + " h ago";
    return Math.round(s / 86400) + " d ago";
  }

  function showBanner() {
    $("mock-banner").hidden = !(windowMock || newestMock);
  }

  function renderCurrent(c) {
    $("device").textContent = c.device_id;
    const h = $("health");
    h.textContent = c.health.healthy ? "sampling ok" : "NOT HEALTHY: " + c.health.reason;
    h.className = "health " + (c.health.healthy ? "ok" : "bad");
    const s = c.sample;
    newestMock = !!(s && s.mock);
    showBanner();
    $("updated").textContent = s ? "last sample " + ago(s.taken_at) + " (" + s.taken_at + ")" : "no sample yet";
    const box = $("current");
    box.replaceChildren();
    for (const role of c.roles) {
      const r = s ? s.readings.find((x) => x.role === role) : null;
      const ok = r && r.celsius !== null;
      const card = el("div", "card " + (ok ? "ok" : "missing"));
      card.dataset.role = role;
      card.append(el("div", "role", role));
      if (ok) {
        card.append(el("div", "value", r.celsius.toFixed(2) + " °C"));
        card.append(el("div", "quality", "ok" + (r.sensor_id ? " · " + r.sensor_id : "")));
      } else {
        card.append(el("div", "value", "missing"));
        card.append(el("div", "quality", r ? r.quality : "no reading"));
        card.append(el("div", "reason", r ? r.reason || "" : "no " + role + " reading in the newest sample"));
      }
      box.append(card);
    }
    const e = s ? s.efficiency : {};
    $("effectiveness").textContent = num(e.effectiveness, 3);
    $("eff-detail").textContent = "hot " + num(e.hot_effectiveness, 3) + " · cold " + num(e.cold_effectiveness, 3);
    $("lmtd").textContent = num(e.lmtd, 2) + (e.lmtd === null || e.lmtd === undefined ? "" : " K");
    const alarms = $("alarms");
    alarms.replaceChildren();
    if (!c.alarms.length) alarms.append(el("li", "muted", "none"));
    for (const a of c.alarms) {
      alarms.append(el("li", "raised", a.alarm + (a.role ? " " + a.role : "") + ": " + a.message + " (since " + ago(a.at) + ")"));
    }
    const body = $("sinks").tBodies[0];
    body.replaceChildren();
    if (!c.sinks.length) {
      const tr = el("tr");
      const td = el("td", "muted", "no sink configured: samples stay in the outbox");
      td.colSpan = 5;
      tr.append(td);
      body.append(tr);
    }
    for (const k of c.sinks) {
      const tr = el("tr");
      tr.append(el("td", "", k.name + (k.configured ? "" : " (not configured)")));
      tr.append(el("td", "", String(k.pending)));
      tr.append(el("td", "", k.oldest_pending ? ago(k.oldest_pending) : "-"));
      tr.append(el("td", "", ago(k.last_success)));
      const recovered = k.last_success && k.last_error_at && Date.parse(k.last_success) > Date.parse(k.last_error_at);
      tr.append(el("td", recovered ? "" : "err", k.last_error ? "[" + k.last_error_class + "] " + k.last_error + " (" + ago(k.last_error_at) + (recovered ? ", recovered" : "") + ")" : "-"));
      body.append(tr);
    }
    intervalMs = Math.max(1000, c.interval_seconds * 1000);
  }

  function chart(id, d, names, digits) {
    const target = $(id);
    const width = Math.max(300, target.clientWidth - 2);
    const data = [d.t];
    const series = [{}];
    const bands = [];
    names.forEach((name, i) => {
      const color = COLORS[i % COLORS.length];
      data.push(d.max[name], d.min[name]);
      series.push({ label: name + " max", stroke: color, width: 1.5, value: (u, v) => (v == null ? "-" : v.toFixed(digits)) });
      series.push({ label: name + " min", stroke: color, width: 1, dash: [4, 3], value: (u, v) => (v == null ? "-" : v.toFixed(digits)) });
      bands.push({ series: [2 * i + 1, 2 * i + 2], fill: color + "22" });
    });
    if (charts[id] && charts[id].series.length === series.length) {
      charts[id].setData(data);
      return;
    }
    if (charts[id]) charts[id].destroy();
    target.replaceChildren();
    charts[id] = new uPlot({ width: width, height: 260, series: series, bands: bands, scales: { x: { time: true } } }, data, target);
  }

  async function refreshChart() {
    const d = await getJSON("/api/samples?since=" + encodeURIComponent(win) + "&max_points=1000");
    windowMock = d.mock;
    showBanner();
    const roles = d.series.filter((n) => n !== "effectiveness");
    chart("chart-temps", d, roles, 2);
    chart("chart-eff", d, ["effectiveness"], 3);
    chartEveryMs = d.bucket_seconds * 1000;
    chartAt = Date.now();
    $("window-info").textContent = d.samples + " samples" + (d.bucket_seconds ? ", " + Math.round(d.bucket_seconds) + " s per point" : "");
  }

  async function tick() {
    try {
      renderCurrent(await getJSON("/api/current"));
      if (Date.now() - chartAt >= Math.max(intervalMs, chartEveryMs)) await refreshChart();
      $("error").hidden = true;
    } catch (e) {
      $("error").hidden = false;
      $("error").textContent = String(e);
    }
    clearTimeout(timer);
    timer = setTimeout(tick, intervalMs);
  }

  for (const b of document.querySelectorAll("#windows button")) {
    b.addEventListener("click", () => {
      win = b.dataset.win;
      for (const o of document.querySelectorAll("#windows button")) o.classList.toggle("active", o === b);
      $("csv").href = "/api/export.csv?since=" + encodeURIComponent(win);
      chartAt = 0;
      tick();
    });
  }
  tick();
})();
