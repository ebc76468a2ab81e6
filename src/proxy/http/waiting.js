(function () {
  var progress = document.getElementById("idlegate-progress");
  var waited = document.getElementById("idlegate-waited");
  var expected = document.getElementById("idlegate-expected");
  var bar = document.getElementById("idlegate-bar");
  var expectedMs = expected ? Number(expected.getAttribute("data-expected-ms")) || 0 : 0;
  var since = Date.now() - (waited ? Number(waited.textContent) || 0 : 0) * 1000;
  var reload = function () { location.reload(); };
  // The bar fills towards the usual start time, never quite to the end.
  var fill = function () {
    if (!bar || !expectedMs) return;
    bar.hidden = false;
    bar.value = Math.min((Date.now() - since) / expectedMs, 0.99);
  };
  fill();
  setInterval(fill, 200);
  if (!window.EventSource) { setTimeout(reload, RELOAD_SECS * 1000); return; }
  var events = new EventSource("EVENTS_PATH");
  var show = function (e) {
    var d = JSON.parse(e.data);
    if (progress) progress.textContent = d.progress;
    if (waited) waited.textContent = d.waited;
    if (d.waited_ms !== undefined) since = Date.now() - d.waited_ms;
    if (d.expected_ms) {
      expectedMs = d.expected_ms;
      if (expected) expected.textContent = d.expected;
      fill();
    }
    document.title = d.progress + " (" + d.waited + " s)";
  };
  events.addEventListener("progress", show);
  events.addEventListener("ready", function () { events.close(); reload(); });
  events.addEventListener("failed", function (e) { events.close(); show(e); });
  // Closed for good (the backend, ready by now, answered the path): reload.
  events.onerror = function () {
    if (events.readyState === 2) setTimeout(reload, RELOAD_SECS * 1000);
  };
})();
