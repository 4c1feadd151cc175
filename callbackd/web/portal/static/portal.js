/* callbackd portal: the language menu, forms sent in the background, and the call
   page's live status (EventSource). Plain JavaScript, no build step, no inline script. */
"use strict";

(function () {
  // The language menu sends itself when changed.
  document.querySelectorAll("select.autosubmit").forEach(function (select) {
    select.addEventListener("change", function () { select.form.submit(); });
  });

  var call = document.getElementById("call");
  if (!call) { return; }

  var notice = document.getElementById("notice");
  var costText = document.getElementById("cost");
  var legsBody = document.querySelector("#legs tbody");
  var decimals = parseInt(call.dataset.decimals, 10) || 2;
  var language = call.dataset.language || "en";
  var money = new Intl.NumberFormat(language, {
    minimumFractionDigits: Math.min(2, decimals), maximumFractionDigits: decimals,
    useGrouping: false
  });
  var last = null;      // the last view the server sent
  var skew = 0;         // server clock - this clock, seconds
  var source = null;

  function formatMoney(minor) {
    var text = money.format(minor / Math.pow(10, decimals));
    return call.dataset.currency ? text + " " + call.dataset.currency : text;
  }

  function cell(row, name) { return row.querySelector("." + name); }

  function newRow(leg) {
    var row = document.createElement("tr");
    row.dataset.leg = leg.leg;
    row.dataset.seen = "";
    ["role", "address", "provider", "state", "rate", "action"].forEach(function (name) {
      var td = document.createElement("td");
      td.className = name;
      row.appendChild(td);
    });
    var status = document.createElement("span");
    var trail = document.createElement("small");
    trail.className = "trail";
    status.className = "status";
    row.querySelector(".state").appendChild(status);
    row.querySelector(".state").appendChild(trail);
    legsBody.appendChild(row);
    return row;
  }

  function dropForm(leg) {
    var form = document.createElement("form");
    form.method = "post";
    form.action = call.dataset.drop;
    form.className = "js-post";
    [["csrf", call.dataset.csrf], ["leg", leg.leg]].forEach(function (pair) {
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

  function showLeg(leg) {
    var row = legsBody.querySelector('tr[data-leg="' + CSS.escape(leg.leg) + '"]') || newRow(leg);
    cell(row, "role").textContent = leg.role_text;
    cell(row, "address").textContent = leg.address;
    cell(row, "provider").textContent = leg.provider;
    cell(row, "rate").textContent = leg.rate_text;
    var status = row.querySelector(".status");
    status.textContent = leg.status_text;
    status.className = "status status-" + leg.status;
    var seen = row.dataset.seen ? row.dataset.seen.split(" ") : [];
    if (seen[seen.length - 1] !== leg.status) { seen.push(leg.status); }
    row.dataset.seen = seen.join(" ");
    row.dataset.status = leg.status;
    row.dataset.rate = leg.rate;
    row.dataset.answered = leg.answered_at;
    row.querySelector(".trail").textContent = seen.length > 1 ? seen.join(" → ") : "";
    var action = row.querySelector(".action") || row.lastElementChild;
    if (leg.additional && leg.live) {
      if (!action.querySelector("form")) { action.appendChild(dropForm(leg)); }
    } else {
      action.textContent = "";
    }
  }

  function tick() {
    if (!last || last.ended) { return; }
    var now = Date.now() / 1000 + skew;
    var total = 0;
    last.legs.forEach(function (leg) {
      if (leg.status === "connected" && leg.answered_at) {
        total += Math.floor(leg.rate * Math.max(0, now - leg.answered_at) / 60);
      } else {
        total += leg.cost;
      }
    });
    costText.textContent = formatMoney(total);
  }

  function ended() {
    document.getElementById("ended").hidden = false;
    call.dataset.ended = "yes";
    document.querySelectorAll("#commands button, #legs button").forEach(function (b) {
      b.disabled = true;
    });
    if (source) { source.close(); }
  }

  function show(view) {
    last = view;
    skew = view.now - Date.now() / 1000;
    view.legs.forEach(showLeg);
    costText.textContent = view.cost_text;
    if (view.text) { document.getElementById("progress").textContent = view.text; }
    if (view.ended) { ended(); }
  }

  function sendInBackground(form) {
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var body = new URLSearchParams(new FormData(form));
      fetch(form.action, {
        method: "POST", body: body, credentials: "same-origin",
        headers: { "Accept": "application/json" }
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
  source.addEventListener("status", function (event) { show(JSON.parse(event.data)); });
  window.setInterval(tick, 1000);
})();
