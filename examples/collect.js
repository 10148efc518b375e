// clickflow browser snippet: page views and clicks to POST /v1/collect with navigator.sendBeacon.
//
//   <script src="/collect.js" data-endpoint="https://collect.example.com/v1/collect"
//           data-key="optional-write-key" defer></script>
//
// Events are batched (flushed every 2 s, at 20 events, and when the page is hidden or closed:
// sendBeacon survives unload). Each event carries an event_id, so a retried batch is counted once.
// sendBeacon sends text/plain, which needs no CORS preflight; the collector accepts any type.
(function () {
  var script = document.currentScript;
  var endpoint = (script && script.dataset.endpoint) || "/v1/collect";
  var key = script && script.dataset.key;
  var url = key ? endpoint + (endpoint.indexOf("?") < 0 ? "?" : "&") + "key=" + encodeURIComponent(key) : endpoint;

  function id() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    return Date.now().toString(36) + Math.random().toString(36).slice(2);
  }
  function stored(name, storage) {
    try {
      var value = storage.getItem(name);
      if (!value) { value = id(); storage.setItem(name, value); }
      return value;
    } catch (e) { return id(); } // storage blocked: an id per page
  }
  var user = stored("clickflow_user", localStorage);
  var session = stored("clickflow_session", sessionStorage);
  var params = new URLSearchParams(location.search);
  var queue = [];

  function track(event, extra) {
    var e = {
      user_id: user,
      session_id: session,
      event: event,
      event_id: id(),
      ts: Date.now(),
      page: location.pathname,
      referrer: document.referrer || undefined,
      user_agent: navigator.userAgent,
      utm_source: params.get("utm_source") || undefined,
      utm_medium: params.get("utm_medium") || undefined,
      utm_campaign: params.get("utm_campaign") || undefined
    };
    for (var k in extra) e[k] = extra[k];
    queue.push(e);
    if (queue.length >= 20) flush();
  }

  function flush() {
    if (!queue.length) return;
    var body = JSON.stringify(queue.splice(0, 20));
    var sent = navigator.sendBeacon && navigator.sendBeacon(url, body);
    if (!sent) fetch(url, { method: "POST", body: body, keepalive: true, mode: "cors" }).catch(function () {});
    if (queue.length) flush();
  }

  track("page_view");
  document.addEventListener("click", function (ev) {
    var target = ev.target.closest && ev.target.closest("a, button, [data-track]");
    if (!target) return;
    track("click", { props: { element: target.tagName.toLowerCase(), label: (target.dataset.track || target.textContent || "").trim().slice(0, 64) } });
  }, true);
  setInterval(flush, 2000);
  document.addEventListener("visibilitychange", function () { if (document.visibilityState === "hidden") flush(); });
  window.addEventListener("pagehide", flush);
  window.clickflow = { track: track, flush: flush };
})();
