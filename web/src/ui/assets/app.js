// The UI's one script, embedded in the binary and served at /assets/app.js. No build step.
//
// Live updates: every element with data-refresh="<url>" is re-fetched every two seconds
// while the tab is visible, and replaced by the HTML fragment the url returns (the server
// renders it with the same templates as the page). A fragment that comes back without
// data-refresh (a job that has ended) stops polling for that element. The "live" dot in the
// header turns red while the server cannot be reached.
(function () {
  'use strict';
  const PERIOD_MS = 2000;
  let busy = false;
  let failures = 0;

  function setLive(state, text) {
    const live = document.getElementById('live');
    if (!live) return;
    live.className = 'live ' + state;
    const label = live.querySelector('.label');
    if (label) label.textContent = text;
  }

  // Nothing on the page changes any more (a finished job): no indicator.
  function showIndicator() {
    const live = document.getElementById('live');
    if (live) live.hidden = document.querySelector('[data-refresh]') === null;
  }

  async function refreshAll() {
    const targets = document.querySelectorAll('[data-refresh]');
    if (targets.length === 0 || busy || document.hidden) return;
    busy = true;
    try {
      for (const el of targets) {
        // Do not swap a section out from under someone typing or choosing in it.
        if (el.contains(document.activeElement) && document.activeElement !== document.body) continue;
        const res = await fetch(el.dataset.refresh, {
          headers: { Accept: 'text/html' },
          cache: 'no-store',
          credentials: 'same-origin',
        });
        if (!res.ok) throw new Error(res.status + ' ' + res.statusText);
        const html = await res.text();
        if (el.isConnected) el.outerHTML = html;
      }
      failures = 0;
      setLive('', 'live');
      showIndicator();
    } catch (e) {
      failures += 1;
      setLive('stale', 'reconnecting…');
    } finally {
      busy = false;
    }
  }

  showIndicator();
  setInterval(refreshAll, PERIOD_MS);
  document.addEventListener('visibilitychange', () => {
    if (!document.hidden) refreshAll();
  });

  // Forms with data-confirm ask first (cancel a job).
  document.addEventListener('submit', (ev) => {
    const form = ev.target;
    if (form instanceof HTMLFormElement && form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
      ev.preventDefault();
    }
  });

  // Selects marked data-autosubmit apply their filter at once.
  document.addEventListener('change', (ev) => {
    const el = ev.target;
    if (el instanceof HTMLSelectElement && el.hasAttribute('data-autosubmit') && el.form) {
      el.form.submit();
    }
  });
})();
