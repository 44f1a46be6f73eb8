// Live refresh of the overview: fetch the same URL's table fragment every few seconds and
// patch what changed into the page, row by row, so focus, selection and scroll stay where
// they are. Paused while the tab is hidden (and refreshed at once when it is shown again).
// Without JavaScript the page still works; it just does not refresh.
(function () {
  "use strict";
  const box = document.getElementById("checks");
  if (!box) return;
  const seconds = Number(box.dataset.refresh || "0");
  if (!seconds) return;
  // The texts the server writes, from a time's datetime attribute: "12 s ago" for a
  // result, "5 h 12 min" for how long a check has been in its state.
  function ago(iso, now) {
    const d = Math.trunc((now - Date.parse(iso)) / 1000);
    const a = Math.abs(d);
    const [n, unit] = a < 60 ? [a, "s"] : a < 3600 ? [Math.trunc(a / 60), "min"]
      : a < 86400 ? [Math.trunc(a / 3600), "h"] : [Math.trunc(a / 86400), "d"];
    return d < 0 ? "in " + n + " " + unit : n + " " + unit + " ago";
  }
  function lasted(iso, now) {
    const s = Math.max(0, Math.trunc((now - Date.parse(iso)) / 1000));
    if (s < 60) return s + " s";
    if (s < 3600) return Math.trunc(s / 60) + " min";
    if (s < 86400) return Math.trunc(s / 3600) + " h " + Math.trunc(s % 3600 / 60) + " min";
    return Math.trunc(s / 86400) + " d " + Math.trunc(s % 86400 / 3600) + " h";
  }
  function updateTimes(root, now) {
    root.querySelectorAll("time.ago[datetime]").forEach(function (t) {
      t.textContent = ago(t.getAttribute("datetime"), now);
    });
    root.querySelectorAll("time.for[datetime]").forEach(function (t) {
      t.textContent = lasted(t.getAttribute("datetime"), now);
    });
  }
  // Replaces `old` by `next` where they differ: a table whose rows line up is patched row
  // by row; anything else is replaced whole.
  function patch(old, next) {
    if (old.isEqualNode(next)) return;
    const oldRows = old.querySelectorAll("tbody > tr");
    const newRows = next.querySelectorAll("tbody > tr");
    const oldHead = old.querySelector("thead");
    const newHead = next.querySelector("thead");
    const sameShape = oldRows.length > 0 && oldRows.length === newRows.length
      && old.tagName === next.tagName && old.children.length === next.children.length
      && (!oldHead || (newHead && oldHead.isEqualNode(newHead)));
    if (!sameShape) {
      old.replaceWith(next);
      return;
    }
    newRows.forEach(function (row, i) {
      if (!oldRows[i].isEqualNode(row)) oldRows[i].replaceWith(row);
    });
    // Whatever is outside the rows (a heading, a caption) follows too.
    if (!old.isEqualNode(next)) {
      Array.from(old.children).forEach(function (child, i) {
        const other = next.children[i];
        if (other && child.tagName !== "TABLE" && !child.querySelector("tbody")
            && !child.isEqualNode(other)) {
          child.replaceWith(other.cloneNode(true));
        }
      });
    }
  }
  // Gives the browser a turn (input, rendering) between two pieces of work, so a refresh of
  // a long page never holds the main thread for long.
  function yieldToMain() {
    return new Promise(function (resolve) { setTimeout(resolve, 0); });
  }
  // Applies one change to the box; a link that had the focus and was replaced gets it back
  // at once (the user may have moved it while an earlier part was patched).
  function keepingFocus(apply) {
    const focused = document.activeElement;
    const href = focused && box.contains(focused) ? focused.getAttribute("href") : null;
    apply();
    if (href && !box.contains(focused)) {
      const again = box.querySelector('a[href="' + CSS.escape(href) + '"]');
      if (again) again.focus({ preventScroll: true });
    }
  }
  async function morph(html) {
    const next = document.createElement("div");
    next.innerHTML = html;
    updateTimes(next, Date.now());
    await yieldToMain();
    const oldKids = Array.from(box.children);
    const newKids = Array.from(next.children);
    if (oldKids.length !== newKids.length) {
      keepingFocus(function () { box.replaceChildren.apply(box, newKids); });
      return;
    }
    // One section at a time: the page stays responsive while a long one is patched.
    for (let i = 0; i < oldKids.length; i++) {
      if (oldKids[i].isEqualNode(newKids[i])) continue;
      keepingFocus(function () { patch(oldKids[i], newKids[i]); });
      await yieldToMain();
    }
  }
  // The table is fetched again only when it changed: the server answers 304 to the ETag
  // of what is shown, and the times are brought up to date here.
  let etag = null;
  // One refresh at a time: a tab shown again while the timer's refresh is still patching
  // waits for the next turn instead of patching the same rows twice.
  let busy = false;
  async function refresh() {
    if (document.hidden || busy) return;
    busy = true;
    try {
      await refreshNow();
    } finally {
      busy = false;
    }
  }
  async function refreshNow() {
    const url = new URL(window.location.href);
    url.searchParams.set("fragment", "1");
    const headers = { "Accept": "text/html" };
    if (etag) headers["If-None-Match"] = etag;
    try {
      const response = await fetch(url, { headers: headers, cache: "no-store" });
      if (response.status === 200) {
        await morph(await response.text());
        etag = response.headers.get("ETag");
      }
      if (response.status === 200 || response.status === 304) {
        box.dataset.refreshed = String(Date.now());
        const summary = response.headers.get("X-Probewatch-Summary");
        const el = document.getElementById("summary");
        if (summary && el) el.textContent = summary;
      }
      updateTimes(box, Date.now());
    } catch (e) {
      // The daemon may be restarting; try again next time.
    }
  }
  setInterval(refresh, seconds * 1000);
  document.addEventListener("visibilitychange", function () {
    if (!document.hidden) refresh();
  });
})();

