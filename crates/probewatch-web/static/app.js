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
