/*
 * Small behaviours of the users' pages (no inline scripts: the pages' CSP forbids them).
 *
 * - Times: every <time data-time="abs"> is shown in the browser's time zone with its label
 *   (2026-11-27 16:48:23 EST); every <time data-time="rel"> ("12 s ago", "in 5 s") ticks, and a
 *   next run (data-interval) rolls on to the following slot when it passes.
 * - The dashboard's last and next runs stay current (a small JSON poll, [data-live-state]).
 * - A run page follows its run: Started, Finished, Duration, Node and the error, from the live
 *   log's run events (static/js/logview.js sends "jobscheduler:run").
 * - Unsaved edits are never lost silently: leaving the page asks first, and "Run now" with
 *   unsaved edits saves them, then runs (run_after_save).
 * - After an action, the message moves into the card it is about (it covers nothing there).
 */
(function () {
  "use strict";

  var FINISHED = ["succeeded", "failed", "timed_out", "cancelled", "lost"];

  function pad(n) { return n < 10 ? "0" + n : String(n); }

  /* The browser's short zone name for a date ("EST", "CET", "GMT+2"). */
  function zoneName(date) {
    try {
      var parts = new Intl.DateTimeFormat(undefined, { timeZoneName: "short" }).formatToParts(date);
      for (var i = 0; i < parts.length; i++) if (parts[i].type === "timeZoneName") return parts[i].value;
    } catch (err) { /* old browsers: no label rather than a wrong one */ }
    return "";
  }

  function absolute(date) {
    var text = date.getFullYear() + "-" + pad(date.getMonth() + 1) + "-" + pad(date.getDate()) + " " +
      pad(date.getHours()) + ":" + pad(date.getMinutes()) + ":" + pad(date.getSeconds());
    var zone = zoneName(date);
    return zone ? text + " " + zone : text;
  }

  function relative(date, now) {
    var delta = (date.getTime() - now) / 1000;
    var seconds = Math.abs(delta);
    if (seconds < 1) return "now";
    var text;
    if (seconds < 60) text = Math.floor(seconds) + " s";
    else if (seconds < 3600) text = Math.floor(seconds / 60) + " min";
    else if (seconds < 86400) text = Math.floor(seconds / 3600) + " h";
    else text = Math.floor(seconds / 86400) + " d";
    return delta > 0 ? "in " + text : text + " ago";
  }

  function refreshTimes(root) {
    var now = Date.now();
    Array.prototype.forEach.call((root || document).querySelectorAll("time[data-time]"), function (node) {
      var date = new Date(node.getAttribute("datetime"));
      if (isNaN(date.getTime())) return;
      var interval = Number(node.getAttribute("data-interval") || 0);
      if (interval > 0 && date.getTime() < now - 1000) {
        // A next run that passed: the schedule's following slot (slots are interval apart).
        var steps = Math.ceil((now - date.getTime()) / (interval * 1000));
        date = new Date(date.getTime() + steps * interval * 1000);
        node.setAttribute("datetime", date.toISOString());
      }
      var kind = node.getAttribute("data-time");
      if (kind === "abs") {
        node.textContent = absolute(date);
      } else {
        node.textContent = relative(date, now);
        node.title = absolute(date);
      }
    });
  }

  function timeNode(iso, kind) {
    var node = document.createElement("time");
    node.setAttribute("datetime", iso);
    node.setAttribute("data-time", kind);
    return node;
  }

  function durationText(startIso, endIso) {
    var seconds = (new Date(endIso) - new Date(startIso)) / 1000;
    if (seconds < 10) return seconds.toFixed(2) + " s";
    if (seconds < 60) return seconds.toFixed(1) + " s";
    var minutes = Math.floor(seconds / 60);
    if (minutes < 60) return minutes + " min " + Math.floor(seconds % 60) + " s";
    return Math.floor(minutes / 60) + " h " + (minutes % 60) + " min";
  }

  function statusText(status) { return String(status).replace("_", " "); }

  /* A "last run" cell: the status badge linking to the run, when it ended (ticking), its duration. */
  function fillRunCell(cell, run, url) {
    var shown = cell.querySelector("a[data-run-id]");
    if (shown && Number(shown.getAttribute("data-run-id")) > run.id) return;  // an older event
    cell.textContent = "";
    var badge = document.createElement("a");
    badge.className = "badge badge-" + run.status.replace("_", "-");
    badge.textContent = statusText(run.status);
    badge.href = url || "/runs/" + encodeURIComponent(run.id) + "/";
    badge.setAttribute("data-run-id", String(run.id));
    if (run.error) badge.title = run.error;
    cell.appendChild(badge);
    var when = run.finished_at || run.started_at || run.slot;
    if (when) {
      cell.appendChild(document.createTextNode(" "));
      cell.appendChild(timeNode(when, "rel"));
    }
    if (run.started_at && run.finished_at) {
      var span = document.createElement("span");
      span.className = "muted";
      span.textContent = " · " + durationText(run.started_at, run.finished_at);
      cell.appendChild(span);
    }
    refreshTimes(cell);
  }
  window.jobschedulerFillRunCell = fillRunCell;

  function fillNextRun(cell, iso, interval) {
    cell.textContent = "";
    if (!iso) {
      var none = document.createElement("span");
      none.className = "muted";
      none.textContent = cell.closest(".job-facts") ? "not scheduled" : "—";
      cell.appendChild(none);
      return;
    }
    var node = timeNode(iso, "rel");
    if (interval) node.setAttribute("data-interval", String(interval));
    cell.appendChild(node);
    refreshTimes(cell);
  }

  /* The dashboard: poll the jobs' state while the page is visible. */
  function pollState(holder) {
    var url = holder.getAttribute("data-live-state");
    function poll() {
      if (document.hidden) return;
      fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (response) { return response.ok ? response.json() : null; })
        .then(function (state) {
          if (!state) return;
          Object.keys(state.jobs).forEach(function (id) {
            var job = state.jobs[id];
            var last = document.querySelector('[data-last-run-for="' + Number(id) + '"]');
            if (last && job.last_run) fillRunCell(last, job.last_run, job.last_run.url);
            var next = document.querySelector('[data-next-run-for="' + Number(id) + '"]');
            if (next) fillNextRun(next, job.next_run, job.interval);
          });
        })
        .catch(function () { /* offline for a moment: the next poll tries again */ });
    }
    window.setInterval(poll, 5000);
    document.addEventListener("visibilitychange", function () { if (!document.hidden) poll(); });
  }

  /* A run page: the facts follow the run's live events (and, as a fallback for an end the
     stream missed, a poll of the run's state every 5 s until it has finished). */
  function followRun(facts) {
    var runId = Number(facts.getAttribute("data-run-facts"));
    var stateUrl = facts.getAttribute("data-run-state");
    var finished = !stateUrl;
    if (stateUrl) {
      var timer = window.setInterval(function () {
        if (finished) { window.clearInterval(timer); return; }
        fetch(stateUrl, { credentials: "same-origin", headers: { Accept: "application/json" } })
          .then(function (response) { return response.ok ? response.json() : null; })
          .then(function (state) {
            if (state && state.run && FINISHED.indexOf(state.run.status) !== -1 && !finished) {
              (window.jobschedulerLogViews || []).forEach(function (view) { view.updateRun(state.run); });
            }
          })
          .catch(function () { /* the next poll tries again */ });
      }, 5000);
    }
    document.addEventListener("jobscheduler:run", function (event) {
      var run = event.detail;
      if (!run || run.id !== runId) return;
      if (FINISHED.indexOf(run.status) !== -1) finished = true;
      var badge = document.querySelector("[data-run-status]");
      if (badge) {
        badge.textContent = statusText(run.status);
        badge.className = "badge badge-" + run.status.replace("_", "-");
      }
      ["started_at", "finished_at"].forEach(function (name) {
        var cell = facts.querySelector('[data-run-field="' + name + '"]');
        if (cell && run[name]) {
          cell.textContent = "";
          cell.appendChild(timeNode(run[name], "abs"));
        }
      });
      var duration = facts.querySelector('[data-run-field="duration"]');
      if (duration && run.started_at && run.finished_at) duration.textContent = durationText(run.started_at, run.finished_at);
      var node = facts.querySelector('[data-run-field="node"]');
      if (node && run.node) node.textContent = run.node;
      var errorCard = document.querySelector("[data-run-error][hidden]");
      if (errorCard && run.error) {
        errorCard.querySelector('[data-run-field="error"]').textContent = run.error;
        errorCard.hidden = false;
      }
      refreshTimes(facts);
    });
  }

  /* Unsaved edits: remember which job forms were changed since the page loaded. */
  var dirty = new Set();
  var leaving = false;

  function trackForm(form) {
    var id = form.getAttribute("data-job-form") || form.getAttribute("action");
    function mark() {
      dirty.add(id);
      var note = form.querySelector("[data-unsaved-note]");
      if (note) note.hidden = false;
    }
    form.addEventListener("input", mark);
    form.addEventListener("change", function (event) {
      // the Clear boxes of secrets and every input count; React's own re-renders fire no events
      if (event.isTrusted) mark();
    });
    form.addEventListener("submit", function () { leaving = true; });
  }

  function guardRunNow(form) {
    var jobId = form.getAttribute("data-run-now");
    form.addEventListener("submit", function (event) {
      var saveForm = document.querySelector('form[data-job-form="' + jobId + '"]');
      if (!saveForm || !dirty.has(jobId)) { leaving = true; return; }
      // Run what the user sees: save the edits first; the server runs the job once saved.
      event.preventDefault();
      var flag = document.createElement("input");
      flag.type = "hidden";
      flag.name = "run_after_save";
      flag.value = "1";
      saveForm.appendChild(flag);
      leaving = true;
      saveForm.requestSubmit ? saveForm.requestSubmit() : saveForm.submit();
    });
  }

  window.addEventListener("beforeunload", function (event) {
    if (leaving || dirty.size === 0) return undefined;
    event.preventDefault();
    event.returnValue = "";  // the browser shows its own "leave site? changes may not be saved"
    return "";
  });

  /* A link to #job-<id> (after save, clone, activate...) opens that configuration's settings,
     and the message about it moves into its card, where it covers nothing. */
  function openTarget(moveMessages) {
    var id = decodeURIComponent(window.location.hash.slice(1));
    if (!id) return;
    var card = document.getElementById(id);
    if (!card) return;
    var details = card.querySelector("details.job-config");
    if (details && !details.open) details.open = true;
    var list = document.querySelector(".page > .messages");
    if (moveMessages && list && card.classList.contains("job-card")) {
      card.insertBefore(list, card.firstChild);
      list.classList.add("in-card");
    }
    card.scrollIntoView();
  }

  function init() {
    refreshTimes(document);
    window.setInterval(function () { refreshTimes(document); }, 1000);
    var zone = "";
    try { zone = Intl.DateTimeFormat().resolvedOptions().timeZone || ""; } catch (err) { zone = ""; }
    Array.prototype.forEach.call(document.querySelectorAll("[data-zone-label]"), function (node) {
      var short = zoneName(new Date());
      node.textContent = "times in " + (zone || short) + (zone && short && short !== zone ? " (" + short + ")" : "");
    });
    var holder = document.querySelector("[data-live-state]");
    if (holder) pollState(holder);
    var facts = document.querySelector("[data-run-facts]");
    if (facts) followRun(facts);
    Array.prototype.forEach.call(document.querySelectorAll("form[data-job-form]"), trackForm);
    Array.prototype.forEach.call(document.querySelectorAll("form[data-run-now]"), guardRunNow);
    Array.prototype.forEach.call(document.querySelectorAll("form"), function (form) {
      if (!form.hasAttribute("data-job-form") && !form.hasAttribute("data-run-now")) {
        // Activate, Clone, Delete...: a real navigation, so unsaved edits ask first (beforeunload).
        form.addEventListener("submit", function () { if (dirty.size === 0) leaving = true; });
      }
    });
    openTarget(true);
  }

  window.jobschedulerTimes = { refresh: refreshTimes, absolute: absolute };
  window.addEventListener("hashchange", function () { openTarget(false); });
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