// Silences on the alerts page: create and expire through the HTTP API. A logged-in user
// ([access]) needs nothing more; otherwise the API token typed into the form is sent as a
// bearer token (and never stored).
(function () {
  "use strict";
  const form = document.getElementById("silence-form");
  const result = document.getElementById("silence-result");
  if (!form || !result) return;
  function headers() {
    const h = { "Content-Type": "application/json" };
    const token = form.elements.token ? form.elements.token.value : "";
    if (token) h.Authorization = "Bearer " + token;
    return h;
  }
  async function answer(response) {
    let body = {};
    try { body = await response.json(); } catch (e) { /* not JSON */ }
    if (response.ok) {
      result.textContent = "Done.";
      window.location.reload();
    } else {
      result.textContent = "Refused (" + response.status + "): " + (body.error || response.statusText);
    }
  }
  form.addEventListener("submit", async function (event) {
    event.preventDefault();
    const matchers = form.elements.matchers.value.split("\n").map(function (m) { return m.trim(); }).filter(Boolean);
    const response = await fetch("/api/v1/silences", {
      method: "POST",
      headers: headers(),
      body: JSON.stringify({
        matchers: matchers,
        duration: form.elements.duration.value,
        createdBy: form.elements.createdBy.value,
        comment: form.elements.comment.value,
      }),
    });
    await answer(response);
  });
  // A Silence button on an alert row fills the form with the alert's labels.
  document.querySelectorAll("button.silence-this").forEach(function (button) {
    button.addEventListener("click", function () {
      form.elements.matchers.value = button.dataset.matchers;
      form.scrollIntoView({ block: "center" });
      form.elements.comment.focus({ preventScroll: true });
      preview();
    });
  });
  // The alerts the matchers would silence now, as they are typed.
  const shown = document.getElementById("silence-preview");
  let pending = null;
  async function preview() {
    if (!shown) return;
    const text = form.elements.matchers.value.trim();
    if (!text) { shown.textContent = ""; return; }
    try {
      const response = await fetch("/api/v1/silences/preview?matchers=" + encodeURIComponent(text));
      const body = await response.json();
      if (!response.ok) {
        shown.textContent = body.error;
        return;
      }
      const alerts = body.data.alerts;
      shown.textContent = alerts.length === 0
        ? "Matches no active alert now."
        : "Matches " + alerts.length + " active alert" + (alerts.length > 1 ? "s" : "") + ": "
          + alerts.map(function (a) { return a.alertname; }).join(", ");
    } catch (e) {
      shown.textContent = "";
    }
  }
  form.elements.matchers.addEventListener("input", function () {
    clearTimeout(pending);
    pending = setTimeout(preview, 250);
  });
  if (form.elements.matchers.value.trim()) preview();
  // Acknowledge: the alert's labels and a comment; notifications stop until it resolves.
  document.querySelectorAll("form.ack-form").forEach(function (ack) {
    ack.addEventListener("submit", async function (event) {
      event.preventDefault();
      const response = await fetch("/api/v1/alerts/acknowledge", {
        method: "POST",
        headers: headers(),
        body: JSON.stringify({
          labels: JSON.parse(ack.dataset.labels),
          comment: ack.elements.comment.value,
          createdBy: form.elements.createdBy ? form.elements.createdBy.value : "",
        }),
      });
      await answer(response);
    });
  });
  document.querySelectorAll("button.expire").forEach(function (button) {
    button.addEventListener("click", async function () {
      const response = await fetch("/api/v1/silences/" + button.dataset.id, { method: "DELETE", headers: headers() });
      await answer(response);
    });
  });
})();

