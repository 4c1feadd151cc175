/* callbackd portal: the language menu, forms sent in the background, and the call
   page's live status from the session's events (EventSource on /call/ID/events, the
   daemon's Server-Sent Events). Plain JavaScript, no build step, no inline script. */
"use strict";

(function () {
  // The language menu sends itself when changed.
  document.querySelectorAll("select.autosubmit").forEach(function (select) {
    select.addEventListener("change", function () { select.form.submit(); });
  });

  var call = document.getElementById("call");
  if (!call) { return; }

  var KINDS = ["session_started", "leg_calling", "leg_ringing", "leg_answered", "leg_failed",
    "talking", "party_answered", "leg_ended", "destination_dropped", "session_ended",
    "credit_updated"];
  // a leg that ended without answering for one of these causes simply "ended"
  var PLAIN_ENDS = ["", "hung up", "ended by source", "not called", "kicked"];
  var words = JSON.parse(call.dataset.words);
  var roles = JSON.parse(call.dataset.roles);
  var notice = document.getElementById("notice");
  var costText = document.getElementById("cost");
  var legsBody = document.querySelector("#legs tbody");
  var decimals = parseInt(call.dataset.decimals, 10) || 2;
  var money = new Intl.NumberFormat(call.dataset.language || "en", {
    minimumFractionDigits: Math.min(2, decimals), maximumFractionDigits: decimals,
    useGrouping: false
  });
  // server clock - this clock, in seconds
  var skew = parseFloat(call.dataset.now) - Date.now() / 1000;
  var source = null;

  function formatMoney(minor) {
    var text = money.format(minor / Math.pow(10, decimals));
    return call.dataset.currency ? text + " " + call.dataset.currency : text;
  }

  // The status a leg is shown in (as callbackd.web.portal.live.leg_status says).
  function legStatus(state, cause, answered) {
    if (state === "up") { return "connected"; }
    if (state === "calling" || state === "ringing") { return state; }
    if (answered) { return "ended"; }
    if (cause === "busy") { return "busy"; }
    if (cause === "no answer") { return "no_answer"; }
    return PLAIN_ENDS.indexOf(cause) >= 0 ? "ended" : "failed";
  }

  function addressText(address) {
    return address.indexOf("phone:") === 0 ? address.slice(6) : address;
  }

  function newRow(name) {
    var row = document.createElement("tr");
    row.dataset.leg = name;
    row.dataset.seen = "";
    row.dataset.answered = "0";
    ["role", "address", "provider", "state", "rate", "action"].forEach(function (cls) {
      var td = document.createElement("td");
      td.className = cls;
      row.appendChild(td);
    });
    var status = document.createElement("span");
    var trail = document.createElement("small");
    status.className = "status";
    trail.className = "trail";
    row.querySelector(".state").appendChild(status);
    row.querySelector(".state").appendChild(trail);
    legsBody.appendChild(row);
    return row;
  }

  function dropForm(name) {
    var form = document.createElement("form");
    form.method = "post";
    form.action = call.dataset.drop;
    form.className = "js-post";
    [["csrf", call.dataset.csrf], ["leg", name]].forEach(function (pair) {
      var input = document.createElement("input");
      input.type = "hidden";
      input.name = pair[0];
      input.value = pair[1];
      form.appendChild(input);
    });
    var button = document.createElement("button");
    button.type = "submit";
    button.className = "drop";
    button.textContent = call.dataset.dropLabel;
    form.appendChild(button);
    sendInBackground(form);
    return form;
  }

  function rowOf(name) {
    return legsBody.querySelector('tr[data-leg="' + CSS.escape(name) + '"]') || newRow(name);
  }

  function showStatus(row, status) {
    var span = row.querySelector(".status");
    span.textContent = words[status] || status;
    span.className = "status status-" + status;
    var seen = row.dataset.seen ? row.dataset.seen.split(" ") : [];
    if (seen[seen.length - 1] !== status) { seen.push(status); }
    row.dataset.seen = seen.join(" ");
    row.dataset.status = status;
    row.querySelector(".trail").textContent = seen.length > 1 ? seen.join(" → ") : "";
    var action = row.querySelector(".action");
    var live = ["calling", "ringing", "connected"].indexOf(status) >= 0;
    if (row.dataset.role === "additional" && live) {
      if (!action.querySelector("form")) { action.appendChild(dropForm(row.dataset.leg)); }
    } else if (!live) {
      action.textContent = "";
    }
  }

  // One of the session's events: the leg it is about takes its new state.
  function onEvent(event) {
    if (!event.leg) { return; }
    var row = rowOf(event.leg);
    row.dataset.role = event.role;
    row.querySelector(".role").textContent = roles[event.role] || event.role;
    row.querySelector(".address").textContent = addressText(event.address);
    row.querySelector(".provider").textContent = event.provider;
    row.querySelector(".rate").textContent = formatMoney(event.rate);
    row.dataset.rate = event.rate;
    if (event.state === "up" && !parseFloat(row.dataset.answered)) {
      row.dataset.answered = String(event.at);
    }
    if (event.state === "ended" && !row.dataset.endedAt) {
      row.dataset.endedAt = String(event.at);
    }
    if (event.cost) { row.dataset.cost = event.cost; }
    showStatus(row, legStatus(event.state, event.cause, parseFloat(row.dataset.answered)));
  }

  // The running cost: each answered leg's price by the second, until it ended.
  function tick() {
    var now = Date.now() / 1000 + skew;
    var total = 0;
    legsBody.querySelectorAll("tr[data-leg]").forEach(function (row) {
      var answered = parseFloat(row.dataset.answered) || 0;
      if (row.dataset.cost) {
        total += parseInt(row.dataset.cost, 10);
      } else if (answered) {
        var until = parseFloat(row.dataset.endedAt) || now;
        total += Math.floor(parseInt(row.dataset.rate, 10) * Math.max(0, until - answered) / 60);
      }
    });
    costText.textContent = formatMoney(total);
  }

  function ended() {
    legsBody.querySelectorAll("tr[data-leg]").forEach(function (row) {
      var status = row.dataset.status;
      if (["calling", "ringing", "connected"].indexOf(status) >= 0) { showStatus(row, "ended"); }
    });
    document.getElementById("ended").hidden = false;
    call.dataset.ended = "yes";
    document.querySelectorAll("#commands button, #legs button").forEach(function (b) {
      b.disabled = true;
    });
    if (source) { source.close(); }
    tick();
  }

  function sendInBackground(form) {
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      fetch(form.action, {
        method: "POST", body: new URLSearchParams(new FormData(form)),
        credentials: "same-origin", headers: { "Accept": "application/json" }
      }).then(function (response) {
        return response.json();
      }).then(function (answer) {
        notice.textContent = answer.message;
        notice.className = "message " + (answer.ok ? "done" : "error");
        if (answer.ok && form.id === "add-form") { form.reset(); }
      }).catch(function () {
        form.submit();
      });
    });
  }

  document.querySelectorAll("form.js-post").forEach(sendInBackground);
  if (call.dataset.ended === "yes") { ended(); return; }
  source = new EventSource(call.dataset.events);
  KINDS.forEach(function (kind) {
    source.addEventListener(kind, function (message) {
      var event = JSON.parse(message.data);
      onEvent(event);
      if (kind === "session_ended") { ended(); }
    });
  });
  tick();
  window.setInterval(tick, 1000);
})();
