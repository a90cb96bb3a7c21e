// Control room: open alerts live from GET /v1/alerts/stream (with who each is assigned
// to, assigned and unassigned from here), device health, feedback.
//
// The stream needs the API key, and a browser's EventSource cannot send headers, so
// the page reads the stream with fetch() (Authorization header) and parses the
// Server-Sent Events itself. It remembers the last event id and reconnects with
// Last-Event-ID, so the API replays whatever changed while the connection was down.
// The ids are opaque positions in the alert log (only a batch's last frame has one),
// so a reconnect may bring changes again: each carries its event_id, and a change no
// newer than the last one applied to its alert is dropped.
"use strict";

(function () {
  const { el, timeEl, reason, api, ApiError, _, lang } = window.PT;

  const KEY_STORE = "parceltrack.controlRoom.apiKey";
  const DEVICE_POLL_MS = 15000;
  const FEEDBACK_POLL_MS = 20000;
  const MAX_RETRY_MS = 30000;

  const $ = (id) => document.getElementById(id);
  const keyForm = $("key-form");
  const keyInput = $("api-key");
  const board = $("board");
  const problem = $("cr-error");
  const live = $("live");
  const signOut = $("sign-out");

  let key = sessionStorage.getItem(KEY_STORE);
  let session = 0; // bumped on sign-in/out: stale callbacks of an old session do nothing
  let stream = null; // AbortController of the current stream request
  let lastEventId = null; // id of the last SSE event applied
  const applied = new Map(); // alert_id -> event_id of the last change applied to it
  let retryMs = 3000; // the server's `retry:` advice
  let failures = 0; // consecutive stream failures, for back-off
  let timers = [];
  const alerts = new Map(); // alert_id -> alert, unresolved only
  const fresh = new Set(); // alert ids that arrived live, highlighted for a while
  const drafts = new Map(); // feedback_id -> answer being typed
  const assigning = new Map(); // alert_id -> name being typed in its open "Assign to" form
  let labels = new Map(); // alert kind -> what controllers read, from GET /v1/alerts/kinds
  let renderQueued = false;
  const FEEDBACK_KINDS = { complaint: _("complaint"), praise: _("praise") };

  // Links to a parcel open the tracking page in this page's language.
  function trackLink(trackingId) {
    return `/track?id=${encodeURIComponent(trackingId)}&lang=${encodeURIComponent(lang)}`;
  }

  function authHeaders(extra) {
    return Object.assign({ Authorization: "Bearer " + key, Accept: "application/json" }, extra || {});
  }

  function showError(title, text, source) {
    problem.replaceChildren(el("strong", { text: _("{title}: ", { title }) }), text);
    problem.dataset.source = source || "";
    problem.hidden = false;
  }

  // A poll that works again takes its own earlier failure message away.
  function recovered(source) {
    if (!problem.hidden && problem.dataset.source === source) clearError();
  }

  function clearError() {
    problem.hidden = true;
    problem.replaceChildren();
  }

  function setLive(state, text) {
    live.dataset.state = state;
    live.textContent = text;
  }

  // ---- signing in and out -------------------------------------------------------

  function stop() {
    session += 1;
    if (stream) stream.abort();
    stream = null;
    timers.forEach(clearTimeout);
    timers.forEach(clearInterval);
    timers = [];
    alerts.clear();
    fresh.clear();
    assigning.clear();
    applied.clear();
    lastEventId = null;
    failures = 0;
  }

  function askForKey() {
    stop();
    board.hidden = true;
    signOut.hidden = true;
    keyForm.hidden = false;
    setLive("off", _("Not connected"));
    keyInput.value = "";
    keyInput.focus();
  }

  // A 401 or 403 anywhere: the key is wrong or not a controller's; ask again.
  function authFailed(status, detail) {
    sessionStorage.removeItem(KEY_STORE);
    key = null;
    askForKey();
    if (status === 401) {
      showError(_("The API key was not accepted"),
        _("{detail}. Check the key and enter it again.", { detail }));
    } else {
      showError(_("This key may not open the control room"),
        _("{detail}. Use a key with role controller, manager or admin.", { detail }));
    }
  }

  // Every API failure goes through here: auth problems sign out, others are shown.
  function failed(error, what, source) {
    if (error instanceof ApiError && (error.status === 401 || error.status === 403)) {
      authFailed(error.status, error.detail);
    } else {
      showError(what, error.message || String(error), source);
    }
  }

  async function start() {
    stop();
    const mine = session;
    keyForm.hidden = true;
    board.hidden = false;
    signOut.hidden = false;
    clearError();
    // One quick check first, so a wrong key gets its message before anything else: the
    // kinds' labels need the controller's role too, and come before the first alert.
    let kinds;
    try {
      kinds = await api(`/v1/alerts/kinds?lang=${encodeURIComponent(lang)}`, { headers: authHeaders() });
    } catch (error) {
      if (mine === session) failed(error, _("Could not open the control room"));
      return;
    }
    if (mine !== session) return;
    labels = new Map(kinds.map((k) => [k.kind, k.label]));
    openStream(mine);
    loadDevices(mine);
    loadFeedback(mine);
    timers.push(setInterval(() => loadDevices(mine), DEVICE_POLL_MS));
    timers.push(setInterval(() => loadFeedback(mine), FEEDBACK_POLL_MS));
    timers.push(setInterval(queueRender, 30000)); // keep "3 min ago" current
  }

  keyForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const typed = keyInput.value.trim();
    if (!typed) {
      showError(_("No key"), _("Enter your controller API key."));
      return;
    }
    key = typed;
    sessionStorage.setItem(KEY_STORE, key);
    start();
  });

  signOut.addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORE);
    key = null;
    clearError();
    askForKey();
  });

  // A kind newer than the labels this API sent is shown by its own name.
  function label(kind) {
    return labels.get(kind) || kind;
  }

  // ---- the alert stream -----------------------------------------------------------

  // Server-Sent Events parser (the WHATWG rules): lines end in CRLF, LF or CR; a
  // blank line dispatches; `:` starts a comment; one space after the colon is dropped.
  function sseParser(onEvent, onRetry) {
    let buffer = "";
    let data = [];
    let type = "";
    let id = null;
    function line(text) {
      if (text === "") {
        if (data.length) onEvent({ id: id, type: type || "message", data: data.join("\n") });
        data = [];
        type = "";
        return;
      }
      if (text.startsWith(":")) return; // keep-alive comment
      const colon = text.indexOf(":");
      const field = colon < 0 ? text : text.slice(0, colon);
      let value = colon < 0 ? "" : text.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "data") data.push(value);
      else if (field === "event") type = value;
      else if (field === "id" && !value.includes("\0")) id = value;
      else if (field === "retry" && /^\d+$/.test(value)) onRetry(Number(value));
    }
    return function feed(chunk) {
      buffer += chunk;
      for (;;) {
        const end = buffer.search(/[\r\n]/);
        if (end < 0) return;
        // A CR at the very end may be the first half of CRLF: wait for more.
        if (buffer[end] === "\r" && end === buffer.length - 1) return;
        const width = buffer[end] === "\r" && buffer[end + 1] === "\n" ? 2 : 1;
        const text = buffer.slice(0, end);
        buffer = buffer.slice(end + width);
        line(text);
      }
    };
  }

  function onEvent(event, mine) {
    if (mine !== session) return;
    if (event.type.startsWith("alert.")) {
      let payload;
      try {
        payload = JSON.parse(event.data);
      } catch (_error) {
        return; // not ours to understand; the id still moves on
      }
      if (payload && payload.alert && !repeated(payload)) {
        apply(payload.alert, true);
      }
    }
    // A frame without an id keeps the last one (the SSE rules; the parser does so).
    if (event.id !== null && event.id !== "") lastEventId = event.id;
  }

  // Changes of one alert are logged in the order they commit, so an event id no newer
  // than the last one applied to the alert is a repeat (or older news): drop it.
  function repeated(payload) {
    const eventId = Number(payload.event_id);
    if (!Number.isSafeInteger(eventId)) return false; // nothing to tell repeats by
    const alertId = payload.alert.alert_id;
    const last = applied.get(alertId);
    if (last !== undefined && eventId <= last) return true;
    applied.set(alertId, eventId);
    return false;
  }

  async function openStream(mine) {
    const controller = new AbortController();
    stream = controller;
    const needSnapshot = lastEventId === null;
    const headers = authHeaders({ Accept: "text/event-stream", "Accept-Language": lang });
    if (lastEventId !== null) headers["Last-Event-ID"] = lastEventId;
    setLive("connecting", lastEventId === null ? _("Connecting …") : _("Reconnecting …"));
    let response;
    try {
      response = await fetch("/v1/alerts/stream", { headers, signal: controller.signal, cache: "no-store" });
    } catch (_error) {
      if (mine === session && !controller.signal.aborted) reconnectLater(mine);
      return;
    }
    if (mine !== session) return;
    if (response.status === 401 || response.status === 403) {
      const body = await response.json().catch(() => null);
      authFailed(response.status, reason(body, "HTTP " + response.status));
      return;
    }
    if (response.status === 422 && lastEventId !== null) {
      // The API does not know where that id stood (another database, say): start
      // over from a fresh listing.
      lastEventId = null;
      reconnectLater(mine);
      return;
    }
    if (!response.ok || !response.body) {
      reconnectLater(mine);
      return;
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    const feed = sseParser((event) => onEvent(event, mine), (ms) => { retryMs = ms; });
    let first = true;
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done || mine !== session) break;
        if (first) {
          // The API sends its first frame once it is listening: from here on, no
          // change can slip between the list below and the stream.
          first = false;
          failures = 0;
          if (needSnapshot) await loadAlerts(mine);
          if (mine === session) setLive("live", _("Live"));
        }
        feed(decoder.decode(value, { stream: true }));
      }
    } catch (_error) {
      // The connection broke (network, server restart): reconnect below.
    }
    if (mine === session && !controller.signal.aborted) reconnectLater(mine);
  }

  function reconnectLater(mine) {
    failures += 1;
    const wait = Math.min(MAX_RETRY_MS, retryMs * 2 ** Math.min(failures - 1, 4));
    setLive("down", _("Connection lost; reconnecting in {seconds} s", { seconds: Math.round(wait / 1000) }));
    timers.push(setTimeout(() => { if (mine === session) openStream(mine); }, wait));
  }

  async function loadAlerts(mine) {
    try {
      const [open, acked] = await Promise.all(["open", "acknowledged"].map((state) =>
        api(`/v1/alerts?state=${state}&limit=500`, { headers: authHeaders() })));
      if (mine !== session) return;
      // Changes that arrived on the stream meanwhile are applied after this list.
      alerts.clear();
      for (const alert of [...open.items, ...acked.items]) alerts.set(alert.alert_id, alert);
      const more = open.next_cursor !== null || acked.next_cursor !== null;
      $("alerts-note").textContent = more ? _("Showing the newest 500 open and 500 acknowledged alerts.") : "";
      queueRender();
    } catch (error) {
      if (mine === session) failed(error, _("Could not load the alerts"));
    }
  }

  function apply(alert, isLive) {
    if (alert.state === "resolved") {
      alerts.delete(alert.alert_id);
      assigning.delete(alert.alert_id);
    } else {
      if (isLive && alert.state === "open" && !alerts.has(alert.alert_id)) {
        fresh.add(alert.alert_id);
        const at = { kind: label(alert.kind), site: alert.site_id || _("no site") };
        $("alerts-announce").textContent = alert.tracking_id
          ? _("New alert: {kind} at {site}, parcel {parcel}", { ...at, parcel: alert.tracking_id })
          : _("New alert: {kind} at {site}", at);
        setTimeout(() => { fresh.delete(alert.alert_id); queueRender(); }, 10000);
      }
      alerts.set(alert.alert_id, alert);
    }
    queueRender();
  }

  // ---- acknowledging --------------------------------------------------------------

  async function acknowledge(alertId, button) {
    const mine = session;
    button.disabled = true;
    button.textContent = _("Acknowledging …");
    try {
      const alert = await api(`/v1/alerts/${alertId}/ack`, { method: "POST", headers: authHeaders() });
      if (mine === session) apply(alert, false);
    } catch (error) {
      if (mine !== session) return;
      button.disabled = false;
      button.textContent = _("Acknowledge");
      failed(error, _("Could not acknowledge alert {id}", { id: alertId }));
    }
  }

  // ---- assigning --------------------------------------------------------------------

  // `controller` null: the API assigns the alert to the caller (the key's name).
  async function assign(alertId, controller, button) {
    const mine = session;
    if (button) button.disabled = true;
    try {
      const alert = await api(`/v1/alerts/${alertId}/assign`, {
        method: "POST",
        headers: authHeaders({ "Content-Type": "application/json" }),
        body: JSON.stringify(controller === null ? {} : { controller }),
      });
      if (mine !== session) return;
      assigning.delete(alertId);
      apply(alert, false);
    } catch (error) {
      if (mine !== session) return;
      if (button) button.disabled = false;
      failed(error, _("Could not assign alert {id}", { id: alertId }));
    }
  }

  async function unassign(alertId, button) {
    const mine = session;
    button.disabled = true;
    try {
      const alert = await api(`/v1/alerts/${alertId}/assign`, { method: "DELETE", headers: authHeaders() });
      if (mine === session) apply(alert, false);
    } catch (error) {
      if (mine !== session) return;
      button.disabled = false;
      failed(error, _("Could not unassign alert {id}", { id: alertId }));
    }
  }

  function openAssignForm(alertId) {
    assigning.set(alertId, "");
    renderAlerts();
    const input = document.getElementById(`assign-${alertId}`);
    if (input) input.focus();
  }

  function assignForm(alert) {
    const id = alert.alert_id;
    const inputId = `assign-${id}`;
    const input = el("input", {
      id: inputId, name: "controller", required: true, maxlength: 200, autocomplete: "off",
      spellcheck: "false",
    });
    input.value = assigning.get(id) || "";
    input.addEventListener("input", () => assigning.set(id, input.value));
    return el("form", {
      class: "assign",
      onsubmit: (event) => {
        event.preventDefault();
        const name = input.value.trim();
        if (name) assign(id, name, event.submitter || null);
      },
    },
    el("label", { for: inputId, text: _("Assign alert {id} to", { id }) }), input,
    el("div", { class: "row" },
      el("button", { type: "submit", text: _("Assign") }),
      el("button", {
        type: "button", class: "secondary", text: _("Cancel"),
        onclick: () => { assigning.delete(id); queueRender(); },
      })));
  }

  // Who holds the alert, and the buttons to change that.
  function assignment(alert) {
    const id = alert.alert_id;
    if (assigning.has(id)) return [assignForm(alert)];
    if (alert.assigned_to) {
      return [el("button", {
        type: "button", class: "secondary unassign", text: _("Unassign"),
        "aria-label": _("Unassign alert {id}", { id }),
        onclick: (event) => unassign(id, event.currentTarget),
      }), el("button", {
        type: "button", class: "secondary", text: _("Reassign …"),
        "aria-label": _("Reassign alert {id}", { id }),
        onclick: () => openAssignForm(id),
      })];
    }
    return [el("button", {
      type: "button", class: "secondary take-alert", text: _("Assign to me"),
      "aria-label": _("Assign alert {id} to me", { id }),
      onclick: (event) => assign(id, null, event.currentTarget),
    }), el("button", {
      type: "button", class: "secondary", text: _("Assign …"),
      "aria-label": _("Assign alert {id} to someone", { id }),
      onclick: () => openAssignForm(id),
    })];
  }

  // ---- rendering the alerts -------------------------------------------------------

  function queueRender() {
    if (renderQueued) return;
    renderQueued = true;
    requestAnimationFrame(() => {
      renderQueued = false;
      renderAlerts();
    });
  }

  function details(obj) {
    const text = Object.entries(obj || {})
      .map(([k, v]) => `${k}: ${typeof v === "object" ? JSON.stringify(v) : v}`)
      .join(", ");
    return text.length > 240 ? text.slice(0, 239) + "…" : text;
  }

  function alertItem(alert) {
    const where = [alert.read_point_id, alert.device_id && _("device {device}", { device: alert.device_id })]
      .filter(Boolean).join(_(", "));
    const acked = alert.state === "acknowledged";
    return el("li", {
      class: "alert" + (fresh.has(alert.alert_id) ? " fresh" : ""),
      dataset: { alertId: alert.alert_id, state: alert.state },
    },
    el("div", { class: "alert-text" },
      el("span", { class: "alert-id", text: `#${alert.alert_id}` }), " ",
      alert.tracking_id ? [_("parcel "), el("a", { href: trackLink(alert.tracking_id), text: alert.tracking_id }), " "] : "",
      where ? _("at {where} ", { where }) : "",
      _("· opened "), timeEl(alert.opened_at, true, alert.site_id),
      details(alert.details) ? el("span", { class: "details", text: " · " + details(alert.details) }) : "",
      el("span", {
        class: "assignee" + (alert.assigned_to ? "" : " nobody"),
        text: alert.assigned_to ? _("Assigned to {who}", { who: alert.assigned_to }) : _("Unassigned"),
      })),
    el("div", { class: "alert-actions" },
      acked
        ? el("span", { class: "state", text: _("Acknowledged by {who}", { who: alert.acked_by || _("someone") }) })
        : el("button", {
          type: "button",
          class: "ack",
          "aria-label": _("Acknowledge alert {id}", { id: alert.alert_id }),
          text: _("Acknowledge"),
          onclick: (event) => acknowledge(alert.alert_id, event.currentTarget),
        }),
      assignment(alert)));
  }

  function renderAlerts() {
    const active = document.activeElement;
    const focused = active && active.closest ? active.closest("li.alert") : null;
    const focusedId = focused ? focused.dataset.alertId : null;
    // A name being typed in an "Assign to" form keeps its caret across redraws.
    const typing = active && active.tagName === "INPUT" && focused ? active.id : null;
    const caret = typing ? [active.selectionStart, active.selectionEnd] : null;

    const bySite = new Map();
    for (const alert of alerts.values()) {
      const site = alert.site_id || _("(no site)");
      if (!bySite.has(site)) bySite.set(site, new Map());
      const kinds = bySite.get(site);
      if (!kinds.has(alert.kind)) kinds.set(alert.kind, []);
      kinds.get(alert.kind).push(alert);
    }
    const openCount = [...alerts.values()].filter((a) => a.state === "open").length;
    $("alert-count").textContent = _("{open} open, {acked} acknowledged", { open: openCount, acked: alerts.size - openCount });

    const groups = [...bySite.keys()].sort().map((site) => {
      const kinds = bySite.get(site);
      const total = [...kinds.values()].reduce((n, list) => n + list.length, 0);
      const headingId = `site-${site.replace(/[^A-Za-z0-9_-]/g, "_")}`;
      return el("section", { class: "site-group", "aria-labelledby": headingId, dataset: { site } },
        el("h3", { id: headingId }, site, " ", el("span", { class: "count", text: `(${total})` })),
        [...kinds.keys()].sort().map((kind) => {
          const list = kinds.get(kind).sort((a, b) =>
            (a.state === b.state ? 0 : a.state === "open" ? -1 : 1) || b.alert_id - a.alert_id);
          return el("div", { class: "kind-group", dataset: { kind } },
            el("h4", {}, label(kind), " ", el("span", { class: "count", text: `(${list.length})` })),
            el("ul", { class: "alert-list" }, list.map(alertItem)));
        }));
    });
    const target = $("alert-groups");
    if (groups.length) target.replaceChildren(...groups);
    else target.replaceChildren(el("p", { class: "empty", text: _("No open alerts.") }));

    const input = typing ? document.getElementById(typing) : null;
    if (input) {
      input.focus();
      input.setSelectionRange(caret[0], caret[1]);
    } else if (focusedId) {
      const again = target.querySelector(`li.alert[data-alert-id="${focusedId}"] button`);
      if (again) again.focus();
    }
  }

  // ---- devices ----------------------------------------------------------------------

  async function loadDevices(mine) {
    let devices;
    try {
      devices = await api("/v1/devices", { headers: authHeaders() });
    } catch (error) {
      if (mine === session) failed(error, _("Could not load the devices"), "devices");
      return;
    }
    if (mine !== session) return;
    recovered("devices");
    devices.sort((a, b) => (a.online === b.online ? 0 : a.online ? 1 : -1)
      || a.site_id.localeCompare(b.site_id) || a.device_id.localeCompare(b.device_id));
    const online = devices.filter((d) => d.online).length;
    $("device-summary").textContent = _("{online} of {total} online", { online, total: devices.length });
    const num = (v) => (v === null || v === undefined ? "—" : String(v));
    const rows = devices.map((d) => el("tr", { dataset: { deviceId: d.device_id, online: String(d.online) } },
      el("th", { scope: "row", title: _("{kind} at {site} {read_point}", { kind: d.kind, site: d.site_id, read_point: d.read_point_id || "" }), text: d.device_id }),
      el("td", { class: d.online ? "ok" : "bad", text: d.online ? _("● online") : _("○ offline") }),
      el("td", {}, d.last_seen ? timeEl(d.last_seen, true, d.site_id) : _("never")),
      el("td", { class: "num", text: `${num(d.reads_last_hour)} / ${num(d.noreads_last_hour)}` }),
      el("td", { class: "num", text: num(d.frames_bad) }),
      el("td", { class: "num", text: num(d.outbox_depth) })));
    const body = document.querySelector("#device-table tbody");
    if (rows.length) body.replaceChildren(...rows);
    else body.replaceChildren(el("tr", {}, el("td", { colspan: 6, class: "empty", text: _("No devices registered.") })));
  }

  // ---- feedback ---------------------------------------------------------------------

  async function loadFeedback(mine) {
    let pages;
    try {
      pages = await Promise.all(["open", "taken"].map((state) =>
        api(`/v1/feedback?state=${state}&limit=100`, { headers: authHeaders() })));
    } catch (error) {
      if (mine === session) failed(error, _("Could not load the feedback"), "feedback");
      return;
    }
    if (mine !== session) return;
    recovered("feedback");
    const items = pages.flatMap((p) => p.items).sort((a, b) => a.feedback_id - b.feedback_id);
    renderFeedback(items);
  }

  async function feedbackAction(path, body, what) {
    const mine = session;
    try {
      await api(path, {
        method: "POST",
        headers: authHeaders(body ? { "Content-Type": "application/json" } : {}),
        body: body ? JSON.stringify(body) : undefined,
      });
      return true;
    } catch (error) {
      if (mine === session) failed(error, what);
      return false;
    } finally {
      if (mine === session) loadFeedback(mine);
    }
  }

  function feedbackItem(item) {
    const id = item.feedback_id;
    const state = item.state === "open" ? _("New")
      : item.first_answer_at ? _("Answered by {owner}, not closed", { owner: item.owner })
        : _("Taken by {owner}", { owner: item.owner });
    const parts = [
      el("p", { class: "feedback-head" },
        el("span", { class: "kind", dataset: { kind: item.kind }, text: FEEDBACK_KINDS[item.kind] || item.kind }), " · ",
        el("a", { href: trackLink(item.tracking_id), text: item.tracking_id }),
        item.site_id ? ` · ${item.site_id}` : "", " · ", timeEl(item.created_at, true, item.site_id),
        " · ", el("span", { class: "state", text: state })),
      el("blockquote", { class: "message", text: item.message }),
      item.contact ? el("p", { class: "hint", text: _("Contact: {contact}", { contact: item.contact }) }) : null,
      item.answers.length ? el("ol", { class: "answers" }, item.answers.map((a) =>
        el("li", {}, el("strong", { text: a.author }), " (", timeEl(a.at, true, item.site_id), "): ", a.message))) : null,
    ];
    if (item.state === "open") {
      parts.push(el("button", {
        type: "button", class: "take", text: _("Take"),
        "aria-label": _("Take feedback {id}", { id }),
        onclick: (event) => {
          event.currentTarget.disabled = true;
          feedbackAction(`/v1/feedback/${id}/take`, null, _("Could not take feedback {id}", { id }));
        },
      }));
    } else {
      const areaId = `answer-${id}`;
      const area = el("textarea", { id: areaId, rows: 2, maxlength: 4000, required: true });
      area.value = drafts.get(id) || "";
      area.addEventListener("input", () => drafts.set(id, area.value));
      parts.push(el("form", {
        class: "answer",
        onsubmit: async (event) => {
          event.preventDefault();
          const message = area.value.trim();
          if (!message) return;
          if (await feedbackAction(`/v1/feedback/${id}/answers`, { message }, _("Could not answer feedback {id}", { id }))) {
            drafts.delete(id);
          }
        },
      },
      el("label", { for: areaId, text: _("Answer to feedback {id}", { id }) }), area,
      el("div", { class: "row" },
        el("button", { type: "submit", text: _("Send answer") }),
        el("button", {
          type: "button", class: "secondary", text: _("Close"),
          "aria-label": _("Close feedback {id}", { id }),
          onclick: () => feedbackAction(`/v1/feedback/${id}/close`, null, _("Could not close feedback {id}", { id })),
        }))));
    }
    return el("li", { class: "feedback", dataset: { feedbackId: id, state: item.state } }, parts);
  }

  function renderFeedback(items) {
    // Keep the caret where it was when a poll redraws the answer being typed.
    const active = document.activeElement;
    const activeId = active && active.tagName === "TEXTAREA" ? active.id : null;
    const selection = activeId ? [active.selectionStart, active.selectionEnd] : null;
    $("feedback-count").textContent = `(${items.length})`;
    const list = $("feedback-list");
    if (items.length) list.replaceChildren(...items.map(feedbackItem));
    else list.replaceChildren(el("li", { class: "empty", text: _("Nothing waiting.") }));
    if (activeId) {
      const again = document.getElementById(activeId);
      if (again) {
        again.focus();
        again.setSelectionRange(selection[0], selection[1]);
      }
    }
  }

  // ---- start ------------------------------------------------------------------------

  if (key) start();
  else askForKey();
  // For the curious (and the tests): the id the page would resume the stream from.
  window.PT.controlRoom = { lastEventId: () => lastEventId };
})();