// "Send test" on the notifications page: one test notification to a receiver, now, and
// what the receiver answered. A logged-in user's browser sends its basic auth itself;
// without [access], the API token typed on the page is sent as a bearer token.
(function () {
  "use strict";
  const result = document.getElementById("test-result");
  if (!result) return;
  document.querySelectorAll("button.send-test").forEach(function (button) {
    button.addEventListener("click", async function () {
      const receiver = button.dataset.receiver;
      const h = { "Content-Type": "application/json" };
      const token = document.getElementById("api-token");
      if (token && token.value) h.Authorization = "Bearer " + token.value;
      button.disabled = true;
      result.textContent = "Sending a test to " + receiver + "…";
      try {
        const response = await fetch("/api/v1/receivers/" + encodeURIComponent(receiver) + "/test", {
          method: "POST", headers: h, body: "{}",
        });
        let body = {};
        try { body = await response.json(); } catch (e) { /* not JSON */ }
        const delivered = response.ok && body.data.delivered;
        if (delivered) {
          result.textContent = receiver + " took the test notification: " + body.data.detail;
        } else if (response.ok) {
          result.textContent = receiver + " did not take the test notification: " + body.data.detail;
        } else {
          result.textContent = "Refused (" + response.status + "): " + (body.error || response.statusText);
        }
        result.className = delivered ? "test-ok" : "test-failed";
      } finally {
        button.disabled = false;
      }
    });
  });
})();

