// Floor view in the control room: each site's read points as a flow (induction ->
// tunnel -> sorter -> chutes -> doors), coloured by open alerts and by how long
// parcels have waited there against the stage standard, with a sparkline of scans per
// minute over the last hour. Data: GET /v1/floor every 15 s.
//
// It adds itself to the control room's board and uses the key the control room keeps
// in this tab; it shares no code with control-room.js, so the two change apart.
"use strict";

(function () {
  const { el, api } = window.PT;
  const KEY_STORE = "parceltrack.controlRoom.apiKey";
  const POLL_MS = 15000;
  const FLOW = ["induction", "tunnel", "sort", "chute", "dispatch"];
  const SVG = "http://www.w3.org/2000/svg";

  let T = null;
  let timer = null;
  const section = el("section", { id: "floor", class: "panel floor", "aria-labelledby": "floor-heading" });

  function level(point) {
    const critical = point.worst_severity === "critical" || point.worst_severity === "major";
    const over = point.standard_s && point.longest_wait_s > point.standard_s;
    const half = point.standard_s && point.longest_wait_s > point.standard_s / 2;
    if (critical || over) return "bad";
    if (point.open_alerts > 0 || half) return "warn";
    return "ok";
  }

  function sparkline(values) {
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", "0 0 60 24");
    svg.setAttribute("preserveAspectRatio", "none");
    svg.setAttribute("role", "img");
    const top = Math.max(1, ...values);
    const line = document.createElementNS(SVG, "polyline");
    line.setAttribute("points",
      values.map((v, i) => `${i},${(23 - (v / top) * 22).toFixed(1)}`).join(" "));
    svg.append(line);
    return svg;
  }

  const seconds = (s) => (s === null || s === undefined ? "–"
    : s < 120 ? Math.round(s) + " s" : Math.round(s / 60) + " min");

  function pointCard(point) {
    const perMin = point.per_minute.length ? point.per_minute[point.per_minute.length - 1] : 0;
    const spark = sparkline(point.per_minute);
    spark.setAttribute("aria-label", `${T.floor_per_min}: ${point.per_minute.join(", ")}`);
    return el("div", { class: "floor-point", dataset: { level: level(point), readPoint: point.read_point_id },
      title: point.description || point.read_point_id },
      el("div", { class: "rp", text: point.read_point_id }),
      el("div", {}, `${point.open_alerts} ${T.floor_alerts} · ${point.parcels} ${T.floor_parcels}`),
      el("div", {}, `${T.floor_dwell} ${seconds(point.longest_wait_s)} · ${perMin} ${T.floor_per_min}`),
      spark);
  }

  function drawSite(site) {
    const byStage = new Map(FLOW.map((s) => [s, []]));
    for (const point of site.read_points) {
      if (byStage.has(point.stage)) byStage.get(point.stage).push(point);
    }
    const stages = FLOW.filter((s) => byStage.get(s).length).map((stage) =>
      el("div", { class: "floor-stage", dataset: { stage } },
        el("h3", { text: T["stage_" + stage] || stage }),
        byStage.get(stage).map(pointCard)));
    return el("div", { class: "floor-site", dataset: { site: site.site_id } },
      el("h3", { text: site.site_id }),
      stages.length ? el("div", { class: "floor-flow" }, stages)
        : el("p", { class: "empty", text: T.floor_no_points }));
  }

  async function refresh() {
    const key = sessionStorage.getItem(KEY_STORE);
    if (!key) return;
    try {
      const floor = await api("/v1/floor", { headers: { Authorization: "Bearer " + key } });
      section.replaceChildren(
        el("h2", { id: "floor-heading", text: T.floor_title }),
        el("p", { class: "hint", text: T.floor_hint }),
        ...floor.sites.map(drawSite));
      section.dataset.at = floor.at;
    } catch (_error) {
      // The control room reports a wrong key or an unreachable API itself.
    }
  }

  async function start() {
    const board = document.getElementById("board");
    if (!board) return;
    const lang = new URLSearchParams(location.search).get("lang");
    const texts = await api("/manager/texts" + (lang ? "?lang=" + encodeURIComponent(lang) : ""));
    T = texts.texts;
    document.head.append(el("link", { rel: "stylesheet", href: "/static/manager.css" }));
    board.append(section);
    // Poll only while the board is shown (signed in).
    const follow = () => {
      clearInterval(timer);
      timer = null;
      if (!board.hidden) {
        refresh();
        timer = setInterval(refresh, POLL_MS);
      }
    };
    new MutationObserver(follow).observe(board, { attributes: true, attributeFilter: ["hidden"] });
    follow();
  }

  start();
})();
