// Manager page: the centre's quality at a glance, each figure as a chart (Apache
// ECharts, vendored), as a table, and as CSV. Figures: GET /v1/manager/figures.
// Texts come translated from the server (<script id="texts">); numbers and times are
// formatted in the page's language.
"use strict";

(function () {
  const PT = window.PT;
  const { el, api, ApiError } = PT;
  const T = JSON.parse(document.getElementById("texts").textContent);
  const LANG = document.documentElement.lang || "en";
  const KEY_STORE = "parceltrack.manager.apiKey";

  const $ = (id) => document.getElementById(id);
  const keyForm = $("key-form");
  const keyInput = $("api-key");
  const board = $("figures");
  const problem = $("mg-error");
  const signOut = $("sign-out");
  const status = $("status");

  let key = sessionStorage.getItem(KEY_STORE);
  const charts = new Map(); // figure name -> echarts instance
  let query = ""; // the period and site of what is shown, for the CSV downloads

  const percent = new Intl.NumberFormat(LANG, { style: "percent", maximumFractionDigits: 1 });
  const number = new Intl.NumberFormat(LANG, { maximumFractionDigits: 1 });
  const RATE = /(_rate|^uptime)$/;

  function showError(title, text) {
    problem.replaceChildren(el("strong", { text: title + ": " }), text);
    problem.hidden = false;
  }

  function askForKey() {
    board.hidden = true;
    signOut.hidden = true;
    keyForm.hidden = false;
    keyInput.value = "";
    keyInput.focus();
  }

  function failed(error) {
    if (error instanceof ApiError && (error.status === 401 || error.status === 403)) {
      sessionStorage.removeItem(KEY_STORE);
      key = null;
      askForKey();
      showError(error.status === 401 ? T.key_refused : T.key_forbidden, error.detail);
    } else {
      showError(T.unreachable, error.message || String(error));
    }
  }

  function cell(column, value) {
    if (value === null || value === undefined) return "";
    if (typeof value === "number" && RATE.test(column)) return percent.format(value);
    if (typeof value === "number" && !Number.isInteger(value)) return number.format(value);
    return String(value);
  }

  function table(figure) {
    return el("table", { class: "figure-table" },
      el("thead", {}, el("tr", {}, figure.columns.map((c) => el("th", { scope: "col", text: c })))),
      el("tbody", {}, figure.rows.map((row) => el("tr", {},
        row.map((v, i) => el("td", { class: typeof v === "number" ? "num" : null,
          text: cell(figure.columns[i], v) }))))));
  }

  function rowsOf(figure) {
    return figure.rows.map((row) => Object.fromEntries(figure.columns.map((c, i) => [c, row[i]])));
  }

  const pct = (value) => (value === null || value === undefined ? null : +(value * 100).toFixed(2));

  // One line per group (e.g. site · class) over the sorted days.
  function lines(rows, groupOf, valueOf) {
    const days = [...new Set(rows.map((r) => r.day))].sort();
    const groups = new Map();
    for (const r of rows) {
      const name = groupOf(r);
      if (!groups.has(name)) groups.set(name, new Map());
      groups.get(name).set(r.day, valueOf(r));
    }
    return {
      tooltip: { trigger: "axis", valueFormatter: (v) => (v === null ? "" : v + " %") },
      legend: { type: "scroll", top: 0 },
      grid: { top: 40, left: 50, right: 20, bottom: 30 },
      xAxis: { type: "category", data: days },
      yAxis: { type: "value", axisLabel: { formatter: "{value} %" } },
      series: [...groups].map(([name, byDay]) => ({
        name, type: "line", connectNulls: true, showSymbol: true, symbolSize: 8,
        data: days.map((d) => byDay.get(d) ?? null),
      })),
    };
  }

  const OPTIONS = {
    on_time: (rows) => lines(rows, (r) => `${r.site_id} · ${r.service_class}`,
      (r) => pct(r.on_time_rate)),
    rates: (rows) => {
      const spread = [];
      for (const r of rows) {
        spread.push({ day: r.day, group: `${r.site_id} · ${T.mis_sort_rate}`, v: pct(r.mis_sort_rate) });
        spread.push({ day: r.day, group: `${r.site_id} · ${T.no_read_rate}`, v: pct(r.no_read_rate) });
        spread.push({ day: r.day, group: `${r.site_id} · ${T.loss_rate}`, v: pct(r.loss_rate) });
      }
      return lines(spread, (r) => r.group, (r) => r.v);
    },
    dwell: (rows, which) => {
      const column = which === "p50" ? "dwell_p50_s" : "dwell_p95_s";
      const points = [...new Set(rows.map((r) => r.read_point_id))];
      const hours = [...Array(24).keys()];
      const data = rows.map((r) => [r.hour, points.indexOf(r.read_point_id),
        r[column] === null ? null : Math.round(r[column])]);
      const values = data.map((d) => d[2]).filter((v) => v !== null);
      return {
        tooltip: { position: "top", valueFormatter: (v) => v + " " + T.seconds },
        grid: { top: 10, left: 110, right: 20, bottom: 70 },
        xAxis: { type: "category", data: hours, name: T.hour, splitArea: { show: true } },
        yAxis: { type: "category", data: points, splitArea: { show: true },
          axisLabel: { interval: 0 } }, // every read point named, however many
        visualMap: { min: 0, max: Math.max(1, ...values), calculable: true, orient: "horizontal",
          left: "center", bottom: 0, inRange: { color: ["#e8f3ea", "#f6c343", "#b3261e"] } },
        series: [{ name: which === "p50" ? T.dwell_p50 : T.dwell_p95, type: "heatmap", data,
          label: { show: points.length <= 12, fontSize: 9 } }],
      };
    },
    complaints: (rows) => {
      const outcomes = ["answered in time", "answered late", "overdue", "waiting"];
      const names = [T.answered_in_time, T.answered_late, T.overdue, T.waiting];
      const hours = (s) => (s === null ? null : +(s / 3600).toFixed(1));
      return {
        tooltip: { trigger: "item" },
        legend: { top: 0 },
        grid: { top: 40, left: 50, right: 20, bottom: 30 },
        xAxis: { type: "time" },
        yAxis: { type: "value", name: T.hours },
        series: [
          ...outcomes.map((outcome, i) => ({
            name: names[i], type: "scatter", symbolSize: 9,
            data: rows.filter((r) => r.outcome === outcome)
              .map((r) => [r.created_at, hours(r.answer_s)]),
          })),
          { name: T.deadline, type: "line", step: "end", symbol: "none",
            lineStyle: { type: "dashed" },
            data: rows.map((r) => [r.created_at, hours(r.deadline_s)]) },
        ],
      };
    },
    uptime: (rows) => ({
      tooltip: { trigger: "axis", valueFormatter: (v) => v + " %" },
      grid: { top: 10, left: 130, right: 30, bottom: 30 },
      xAxis: { type: "value", min: 0, max: 100, axisLabel: { formatter: "{value} %" } },
      yAxis: { type: "category", data: rows.map((r) => r.device_id), inverse: true,
        axisLabel: { interval: 0 } },
      series: [{ name: T.uptime, type: "bar", data: rows.map((r) => pct(r.uptime)) }],
    }),
  };

  // The server's summary, in the order it lists it: rates as percentages, overdue a count.
  function glance(summary) {
    $("glance").replaceChildren(...Object.entries(summary).flatMap(([id, value]) => [
      el("dt", { text: T[id] || id }),
      el("dd", { dataset: { fact: id },
        text: value === null ? T.no_data
          : id === "overdue_complaints" ? String(value) : percent.format(value) }),
    ]));
  }

  async function download(name) {
    const response = await fetch(`/v1/manager/figures/${name}?format=csv&${query}`,
      { headers: { Authorization: "Bearer " + key, Accept: "text/csv" } });
    if (!response.ok) {
      failed(new ApiError(response.status, "HTTP " + response.status));
      return;
    }
    const url = URL.createObjectURL(await response.blob());
    const link = el("a", { href: url, download: `${name}.csv`, hidden: true });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }

  function drawFigure(section, figure) {
    const name = figure.name;
    const heading = section.querySelector("h2");
    const chartBox = el("div", { class: "chart", role: "img", "aria-label": heading.textContent });
    const tableBox = el("div", { class: "table-view", hidden: true }, table(figure));
    const toggle = el("button", { type: "button", class: "secondary", "aria-pressed": "false",
      text: T.view_table });
    toggle.addEventListener("click", () => {
      const showTable = tableBox.hidden;
      tableBox.hidden = !showTable;
      chartBox.hidden = showTable;
      toggle.textContent = showTable ? T.view_chart : T.view_table;
      toggle.setAttribute("aria-pressed", String(showTable));
      if (!showTable) charts.get(name).resize();
    });
    const csv = el("button", { type: "button", class: "secondary", text: T.download_csv,
      onclick: () => download(name) });
    const tools = el("div", { class: "row figure-tools" }, toggle, csv);
    let which = "p95";
    if (name === "dwell") {
      const choice = el("select", { "aria-label": T.dwell_p95 },
        el("option", { value: "p95", text: T.dwell_p95 }),
        el("option", { value: "p50", text: T.dwell_p50 }));
      choice.addEventListener("change", () => {
        which = choice.value;
        charts.get(name).setOption({ animation: false, ...OPTIONS.dwell(rowsOf(figure), which) },
          true);
      });
      tools.append(choice);
    }
    if (name === "dwell" || name === "uptime") {
      // One row per read point or device, each tall enough to be named.
      const count = new Set(figure.rows.map((r) => r[figure.columns.indexOf(
        name === "dwell" ? "read_point_id" : "device_id")])).size;
      chartBox.style.height = Math.max(320, 110 + count * 18) + "px";
    }
    section.replaceChildren(heading, tools, chartBox, tableBox);
    if (charts.has(name)) charts.get(name).dispose();
    const chart = window.echarts.init(chartBox, null, { renderer: "svg", locale: LANG.startsWith("zh") ? "ZH" : "EN" });
    // No animation: a manager reads figures, and a screenshot shows them drawn.
    chart.setOption({ animation: false, ...OPTIONS[name](rowsOf(figure), which) });
    charts.set(name, chart);
    section.dataset.rows = String(figure.rows.length);
  }

  // ---- counter staff ratings (GET /v1/staff, /v1/staff/{id}) -------------------------

  const starText = (n) => (n > 0 ? "★".repeat(n) : "☆");

  async function showHistory(member) {
    const box = $("staff-history");
    let body;
    try {
      body = await api("/v1/staff/" + encodeURIComponent(member.staff_id),
        { headers: { Authorization: "Bearer " + key } });
    } catch (error) {
      failed(error);
      return;
    }
    box.replaceChildren(
      el("h3", { text: T.history_of.replace("{name}", member.name) }),
      el("table", {},
        el("thead", {}, el("tr", {}, [T.when, T.feedback, T.change, T.score, T.stars]
          .map((c) => el("th", { scope: "col", text: c })))),
        el("tbody", {}, body.history.map((h) => el("tr", {},
          el("td", {}, PT.timeEl(h.at)),
          el("td", { text: `#${h.feedback_id} ${T[h.kind] || h.kind}` }),
          el("td", { class: "num", text: (h.change > 0 ? "+" : "") + h.change }),
          el("td", { class: "num", text: String(h.score) }),
          el("td", { text: starText(h.stars) }))))));
    box.hidden = false;
  }

  async function loadStaff(site) {
    const query = site ? "?site=" + encodeURIComponent(site) : "";
    let staff;
    try {
      staff = await api("/v1/staff" + query, { headers: { Authorization: "Bearer " + key } });
    } catch (error) {
      failed(error);
      return;
    }
    const rows = staff.map((m) => el("tr", { dataset: { staff: m.staff_id } },
      el("th", { scope: "row", text: `${m.name} (${m.staff_id})` }),
      el("td", { text: m.counter_id || "" }),
      el("td", { class: "num", text: String(m.score) }),
      el("td", { "aria-label": String(m.stars), text: starText(m.stars) }),
      el("td", { class: "num", text: number.format(m.bonus_factor) + "×" }),
      el("td", { class: "num", text: `${m.praise} / ${m.complaints}` }),
      el("td", { class: m.needs_review ? "bad" : null, text: m.needs_review ? T.needs_review : "" }),
      el("td", {}, el("button", { type: "button", class: "secondary", text: T.history,
        onclick: () => showHistory(m) }))));
    $("staff-table").tBodies[0].replaceChildren(
      ...(rows.length ? rows : [el("tr", {}, el("td", { colspan: 8, class: "empty", text: T.no_staff }))]));
    $("staff-history").hidden = true;
  }

  async function load() {
    // The standard periods are computed ahead for every site; a site is computed now.
    const params = new URLSearchParams({ days: $("period").value });
    const site = $("site").value.trim();
    if (site) params.set("site", site);
    status.textContent = T.loading;
    let body;
    try {
      body = await api("/v1/manager/figures?" + params,
        { headers: { Authorization: "Bearer " + key, Accept: "application/json" } });
    } catch (error) {
      status.textContent = "";
      failed(error);
      return;
    }
    query = params.toString();
    problem.hidden = true;
    keyForm.hidden = true;
    board.hidden = false;
    signOut.hidden = false;
    const byName = Object.fromEntries(body.figures.map((f) => [f.name, f]));
    glance(body.summary);
    for (const section of document.querySelectorAll("section.figure")) {
      drawFigure(section, byName[section.dataset.figure]);
    }
    await loadStaff(site);
    status.textContent = body.computed_at
      ? T.as_of.replace("{time}", PT.when(body.computed_at)) : "";
    board.dataset.loaded = String(Date.now());
  }

  keyForm.addEventListener("submit", (event) => {
    event.preventDefault();
    key = keyInput.value.trim();
    if (!key) return;
    sessionStorage.setItem(KEY_STORE, key);
    load();
  });
  $("period-form").addEventListener("submit", (event) => {
    event.preventDefault();
    load();
  });
  signOut.addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORE);
    key = null;
    problem.hidden = true;
    askForKey();
  });
  window.addEventListener("resize", () => charts.forEach((c) => c.resize()));

  if (key) load();
  else askForKey();
})();