// Charts (plotly.js, served from the binary) and zooming. The server sends ms since the
// epoch and the pages' zone offset; plotly shows the shifted times as dates, and a zoom puts
// the new from/to (ms, unshifted) into the URL, so the zoomed view is a link like any other.
const Charts = (function () {
  "use strict";
  function navigateTo(from, to) {
    const url = new URL(window.location.href);
    url.searchParams.delete("range");
    url.searchParams.set("from", String(Math.round(from)));
    url.searchParams.set("to", String(Math.round(to)));
    window.location.assign(url);
  }
  function plotlyTime(s) {
    // plotly reports a zoomed axis as "YYYY-MM-DD HH:MM:SS.sss" in UTC.
    return Date.parse(String(s).replace(" ", "T") + (String(s).length > 10 ? "Z" : "T00:00:00Z"));
  }
  // Vertical marks (status changes, alert changes) with a short label at the top.
  function marksOf(el, style, offset) {
    let marks = [];
    try { marks = JSON.parse(el.dataset.marks || "[]"); } catch (e) { marks = []; }
    const colour = function (kind) {
      const name = { ok: "--ok", warning: "--warning", critical: "--critical", unknown: "--unknown",
        alert: "--critical", "alert-resolved": "--ok" }[kind] || "--muted";
      return style.getPropertyValue(name).trim() || "#888";
    };
    return {
      count: marks.length,
      shapes: marks.map(function (m) {
        return { type: "line", xref: "x", yref: "paper", x0: m.t + offset, x1: m.t + offset, y0: 0, y1: 1,
          line: { color: colour(m.kind), width: 1, dash: m.kind.startsWith("alert") ? "dot" : "dash" } };
      }),
      annotations: marks.map(function (m, i) {
        return { x: m.t + offset, xref: "x", y: 1, yref: "paper", yanchor: i % 2 ? "top" : "bottom", text: m.text,
          showarrow: false, font: { size: 10, color: colour(m.kind) } };
      }),
    };
  }
  // plotly draws dates in UTC: the pages' zone is shown by adding its offset to every time
  // (and taking it off again when a zoom goes into the URL).
  function draw(el, traces, yTitle) {
    const style = getComputedStyle(document.body);
    const offset = Number(el.dataset.offset || "0");
    const from = Number(el.dataset.from) + offset, to = Number(el.dataset.to) + offset;
    if (offset) {
      traces.forEach(function (t) { t.x = t.x.map(function (x) { return Number(x) + offset; }); });
    }
    const marks = marksOf(el, style, offset);
    const layout = {
      shapes: marks.shapes, annotations: marks.annotations,
      margin: { l: 60, r: 20, t: 10, b: 40 },
      paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)",
      font: { color: style.color, family: style.fontFamily },
      xaxis: { type: "date", range: [from, to], gridcolor: style.getPropertyValue("--line"),
        title: { text: el.dataset.zone && el.dataset.zone !== "UTC" ? "time (" + el.dataset.zone + ")" : "" } },
      yaxis: { title: { text: yTitle }, rangemode: "tozero", gridcolor: style.getPropertyValue("--line") },
      hovermode: "x unified", showlegend: true, legend: { orientation: "h", y: -0.2 },
      dragmode: "zoom",
    };
    window.Plotly.newPlot(el, traces, layout, { displaylogo: false, responsive: true });
    el.on("plotly_relayout", function (ev) {
      const a = ev["xaxis.range[0]"], b = ev["xaxis.range[1]"];
      if (a !== undefined && b !== undefined) navigateTo(plotlyTime(a) - offset, plotlyTime(b) - offset);
    });
    el.dataset.drawn = String(traces.reduce(function (n, t) { return n + t.x.length; }, 0));
    el.dataset.marked = String(marks.count);
  }
  function message(el, text) {
    const p = document.createElement("p");
    p.className = "empty";
    p.textContent = text;
    el.replaceChildren(p);
    el.style.height = "auto";
    el.dataset.drawn = "0";
  }
  // Drag across a timeline to zoom into that stretch.
  document.querySelectorAll(".zoomable").forEach(function (box) {
    const from = Number(box.dataset.from), to = Number(box.dataset.to);
    let start = null, shade = null;
    function frac(ev) {
      const r = box.getBoundingClientRect();
      return Math.min(1, Math.max(0, (ev.clientX - r.left) / r.width));
    }
    box.addEventListener("pointerdown", function (ev) {
      start = frac(ev);
      shade = document.createElement("div");
      shade.className = "zoom-box";
      box.appendChild(shade);
      box.setPointerCapture(ev.pointerId);
    });
    box.addEventListener("pointermove", function (ev) {
      if (start === null) return;
      const f = frac(ev);
      shade.style.left = (Math.min(start, f) * 100) + "%";
      shade.style.width = (Math.abs(f - start) * 100) + "%";
    });
    box.addEventListener("pointerup", function (ev) {
      if (start === null) return;
      const f = frac(ev), a = Math.min(start, f), b = Math.max(start, f);
      start = null;
      shade.remove();
      if (b - a > 0.005) navigateTo(from + a * (to - from), from + b * (to - from));
    });
  });
  return { draw: draw, message: message };
})();

