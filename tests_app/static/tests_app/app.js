/* Live updates of a test page over its websocket (ws/tests/<id>/).
 *
 * The page works without this script: it only appends step events as they arrive and refreshes
 * the live part of the page (a server-rendered fragment) when something else changes. Events
 * carry a per-test seq; a gap (missed events) or a reconnect re-fetches the fragment, because the
 * database, not the event stream, is the truth. The snapshot sent on (re)connect says which seq the
 * database reflects; a page rendered before that is refreshed.
 */
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!live || !window.WebSocket) { return; }

  var lastSeq = parseInt(live.dataset.lastSeq || "0", 10) || 0;
  var shownInvocation = live.dataset.invocationId || "";
  var indicator = document.getElementById("live-indicator");
  var refreshTimer = null;
  var refreshing = false;
  var retryDelay = 1000;

  function refresh() {
    // Debounced: a burst of events costs one request.
    if (refreshTimer) { clearTimeout(refreshTimer); }
    refreshTimer = setTimeout(doRefresh, 150);
  }

  function doRefresh() {
    refreshTimer = null;
    if (refreshing) { refresh(); return; }
    refreshing = true;
    var focusedId = document.activeElement && live.contains(document.activeElement) ? document.activeElement.id : null;
    fetch(live.dataset.fragmentUrl, { credentials: "same-origin", headers: { "X-Requested-With": "fetch" } })
      .then(function (response) {
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.text();
      })
      .then(function (html) {
        live.innerHTML = html;
        var seqMarker = document.getElementById("live-seq");
        if (seqMarker) {
          lastSeq = Math.max(lastSeq, parseInt(seqMarker.dataset.seq || "0", 10) || 0);
          // Without ?invocation= the page follows the newest invocation, which may have changed.
          shownInvocation = seqMarker.dataset.invocationId || shownInvocation;
        }
        if (focusedId && document.getElementById(focusedId)) { document.getElementById(focusedId).focus(); }
        live.dispatchEvent(new CustomEvent("live:refreshed"));
      })
      .catch(function () { /* the next event or reconnect tries again */ })
      .then(function () { refreshing = false; });
  }

  function appendStep(event) {
    var turns = document.getElementById("turns");
    if (!turns || turns.querySelector('[data-turn="' + event.turn + '"]')) { return; }
    var empty = document.getElementById("no-turns");
    if (empty) { empty.remove(); }
    var item = document.createElement("li");
    item.className = "turn live-new";
    item.dataset.turn = String(event.turn);
    var heading = document.createElement("h3");
    heading.textContent = "Turn " + event.turn + (event.total_turns ? " of " + event.total_turns : "");
    var label = document.createElement("span");
    label.className = "turn-label";
    label.textContent = "Model output";
    var text = document.createElement("p");
    text.className = "text output";
    text.textContent = event.output || "";
    item.appendChild(heading);
    item.appendChild(label);
    item.appendChild(text);
    turns.appendChild(item);
    // A count on the (never replaced) live container, for people and tests to see events arrive.
    live.dataset.stepsReceived = String((parseInt(live.dataset.stepsReceived || "0", 10) || 0) + 1);
    var progress = document.getElementById("turn-progress");
    if (progress && event.total_turns) { progress.textContent = "· turn " + event.turn + " of " + event.total_turns; }
    setStatus("invocation-status", "running");
  }

  function setStatus(id, status) {
    var element = document.getElementById(id);
    if (!element || !status) { return; }
    element.textContent = status;
    element.className = "status status-" + status;
  }

  function handle(event) {
    if (event.type === "snapshot") {
      // The snapshot's seq is the last event the database already reflects: anything newer than
      // what this page was rendered with means the page is behind.
      if (typeof event.seq === "number" && event.seq > lastSeq) { lastSeq = event.seq; refresh(); }
      return;
    }
    var seq = typeof event.seq === "number" ? event.seq : null;
    if (seq !== null) {
      if (seq <= lastSeq) { return; }  // already in the page as rendered
      var gap = seq > lastSeq + 1;
      lastSeq = seq;
      if (gap) { refresh(); }
    }
    var mine = event.invocation_id && event.invocation_id === shownInvocation;
    if (event.type === "run.step") {
      if (mine) { appendStep(event); }
      return;
    }
    if (event.type === "run.started" && mine) { setStatus("invocation-status", "running"); return; }
    if (event.type === "test.completed" || event.type === "test.stopped") {
      setStatus("test-status", event.type === "test.completed" ? "completed" : "stopped");
    }
    refresh();
  }

  function connect() {
    var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    var socket = new WebSocket(scheme + window.location.host + live.dataset.websocketPath);
    socket.onopen = function () {
      retryDelay = 1000;
      if (indicator) { indicator.hidden = false; }
    };
    socket.onmessage = function (message) {
      try { handle(JSON.parse(message.data)); } catch (error) { /* ignore malformed */ }
    };
    socket.onclose = function () {
      if (indicator) { indicator.hidden = true; }
      setTimeout(connect, retryDelay);
      retryDelay = Math.min(retryDelay * 2, 30000);
    };
  }

  connect();
}());

/* A control that asks first (data-confirm-with="<dialog id>") opens its dialog instead of going to
 * its confirmation page; the dialog's own form does the POST. Delegated, because the live part of
 * the page is replaced when it refreshes. */
(function () {
  "use strict";
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var dialogId = form && form.dataset ? form.dataset.confirmWith : null;
    var dialog = dialogId ? document.getElementById(dialogId) : null;
    if (!dialog || typeof dialog.showModal !== "function") { return; }
    event.preventDefault();
    dialog.showModal();
  });
}());
