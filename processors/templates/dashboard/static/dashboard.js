// Progressive enhancement only: every page works without this file.
// 1. Activity: new decisions arrive over server-sent events, rendered (and escaped) by
//    the server; this adds the rows on top. 2. Forms with data-confirm ask first.
"use strict";
(function () {
  var feed = document.getElementById("feed");
  if (feed && window.EventSource) {
    var source = new EventSource(feed.dataset.stream);
    var live = document.getElementById("live");
    source.addEventListener("open", function () { if (live) live.hidden = false; });
    source.addEventListener("error", function () { if (live) live.hidden = true; });
    source.addEventListener("decision", function (event) {
      var holder = document.createElement("tbody");
      holder.innerHTML = event.data;
      var row = holder.firstElementChild;
      if (!row || document.getElementById(row.id)) return;  // already shown
      row.classList.add("new");
      feed.insertBefore(row, feed.firstChild);
      while (feed.rows.length > 500) feed.deleteRow(feed.rows.length - 1);
      var empty = document.getElementById("empty");
      if (empty) empty.remove();
    });
  }
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  });
})();
