// flask_geneva status UI: small conveniences only; every page works without this file.
// - "Copy" buttons put an operator command on the clipboard.
// - Relative times ("3 min ago") stay current while the page is open.
// - "Auto-refresh" reloads the page every 10 seconds (remembered in localStorage).
// - "/" focuses the search box.
(function () {
  "use strict";

  var REFRESH_MS = 10000;
  var STORAGE_KEY = "geneva.autorefresh";
  var UNITS = [
    [365 * 86400, "y"], [30 * 86400, "mo"], [86400, "d"], [3600, "h"], [60, "min"], [1, "s"]
  ];

  function span(seconds) {
    seconds = Math.abs(seconds);
    for (var i = 0; i < UNITS.length; i++) {
      if (seconds >= UNITS[i][0]) return Math.floor(seconds / UNITS[i][0]) + " " + UNITS[i][1];
    }
    return "0 s";
  }

  function relative(date) {
    var seconds = (Date.now() - date.getTime()) / 1000;
    if (Math.abs(seconds) < 1) return "just now";
    return seconds > 0 ? span(seconds) + " ago" : "in " + span(seconds);
  }

  function refreshTimes() {
    var nodes = document.querySelectorAll("time[data-rel]");
    for (var i = 0; i < nodes.length; i++) {
      var date = new Date(nodes[i].getAttribute("datetime"));
      if (!isNaN(date.getTime())) nodes[i].textContent = relative(date);
    }
  }

  function copyText(text, button) {
    function done() {
      button.classList.add("copied");
      button.textContent = "Copied";
      setTimeout(function () {
        button.classList.remove("copied");
        button.textContent = "Copy";
      }, 1500);
    }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, function () { fallbackCopy(text, done); });
    } else {
      fallbackCopy(text, done);
    }
  }

  function fallbackCopy(text, done) {
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "copy-buffer";
    document.body.appendChild(area);
    area.select();
    try {
      if (document.execCommand("copy")) done();
    } finally {
      document.body.removeChild(area);
    }
  }

  function setupAutoRefresh() {
    var button = document.querySelector("[data-autorefresh]");
    if (!button) return;
    var timer = null;
    function apply(on) {
      button.setAttribute("aria-pressed", on ? "true" : "false");
      button.textContent = on ? "Auto-refresh: on" : "Auto-refresh";
      if (timer) clearTimeout(timer);
      timer = on ? setTimeout(function () { window.location.reload(); }, REFRESH_MS) : null;
    }
    var stored = false;
    try { stored = window.localStorage.getItem(STORAGE_KEY) === "1"; } catch (e) { /* private mode */ }
    apply(stored);
    button.addEventListener("click", function () {
      var on = button.getAttribute("aria-pressed") !== "true";
      try { window.localStorage.setItem(STORAGE_KEY, on ? "1" : "0"); } catch (e) { /* ignore */ }
      apply(on);
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.addEventListener("click", function (event) {
      var target = event.target;
      if (target && target.matches && target.matches("button[data-copy]")) {
        copyText(target.getAttribute("data-copy"), target);
      }
    });
    document.addEventListener("keydown", function (event) {
      if (event.key !== "/" || event.ctrlKey || event.metaKey || event.altKey) return;
      var active = document.activeElement;
      if (active && /^(INPUT|SELECT|TEXTAREA)$/.test(active.tagName)) return;
      var box = document.querySelector(".search input");
      if (box) { event.preventDefault(); box.focus(); }
    });
    setupAutoRefresh();
    refreshTimes();
    setInterval(refreshTimes, 15000);
  });
})();
