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

  // What the API put in the page: its language, the texts of the scripts (English
  // message -> translation) and each site's time zone (api/page_texts.py).
  const config = (function () {
    const block = document.getElementById("page-config");
    try {
      return JSON.parse((block && block.textContent) || "{}");
    } catch (_ignored) {
      return {};
    }
  })();
  const lang = config.lang || document.documentElement.lang || "en";
  const messages = config.messages || {};
  const zones = config.zones || {};
  // Dates read day first in English (28 Nov 2026), year first in Chinese.
  const dateLocale = lang === "en" ? "en-GB" : lang;

  // A message in the page's language, then its {fields} filled from `values`; calls of
  // `_` with a string literal are what Babel's JavaScript extractor collects.
  function _(message, values) {
    const text = messages[message] || message;
    if (!values) return text;
    return text.replace(/\{(\w+)\}/g, (whole, name) =>
      Object.prototype.hasOwnProperty.call(values, name) ? String(values[name]) : whole);
  }

  // The zone a site's times are shown in: its own, else UTC (named, so never ambiguous).
  function zoneOf(site) {
    return (site && zones[site]) || "UTC";
  }

  const formats = new Map();
  function dateFormat(zone) {
    if (!formats.has(zone)) {
      let format;
      try {
        format = new Intl.DateTimeFormat(dateLocale, {
          year: "numeric", month: "short", day: "numeric",
          hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23",
          timeZone: zone, timeZoneName: "long",
        });
      } catch (_error) { // a zone this browser does not know: UTC, named
        format = dateFormat("UTC");
      }
      formats.set(zone, format);
    }
    return formats.get(zone);
  }

  // A time in the site's zone, with the zone named in the page's language.
  function when(iso, site) {
    if (!iso) return _("unknown");
    const date = new Date(iso);
    return Number.isNaN(date.getTime()) ? String(iso) : dateFormat(zoneOf(site)).format(date);
  }

  const relative = new Intl.RelativeTimeFormat(dateLocale, { numeric: "always", style: "short" });

  // "3 min ago" / "in 2 hr": for a glance; the exact time goes in the title.
  function ago(iso, now) {
    if (!iso) return _("never");
    const seconds = Math.round(((now || Date.now()) - new Date(iso).getTime()) / 1000);
    const abs = Math.abs(seconds);
    const sign = seconds >= 0 ? -1 : 1;
    if (abs < 60) return relative.format(sign * abs, "second");
    if (abs < 3600) return relative.format(sign * Math.round(abs / 60), "minute");
    if (abs < 86400) return relative.format(sign * Math.round(abs / 3600), "hour");
    return relative.format(sign * Math.round(abs / 86400), "day");
  }

  function timeEl(iso, relativeTime, site) {
    return el("time", { datetime: iso || null, title: iso ? when(iso, site) : null },
      relativeTime ? ago(iso) : when(iso, site));
  }

  // The language links keep the rest of the address (a tracking number, say).
  for (const link of document.querySelectorAll("[data-languages] a[data-lang]")) {
    const url = new URL(window.location.href);
    url.searchParams.set("lang", link.dataset.lang);
    link.href = url.pathname + url.search + url.hash;
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
    // The API says its errors in the page's language.
    const asked = Object.assign({}, options || {});
    asked.headers = Object.assign({ "Accept-Language": lang }, asked.headers || {});
    try {
      response = await fetch(path, asked);
    } catch (error) {
      throw new ApiError(0, _("cannot reach the parceltrack API ({reason})", { reason: error.message }));
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

  return { el, when, ago, timeEl, reason, api, ApiError, _, lang, zoneOf };
})();
