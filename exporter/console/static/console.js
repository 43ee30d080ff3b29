// Live progress on a run page: polls the run's progress.json and updates the numbers; when
// the run has finished, reloads the page to show its report. No other script on any page.
(function () {
  "use strict";
  var section = document.getElementById("progress");
  if (!section) { return; }
  var url = section.getAttribute("data-url");
  function show(id, value) {
    var el = document.getElementById(id);
    if (el) { el.textContent = value === null || value === undefined ? "…" : String(value); }
  }
  function seconds(s) {
    if (s === null || s === undefined) { return null; }
    return s >= 90 ? Math.round(s / 60) + " min" : s + " s";
  }
  function poll() {
    fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) { return r.ok ? r.json() : Promise.reject(r.status); })
      .then(function (p) {
        show("p-status", p.cancel_requested && !p.finished ? "cancelling" : p.status);
        show("p-phase", p.phase);
        show("p-rows", p.rows_read);
        show("p-sent", p.sent);
        show("p-confirmed", p.confirmed);
        show("p-total", p.total);
        show("p-rate", p.rate_per_second === null ? null : p.rate_per_second + " contacts/s");
        show("p-left", seconds(p.seconds_left));
        var u = p.usage;
        show("p-usage", u ? u.requests_per_second + " of " + u.requests_limit + " requests/s, " +
          u.bulk_last_minute + " of " + u.bulk_limit + " bulk imports in the last minute" : null);
        var bar = document.getElementById("p-bar");
        if (bar && p.total) { bar.max = p.total; bar.value = p.confirmed; }
        if (p.finished) { window.location.reload(); return; }
        window.setTimeout(poll, 700);
      })
      .catch(function () { window.setTimeout(poll, 2000); });
  }
  window.setTimeout(poll, 300);
})();
