// Live refresh of the overview: fetch the same URL's table fragment every few seconds and
// swap it in, so the page stays current without a reload. Without JavaScript the page still
// works; it just does not refresh.
(function () {
  "use strict";
  const box = document.getElementById("checks");
  if (!box) return;
  const seconds = Number(box.dataset.refresh || "0");
  if (!seconds) return;
  async function refresh() {
    const url = new URL(window.location.href);
    url.searchParams.set("fragment", "1");
    try {
      const response = await fetch(url, { headers: { "Accept": "text/html" } });
      if (response.ok) {
        box.innerHTML = await response.text();
        box.dataset.refreshed = String(Date.now());
        const summary = response.headers.get("X-Probewatch-Summary");
        const el = document.getElementById("summary");
        if (summary && el) el.textContent = summary;
      }
    } catch (e) {
      // The daemon may be restarting; try again next time.
    }
  }
  setInterval(refresh, seconds * 1000);
})();

// Silences on the alerts page: create and expire through the HTTP API, with the API token
// typed into the form (it is sent as a bearer token and never stored).
(function () {
  "use strict";
  const form = document.getElementById("silence-form");
  const result = document.getElementById("silence-result");
  if (!form || !result) return;
  function headers() {
    const h = { "Content-Type": "application/json" };
    const token = form.elements.token.value;
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
  document.querySelectorAll("button.expire").forEach(function (button) {
    button.addEventListener("click", async function () {
      const response = await fetch("/api/v1/silences/" + button.dataset.id, { method: "DELETE", headers: headers() });
      await answer(response);
    });
  });
})();
