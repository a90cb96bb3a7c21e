// Tracking page: look a parcel up with GET /v1/parcels/{number} (no key needed).
"use strict";

(function () {
  const { el, when, timeEl, api } = window.PT;

  const STATUS = {
    accepted: "Accepted: we have its details, it has not been scanned yet",
    in_sorting: "In sorting",
    sorted: "Sorted for its destination",
    dispatched: "Dispatched from the sorting centre",
    delayed: "Delayed",
    exception: "Needs attention: our staff are looking into it",
    delivered: "Delivered",
  };
  const ETA_SOURCE = {
    delivered: "delivered",
    stage_standards: "from the time each sorting stage normally takes",
    unknown: "not known yet",
  };

  const form = document.getElementById("track-form");
  const input = document.getElementById("tracking-id");
  const statusLine = document.getElementById("track-status");
  const problem = document.getElementById("track-error");
  const parcel = document.getElementById("parcel");
  let lookup = 0; // only the latest lookup may write to the page

  function showProblem(title, text) {
    parcel.hidden = true;
    statusLine.textContent = "";
    problem.replaceChildren(el("h2", { text: title }), el("p", { text: text }));
    problem.hidden = false;
  }

  function place(where) {
    const parts = [];
    if (where.site_name || where.site) {
      parts.push(where.site_name ? `${where.site_name} (${where.site})` : where.site);
    }
    if (where.zone) parts.push(`zone ${where.zone}`);
    if (where.description || where.read_point) parts.push(where.description || where.read_point);
    return parts.join(", ") || "unknown";
  }

  function fact(name, term, ...value) {
    return el("div", { dataset: { fact: name } }, el("dt", { text: term }), el("dd", {}, ...value));
  }

  function render(view) {
    document.getElementById("parcel-id").textContent = view.tracking_id;
    const status = document.getElementById("parcel-status");
    status.textContent = STATUS[view.status] || view.status;
    status.dataset.status = view.status;
    document.getElementById("parcel-service").textContent = view.service_class || "unknown";
    document.getElementById("parcel-destination").textContent = view.destination || "unknown";

    const location = document.getElementById("parcel-location");
    const last = view.last_location;
    if (!last) {
      location.replaceChildren(el("p", { text: "Not scanned yet." }));
    } else {
      const lines = [el("p", { class: "where" }, place(last), ", since ", timeEl(last.time))];
      const seg = last.segment;
      if (seg) {
        lines.push(el("p", {},
          `On the conveyor from ${seg.from_description || seg.from_read_point} to ` +
          `${seg.to_description || seg.to_read_point}`,
          seg.expected_by ? [", expected there by ", timeEl(seg.expected_by)] : "", "."));
      }
      location.replaceChildren(...lines);
    }

    const d = view.delivery;
    const onTime = d.on_time === true ? "On time" : d.on_time === false ? "Late" : "Not known yet";
    const delivery = document.getElementById("parcel-delivery");
    const facts = [
      fact("eta", "Estimated delivery", d.eta ? timeEl(d.eta) : "not known yet",
        d.eta ? ` (${ETA_SOURCE[d.eta_source] || d.eta_source})` : ""),
      fact("due", "Due", d.due ? timeEl(d.due) : "unknown",
        d.delivery_days !== null && d.delivery_days !== undefined
          ? ` (J+${d.delivery_days} working days)` : ""),
      fact("on-time", "On time", el("span", { class: "on-time", dataset: { onTime: String(d.on_time) }, text: onTime })),
    ];
    if (d.leaves_site_eta) {
      facts.push(fact("leaves-site", "Expected to leave this centre", timeEl(d.leaves_site_eta)));
    }
    delivery.replaceChildren(...facts);

    const rows = view.timeline.map((event) => {
      const upu = event.upu_event;
      const what = upu ? upu.description
        : event.kind === "accepted" ? "Accepted" : "Scanned";
      return el("tr", {},
        el("td", {}, timeEl(event.time)),
        el("td", { text: what }),
        el("td", {}, upu ? el("abbr", { class: "upu", title: upu.description, text: upu.code }) : "—"),
        el("td", { text: place(event) }));
    });
    document.querySelector("#parcel-timeline tbody").replaceChildren(...rows);

    problem.hidden = true;
    statusLine.textContent = `Parcel ${view.tracking_id} found; last updated ${when(new Date().toISOString())}.`;
    parcel.hidden = false;
  }

  async function track(number) {
    const mine = ++lookup;
    const wanted = number.trim();
    if (!wanted) {
      showProblem("Enter a tracking number", "Type the number from your receipt, e.g. RR473124829GB.");
      input.focus();
      return;
    }
    // A slash or other URL syntax would change which address is asked: say so here.
    if (/[/?#%\\]/.test(wanted)) {
      showProblem("That is not a tracking number",
        `"${wanted}" cannot be a tracking number: it has only letters, digits and spaces.`);
      return;
    }
    statusLine.textContent = `Looking up ${wanted} …`;
    try {
      const view = await api(`/v1/parcels/${encodeURIComponent(wanted)}`,
        { headers: { Accept: "application/json" } });
      if (mine === lookup) render(view);
    } catch (error) {
      if (mine !== lookup) return;
      if (error.status === 422) {
        showProblem("That is not a valid tracking number", error.detail);
      } else if (error.status === 404) {
        showProblem("We do not know this parcel",
          `No parcel has the tracking number ${wanted.toUpperCase()}. Check the number on ` +
          "your receipt; a parcel appears here once the sender has registered it.");
      } else if (error.status === 429) {
        const wait = error.retryAfter ? ` in ${error.retryAfter} s` : " in a moment";
        showProblem("Too many lookups", `Please try again${wait}.`);
      } else if (error.status === 0) {
        showProblem("Tracking is unavailable", error.detail);
      } else {
        showProblem("Tracking is unavailable",
          `The tracking service answered ${error.status}: ${error.detail}. Please try again later.`);
      }
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const number = input.value;
    // Keep the number in the address so the page can be bookmarked or shared.
    const url = new URL(window.location.href);
    url.searchParams.set("id", number.trim());
    window.history.replaceState(null, "", url);
    track(number);
  });

  const initial = new URLSearchParams(window.location.search).get("id");
  if (initial) {
    input.value = initial;
    track(initial);
  }
})();
