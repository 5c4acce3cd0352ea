// difo dashboard: live refresh. Polls <base>/stats.json every few seconds, updates the
// numbers marked data-stat and draws processed/failed per second as an SVG line chart.
// Pausable (remembered in localStorage). Every page works without this file.
(function () {
  "use strict";
  var body = document.body;
  var base = body.getAttribute("data-base") || "";
  var every = Math.max(parseFloat(body.getAttribute("data-poll")) || 5, 1) * 1000;
  var chartBox = document.getElementById("live-chart");
  var numbers = document.querySelectorAll("[data-stat]");
  if (!chartBox && numbers.length === 0) return;

  var live = document.querySelector(".live");
  var toggle = document.getElementById("live-toggle");
  var status = document.getElementById("live-status");
  var paused = window.localStorage && localStorage.getItem("difo-paused") === "1";
  var points = [];  // {t, processed, failed} per second
  var last = null;
  var timer = null;
  var SVG = "http://www.w3.org/2000/svg";

  live.hidden = false;
  function showState() {
    toggle.textContent = paused ? "Resume" : "Pause";
    status.textContent = paused ? "paused" : "live, every " + every / 1000 + " s";
  }
  toggle.addEventListener("click", function () {
    paused = !paused;
    if (window.localStorage) localStorage.setItem("difo-paused", paused ? "1" : "0");
    showState();
    if (!paused) poll();
  });
  showState();

  function el(name, attrs, text) {
    var node = document.createElementNS(SVG, name);
    for (var key in attrs) node.setAttribute(key, attrs[key]);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function draw() {
    if (!chartBox) return;
    var w = 720, h = 200, left = 48, bottom = 22, top = 10;
    var pw = w - left - 8, ph = h - bottom - top;
    var max = 1;
    points.forEach(function (p) { max = Math.max(max, p.processed, p.failed); });
    max = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000]
      .find(function (step) { return step >= max; }) || Math.ceil(max);
    var svg = el("svg", {"class": "chart", viewBox: "0 0 " + w + " " + h, role: "img",
                         "aria-label": "processed and failed per second"});
    for (var i = 0; i <= 5; i++) {
      var y = top + ph - ph * i / 5;
      svg.appendChild(el("line", {"class": "grid", x1: left, x2: w - 8, y1: y, y2: y}));
      svg.appendChild(el("text", {"class": "axis", x: left - 4, y: y + 4, "text-anchor": "end"},
                         (max * i / 5).toFixed(max < 5 ? 1 : 0)));
    }
    var n = 60;
    function x(index) { return left + pw * (index + n - points.length) / (n - 1); }
    function yv(v) { return top + ph - ph * v / max; }
    ["processed", "failed"].forEach(function (name) {
      var coords = points.map(function (p, i) { return x(i).toFixed(1) + "," + yv(p[name]).toFixed(1); });
      svg.appendChild(el("polyline", {"class": "line " + name, points: coords.join(" ")}));
    });
    if (points.length) {
      var lastPoint = points[points.length - 1];
      svg.appendChild(el("text", {"class": "axis", x: w - 8, y: h - 6, "text-anchor": "end"},
                         new Date(lastPoint.t * 1000).toLocaleTimeString()));
    } else {
      svg.appendChild(el("text", {"class": "axis", x: w / 2, y: h / 2, "text-anchor": "middle"},
                         "waiting for the next sample…"));
    }
    chartBox.replaceChildren(svg);
  }

  function poll() {
    clearTimeout(timer);
    if (paused) return;
    fetch(base + "/stats.json", {credentials: "same-origin", cache: "no-store"})
      .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); })
      .then(function (data) {
        numbers.forEach(function (node) {
          var value = data[node.getAttribute("data-stat")];
          if (typeof value === "number") node.textContent = value.toLocaleString("en-US");
        });
        if (last) {
          var dt = Math.max(data.time - last.time, 0.001);
          points.push({t: data.time,
                       processed: Math.max(data.processed - last.processed, 0) / dt,
                       failed: Math.max(data.failed - last.failed, 0) / dt});
          if (points.length > 60) points.shift();
        }
        last = data;
        draw();
        status.textContent = "live, every " + every / 1000 + " s";
      })
      .catch(function (err) { status.textContent = "refresh failed (" + err.message + ")"; })
      .then(function () { if (!paused) timer = setTimeout(poll, every); });
  }
  draw();
  poll();
})();
