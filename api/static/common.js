// Helpers shared by the tracking page and the control room (no libraries, no build).
// Everything from the API is put into the page as text (textContent), never as HTML.
"use strict";

window.PT = (function () {
  // el("li", {class: "x", dataset: {id: 3}}, "text", childNode, ...)
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "dataset") Object.assign(node.dataset, value);
      else if (name === "text") node.textContent = String(value);
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const dateFormat = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "short", day: "numeric",
    hour: "2-digit", minute: "2-digit", second: "2-digit", timeZoneName: "short",
  });

  function when(iso) {
    if (!iso) return "unknown";
    const date = new Date(iso);
    return Number.isNaN(date.getTime()) ? String(iso) : dateFormat.format(date);
  }

  // "3 min ago" / "in 2 h": for a glance; the exact time goes in the title.
  function ago(iso, now) {
    if (!iso) return "never";
    const seconds = Math.round(((now || Date.now()) - new Date(iso).getTime()) / 1000);
    const abs = Math.abs(seconds);
    let text;
    if (abs < 60) text = abs + " s";
    else if (abs < 3600) text = Math.round(abs / 60) + " min";
    else if (abs < 86400) text = Math.round(abs / 3600) + " h";
    else text = Math.round(abs / 86400) + " d";
    return seconds >= 0 ? text + " ago" : "in " + text;
  }

  function timeEl(iso, relative) {
    return el("time", { datetime: iso || null, title: iso ? when(iso) : null },
      relative ? ago(iso) : when(iso));
  }

  // The API's reason: `detail` is a sentence, or FastAPI's list of field errors.
  function reason(body, fallback) {
    const detail = body && body.detail;
    if (typeof detail === "string" && detail) return detail;
    if (Array.isArray(detail) && detail.length) {
      return detail.map((d) => (d && d.msg) || JSON.stringify(d)).join("; ");
    }
    return fallback;
  }

  class ApiError extends Error {
    constructor(status, detail) {
      super(detail);
      this.status = status;
      this.detail = detail;
    }
  }

  // fetch + JSON; throws ApiError (status 0 when the API could not be reached).
  async function api(path, options) {
    let response;
    try {
      response = await fetch(path, options);
    } catch (error) {
      throw new ApiError(0, "cannot reach the parceltrack API (" + error.message + ")");
    }
    let body = null;
    try {
      body = await response.json();
    } catch (_ignored) {
      body = null; // not JSON (a proxy's error page): the status says enough
    }
    if (!response.ok) {
      const error = new ApiError(response.status, reason(body, "HTTP " + response.status));
      error.retryAfter = response.headers.get("Retry-After");
      throw error;
    }
    return body;
  }

  return { el, when, ago, timeEl, reason, api, ApiError };
})();
