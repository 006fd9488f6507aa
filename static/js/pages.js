/* Small behaviours of the users' pages (no inline scripts: the pages' CSP forbids them). */
(function () {
  "use strict";

  /* A link to #job-<id> (after save, clone, activate...) opens that configuration's settings. */
  function openTarget() {
    var id = decodeURIComponent(window.location.hash.slice(1));
    if (!id) return;
    var card = document.getElementById(id);
    if (!card) return;
    var details = card.querySelector("details.job-config");
    if (details && !details.open) {
      details.open = true;
      card.scrollIntoView();
    }
  }

  window.addEventListener("hashchange", openTarget);
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", openTarget);
  else openTarget();
})();
