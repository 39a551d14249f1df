// Keeps a dashboard page current without reloading it.
//
// The element marked data-live is re-rendered by the server: the same URL,
// asked with the X-Dashboard-Fragment header, answers with that part only,
// so there is one template and the page works the same with scripts off.
(function () {
  "use strict";

  var live = document.querySelector("[data-live]");
  if (!live) {
    return;
  }
  var period = Math.max(1000, Number(live.getAttribute("data-refresh-ms")) || 5000);
  var status = document.getElementById("live-status");
  var timer = 0;
  var busy = false;

  function say(text, state) {
    if (status) {
      status.textContent = text;
      status.setAttribute("data-state", state);
    }
  }

  function schedule() {
    window.clearTimeout(timer);
    timer = window.setTimeout(refresh, period);
  }

  // The live part says what the page's title and status line should be.
  function adopt() {
    var root = live.querySelector("[data-title]");
    if (root) {
      document.title = root.getAttribute("data-title") + " · Task notification service";
      say(root.getAttribute("data-status-text"), root.getAttribute("data-status-state"));
    }
  }

  function show(response) {
    // The server marks a live part it rendered, whatever the status: a 503
    // one, for instance, says that the database is away.
    if (response.headers.get("X-Dashboard-Fragment")) {
      return response.text().then(function (html) {
        live.innerHTML = html;
        adopt();
      });
    }
    if (response.status === 401) {
      say("Signed out: reload to sign in", "error");
    } else {
      say("Refresh failed (HTTP " + response.status + "), retrying", "warn");
    }
    return null;
  }

  function refresh() {
    // A hidden tab asks for nothing; it refreshes as soon as it is shown again.
    if (busy || document.hidden) {
      return;
    }
    busy = true;
    fetch(window.location.pathname + window.location.search, {
      headers: { "X-Dashboard-Fragment": "live" },
      credentials: "same-origin",
      cache: "no-store",
      redirect: "error"
    }).then(show).catch(function () {
      say("Cannot reach the service, retrying", "warn");
    }).then(function () {
      busy = false;
      schedule();
    });
  }

  document.addEventListener("visibilitychange", function () {
    if (!document.hidden) {
      refresh();
    }
  });
  // The page's own "updated" line is for readers without scripts.
  document.documentElement.classList.add("js");
  adopt();
  schedule();
})();