// The check page's duration chart: min/max per pixel column from the server.
(function () {
  "use strict";
  const el = document.getElementById("duration-chart");
  if (!el || !window.Plotly) return;
  const url = el.dataset.src + "&width=" + Math.max(100, Math.round(el.clientWidth || 1000));
  fetch(url).then(function (r) { return r.json(); }).then(function (d) {
    if (!d.t || d.t.length === 0) {
      Charts.message(el, "No durations in this range (the probe reports none for this check).");
      return;
    }
    const traces = d.raw
      ? [{ x: d.t, y: d.max, name: "duration", mode: "lines+markers", marker: { size: 4 } }]
      : [
          { x: d.t, y: d.max, name: "max per pixel", mode: "lines", line: { width: 1 } },
          { x: d.t, y: d.min, name: "min per pixel", mode: "lines", line: { width: 1 }, fill: "tonexty" },
        ];
    Charts.draw(el, traces, "seconds");
    el.dataset.samples = String(d.samples);
  }).catch(function (e) { Charts.message(el, "Could not load the chart: " + e); });
})();

// The explorer's chart: the expression over the range, one point per pixel column.
(function () {
  "use strict";
  const el = document.getElementById("graph-chart");
  if (!el || !window.Plotly) return;
  const from = Number(el.dataset.from), to = Number(el.dataset.to);
  const width = Math.max(100, Math.round(el.clientWidth || 1000));
  const step = Math.max(1, Math.ceil((to - from) / 1000 / width));
  const params = new URLSearchParams({ query: el.dataset.expr, start: String(from / 1000), end: String(to / 1000), step: step + "s" });
  fetch("/api/v1/query_range?" + params).then(function (r) { return r.json(); }).then(function (body) {
    if (body.status !== "success") { Charts.message(el, "Query failed: " + (body.error || "unknown error")); return; }
    const series = body.data.resultType === "matrix" ? body.data.result : [];
    if (series.length === 0) { Charts.message(el, "No data in this range."); return; }
    const traces = series.slice(0, 200).map(function (s) {
      const m = Object.assign({}, s.metric);
      const name = m.__name__ || "";
      delete m.__name__;
      const labels = Object.keys(m).sort().map(function (k) { return k + "=" + JSON.stringify(m[k]); }).join(", ");
      return {
        x: s.values.map(function (p) { return p[0] * 1000; }),
        y: s.values.map(function (p) { return Number(p[1]); }),
        name: name + (labels ? "{" + labels + "}" : ""), mode: "lines",
      };
    });
    Charts.draw(el, traces, "");
  }).catch(function (e) { Charts.message(el, "Could not load the chart: " + e); });
})();

