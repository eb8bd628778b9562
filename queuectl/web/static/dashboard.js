// queuectl web: the only script (no framework, no build step; the CSP forbids inline
// scripts, so everything lives here).
//
// 1. Live refresh: an element with data-live-url is replaced every data-live-seconds
//    by the HTML fragment at that URL; polling stops while the tab is hidden
//    (visibilitychange) and starts again, at once, when it is shown.
// 2. Forms with data-confirm ask before submitting (bulk and destructive actions).
"use strict";

(function () {
  function startLive(box) {
    var url = box.getAttribute("data-live-url");
    var seconds = parseFloat(box.getAttribute("data-live-seconds")) || 5;
    var status = document.getElementById("live-status");
    var timer = null;
    var inFlight = false;

    function say(text) { if (status) { status.textContent = text; } }

    function schedule() {
      clearTimeout(timer);
      timer = document.hidden ? null : setTimeout(refresh, seconds * 1000);
    }

    function refresh() {
      if (document.hidden || inFlight) { return; }
      inFlight = true;
      fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (response) {
          if (response.redirected || response.status === 401) {
            window.location.reload();  // the session ended: the login form
            throw new Error("logged out");
          }
          if (!response.ok) { throw new Error("HTTP " + response.status); }
          return response.text();
        })
        .then(function (html) {
          box.innerHTML = html;  // our own escaped fragment, same origin
          // UTC, 24-hour, as every other time on the pages (not the browser's locale).
          say("updated " + new Date().toISOString().slice(11, 19) + " UTC, every " + seconds + "s");
        })
        .catch(function (err) { say("refresh failed (" + err.message + "), retrying"); })
        .then(function () { inFlight = false; schedule(); });
    }

    document.addEventListener("visibilitychange", function () {
      if (document.hidden) {
        clearTimeout(timer);
        timer = null;
        say("paused while the tab is hidden");
      } else {
        refresh();
      }
    });
    schedule();
  }

  function confirmForms() {
    document.addEventListener("submit", function (event) {
      var question = event.target.getAttribute && event.target.getAttribute("data-confirm");
      if (question && !window.confirm(question)) { event.preventDefault(); }
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var boxes = document.querySelectorAll("[data-live-url]");
    for (var i = 0; i < boxes.length; i++) { startLive(boxes[i]); }
    confirmForms();
  });
})();
