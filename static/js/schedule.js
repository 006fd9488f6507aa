/* The schedule preview of the job forms: as the user types a schedule, time zone or jitter, ask
   the server (the same validation as on save) for the schedule in words and its next five runs.
   No inline scripts (the pages' CSP forbids them); all text goes in with textContent. */
(function () {
  "use strict";

  var DELAY_MS = 250;

  function setup(fieldset) {
    var url = fieldset.getAttribute("data-schedule-preview-url");
    var words = fieldset.querySelector("[data-schedule-words]");
    var error = fieldset.querySelector("[data-schedule-error]");
    var list = fieldset.querySelector("[data-schedule-next]");
    var approx = fieldset.querySelector("[data-schedule-approx]");
    var inputs = {};
    fieldset.querySelectorAll("[data-schedule]").forEach(function (input) {
      inputs[input.getAttribute("data-schedule")] = input;
    });
    if (!inputs.schedule || inputs.schedule.disabled) return;
    var timer = null;
    var latest = 0;

    function show(data, ok) {
      while (list.firstChild) list.removeChild(list.firstChild);
      if (ok) {
        words.textContent = data.description;
        error.hidden = true;
        error.textContent = "";
        data.next_runs.forEach(function (run) {
          var li = document.createElement("li");
          var time = document.createElement("time");
          time.setAttribute("datetime", run.iso);
          time.textContent = run.display;
          li.appendChild(time);
          list.appendChild(li);
        });
        approx.hidden = !data.approximate;
      } else {
        words.textContent = "";
        var errors = (data && data.errors) || { schedule: "The preview is not available right now." };
        error.textContent = Object.keys(errors).map(function (k) { return errors[k]; }).join(" ");
        error.hidden = false;
        approx.hidden = true;
      }
      fieldset.setAttribute("data-preview-state", ok ? "ok" : "error");
    }

    function refresh() {
      var params = new URLSearchParams();
      params.set("plugin", fieldset.getAttribute("data-plugin"));
      if (fieldset.getAttribute("data-job")) params.set("job", fieldset.getAttribute("data-job"));
      ["schedule", "timezone", "jitter_seconds"].forEach(function (name) {
        if (inputs[name]) params.set(name, inputs[name].value);
      });
      var ticket = ++latest;
      fieldset.setAttribute("data-preview-state", "loading");
      fetch(url + "?" + params.toString(), { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (response) {
          return response.json().then(function (data) { return { ok: response.ok, data: data }; });
        })
        .then(function (result) { if (ticket === latest) show(result.data, result.ok); })
        .catch(function () { if (ticket === latest) show(null, false); });
    }

    Object.keys(inputs).forEach(function (name) {
      inputs[name].addEventListener("input", function () {
        clearTimeout(timer);
        timer = setTimeout(refresh, DELAY_MS);
      });
    });
  }

  function init() { document.querySelectorAll("[data-schedule-preview-url]").forEach(setup); }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