// Completion in the explorer's PromQL box: metric names and functions, or label names
// inside braces, fetched from the query API on first use.
(function () {
  "use strict";
  const box = document.getElementById("expr");
  const list = document.getElementById("completions");
  const form = document.getElementById("graph-form");
  if (!box || !list || !form) return;
  const FUNCTIONS = ["abs", "absent", "absent_over_time", "avg_over_time", "ceil", "changes",
    "clamp", "clamp_max", "clamp_min", "count_over_time", "delta", "deriv", "floor",
    "histogram_quantile", "holt_winters", "idelta", "increase", "irate", "label_join",
    "label_replace", "last_over_time", "max_over_time", "min_over_time", "predict_linear",
    "present_over_time", "quantile_over_time", "rate", "resets", "round", "sort", "sort_desc",
    "stddev_over_time", "sum_over_time", "time", "timestamp", "vector", "sum", "avg", "min",
    "max", "count", "topk", "bottomk", "quantile", "count_values", "group", "stddev"];
  let names = null, labels = null, items = [], active = -1, word = null;
  async function load() {
    if (names) return;
    names = []; labels = [];
    try {
      const [n, l] = await Promise.all([
        fetch("/api/v1/label/__name__/values").then(function (r) { return r.json(); }),
        fetch("/api/v1/labels").then(function (r) { return r.json(); }),
      ]);
      names = n.data || []; labels = (l.data || []).filter(function (x) { return x !== "__name__"; });
    } catch (e) { /* no completion, the box still works */ }
  }
  function close() {
    list.hidden = true; items = []; active = -1;
    box.setAttribute("aria-expanded", "false");
    box.removeAttribute("aria-activedescendant");
  }
  function render() {
    list.replaceChildren();
    items.forEach(function (text, i) {
      const li = document.createElement("li");
      li.id = "completion-" + i;
      li.setAttribute("role", "option");
      li.setAttribute("aria-selected", String(i === active));
      li.textContent = text;
      li.addEventListener("mousedown", function (ev) { ev.preventDefault(); accept(i); });
      list.appendChild(li);
    });
    list.hidden = items.length === 0;
    box.setAttribute("aria-expanded", String(items.length > 0));
    if (active >= 0) box.setAttribute("aria-activedescendant", "completion-" + active);
  }
  async function update() {
    await load();
    const before = box.value.slice(0, box.selectionStart);
    const m = /[a-zA-Z_:][a-zA-Z0-9_:]*$/.exec(before);
    if (!m) { close(); return; }
    word = { text: m[0], start: before.length - m[0].length };
    const inBraces = before.split("{").length > before.split("}").length;
    const pool = inBraces ? labels : names.concat(FUNCTIONS);
    items = pool.filter(function (x) { return x.startsWith(word.text) && x !== word.text; }).slice(0, 12);
    active = items.length ? 0 : -1;
    render();
  }
  function accept(i) {
    const text = items[i];
    if (text === undefined || !word) return;
    const end = word.start + word.text.length;
    box.value = box.value.slice(0, word.start) + text + box.value.slice(end);
    const caret = word.start + text.length;
    box.setSelectionRange(caret, caret);
    close();
    box.focus();
  }
  box.addEventListener("input", update);
  box.addEventListener("blur", function () { setTimeout(close, 100); });
  box.addEventListener("keydown", function (ev) {
    const open = !list.hidden && items.length > 0;
    if (open && (ev.key === "ArrowDown" || ev.key === "ArrowUp")) {
      ev.preventDefault();
      active = (active + (ev.key === "ArrowDown" ? 1 : items.length - 1)) % items.length;
      render();
    } else if (open && (ev.key === "Enter" || ev.key === "Tab")) {
      ev.preventDefault();
      accept(active);
    } else if (open && ev.key === "Escape") {
      close();
    } else if (ev.key === "Enter" && !ev.shiftKey) {
      ev.preventDefault();
      form.requestSubmit();
    }
  });
})();

// The ingest page's chart: files stored per minute over the last hour.
(function () {
  "use strict";
  const el = document.getElementById("ingest-chart");
  if (!el || !window.Plotly) return;
  let minutes = [];
  try { minutes = JSON.parse(el.dataset.minutes || "[]"); } catch (e) { /* drawn empty */ }
  if (minutes.length === 0) { Charts.message(el, "No files stored in the last hour."); return; }
  Charts.draw(el, [{
    type: "bar", name: "files per minute",
    x: minutes.map(function (m) { return m[0] + 30000; }),
    y: minutes.map(function (m) { return m[1]; }),
  }], "files per minute");
})();
