// Tracking page: look a parcel up with GET /v1/parcels/{number} (no key needed).
"use strict";

(function () {
  const { el, when, timeEl, api, _ } = window.PT;

  // The API answers in codes; what a customer reads for each is said here.
  const STATUS = {
    accepted: _("Accepted: we have its details, it has not been scanned yet"),
    in_sorting: _("In sorting"),
    sorted: _("Sorted for its destination"),
    dispatched: _("Dispatched from the sorting centre"),
    delayed: _("Delayed"),
    exception: _("Needs attention: our staff are looking into it"),
    delivered: _("Delivered"),
  };
  const ETA_SOURCE = {
    delivered: _("delivered"),
    stage_standards: _("from the time each sorting stage normally takes"),
    unknown: _("not known yet"),
  };
  // UPU EMSEVT events (api/tracking.py UPU_EVENTS has the same English descriptions).
  const UPU = {
    EMA: _("Posting/collection"),
    EMB: _("Arrival at outward office of exchange"),
    EMC: _("Departure from outward office of exchange"),
    EMD: _("Arrival at inward office of exchange"),
    EME: _("Held by customs"),
    EMF: _("Departure from inward office of exchange"),
    EDD: _("Item into sorting centre"),
    EDE: _("Item out of sorting centre"),
    EMG: _("Arrival at delivery office"),
    EDG: _("Item out for delivery"),
    EMH: _("Unsuccessful delivery attempt"),
    EMI: _("Final delivery"),
  };
  const ZONES = {
    induction: _("induction"),
    tunnel: _("scan tunnel"),
    sorter: _("sorter"),
    chute: _("chute"),
    door: _("outbound door"),
    facility: _("facility"),
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
    if (where.zone) parts.push(ZONES[where.zone] || _("zone {zone}", { zone: where.zone }));
    if (where.description || where.read_point) parts.push(where.description || where.read_point);
    return parts.join(_(", ")) || _("unknown");
  }

  function fact(name, term, ...value) {
    return el("div", { dataset: { fact: name } }, el("dt", { text: term }), el("dd", {}, ...value));
  }

  function render(view) {
    document.getElementById("parcel-id").textContent = view.tracking_id;
    const status = document.getElementById("parcel-status");
    status.textContent = STATUS[view.status] || view.status;
    status.dataset.status = view.status;
    document.getElementById("parcel-service").textContent = view.service_class || _("unknown");
    document.getElementById("parcel-destination").textContent = view.destination || _("unknown");
    // Promises are shown in the zone of the centre the parcel is at (or left from).
    const home = view.last_location ? view.last_location.site
      : view.timeline.length ? view.timeline[0].site : null;

    const location = document.getElementById("parcel-location");
    const last = view.last_location;
    if (!last) {
      location.replaceChildren(el("p", { text: _("Not scanned yet.") }));
    } else {
      const lines = [el("p", { class: "where" }, place(last), _(", since "),
        timeEl(last.time, false, last.site))];
      const seg = last.segment;
      if (seg) {
        lines.push(el("p", {},
          _("On the conveyor from {from} to {to}", {
            from: seg.from_description || seg.from_read_point,
            to: seg.to_description || seg.to_read_point,
          }),
          seg.expected_by ? [_(", expected there by "), timeEl(seg.expected_by, false, last.site)] : "",
          _(".")));
      }
      location.replaceChildren(...lines);
    }

    const d = view.delivery;
    const onTime = d.on_time === true ? _("On time") : d.on_time === false ? _("Late") : _("Not known yet");
    const delivery = document.getElementById("parcel-delivery");
    const facts = [
      fact("eta", _("Estimated delivery"), d.eta ? timeEl(d.eta, false, home) : _("not known yet"),
        d.eta ? _(" ({source})", { source: ETA_SOURCE[d.eta_source] || d.eta_source }) : ""),
      fact("due", _("Due"), d.due ? timeEl(d.due, false, home) : _("unknown"),
        d.delivery_days !== null && d.delivery_days !== undefined
          ? _(" (J+{days} working days)", { days: d.delivery_days }) : ""),
      fact("on-time", _("On time"), el("span", { class: "on-time", dataset: { onTime: String(d.on_time) }, text: onTime })),
    ];
    if (d.leaves_site_eta) {
      facts.push(fact("leaves-site", _("Expected to leave this centre"),
        timeEl(d.leaves_site_eta, false, home)));
    }
    delivery.replaceChildren(...facts);

    const rows = view.timeline.map((event) => {
      const upu = event.upu_event;
      const described = upu ? UPU[upu.code] || upu.description : null;
      const what = described || (event.kind === "accepted" ? _("Accepted") : _("Scanned"));
      return el("tr", {},
        el("td", {}, timeEl(event.time, false, event.site)),
        el("td", { text: what }),
        el("td", {}, upu ? el("abbr", { class: "upu", title: described, text: upu.code }) : "—"),
        // The manifest row's description is the API's English; say it here instead.
        el("td", { text: place(event.kind === "accepted"
          ? Object.assign({}, event, { description: _("Manifest received") }) : event) }));
    });
    document.querySelector("#parcel-timeline tbody").replaceChildren(...rows);

    problem.hidden = true;
    statusLine.textContent = _("Parcel {number} found; last updated {time}.", {
      number: view.tracking_id, time: when(new Date().toISOString(), home),
    });
    parcel.hidden = false;
  }

  async function track(number) {
    const mine = ++lookup;
    const wanted = number.trim();
    if (!wanted) {
      showProblem(_("Enter a tracking number"), _("Type the number from your receipt, e.g. RR473124829GB."));
      input.focus();
      return;
    }
    // A slash or other URL syntax would change which address is asked: say so here.
    if (/[/?#%\\]/.test(wanted)) {
      showProblem(_("That is not a tracking number"),
        _("\"{number}\" cannot be a tracking number: it has only letters, digits and spaces.", { number: wanted }));
      return;
    }
    statusLine.textContent = _("Looking up {number} …", { number: wanted });
    try {
      const view = await api(`/v1/parcels/${encodeURIComponent(wanted)}`,
        { headers: { Accept: "application/json" } });
      if (mine === lookup) render(view);
    } catch (error) {
      if (mine !== lookup) return;
      if (error.status === 422) {
        showProblem(_("That is not a valid tracking number"), error.detail);
      } else if (error.status === 404) {
        showProblem(_("We do not know this parcel"),
          _("No parcel has the tracking number {number}. Check the number on your receipt; " +
            "a parcel appears here once the sender has registered it.", { number: wanted.toUpperCase() }));
      } else if (error.status === 429) {
        showProblem(_("Too many lookups"), error.retryAfter
          ? _("Please try again in {seconds} s.", { seconds: error.retryAfter })
          : _("Please try again in a moment."));
      } else if (error.status === 0) {
        showProblem(_("Tracking is unavailable"), error.detail);
      } else {
        showProblem(_("Tracking is unavailable"),
          _("The tracking service answered {status}: {detail}. Please try again later.",
            { status: error.status, detail: error.detail }));
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
