(function () {
  var progress = document.getElementById("idlegate-progress");
  var waited = document.getElementById("idlegate-waited");
  var reload = function () { location.reload(); };
  if (!window.EventSource) { setTimeout(reload, RELOAD_SECS * 1000); return; }
  var events = new EventSource("EVENTS_PATH");
  var show = function (e) {
    var d = JSON.parse(e.data);
    if (progress) progress.textContent = d.progress;
    if (waited) waited.textContent = d.waited;
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
