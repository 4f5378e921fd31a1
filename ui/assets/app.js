// The explorer's shell: a client-side router over real URLs. Each page's
// state lives in its URL (path and query string), so every view can be
// shared as a link and the Back button works. A page module exports
// `render(main, ctx)`; `ctx.signal` aborts when the user leaves the page.

import { isTraceId } from './util.js';

const PAGES = [
  [/^\/(search)?$/, 'search', () => import('./pages/search.js')],
  [/^\/trace\/([^/]+)$/, 'trace', () => import('./pages/trace.js')],
  [/^\/logs$/, 'logs', () => import('./pages/logs.js')],
  [/^\/map$/, 'map', () => import('./pages/map.js')],
  [/^\/sql$/, 'sql', () => import('./pages/sql.js')],
  [/^\/analysis$/, 'analysis', () => import('./pages/analysis.js')],
  [/^\/demo$/, 'demo', () => import('./pages/demo.js')],
];

const TITLES = { search: 'Search', trace: 'Trace', logs: 'Logs', map: 'Service map', sql: 'SQL', analysis: 'Analysis', demo: 'Demo' };

let current = null;

/** Goes to `url` (same origin) and renders its page. */
export function navigate(url, { replace = false } = {}) {
  const target = new URL(url, location.href);
  const same = target.pathname === location.pathname && target.search === location.search;
  if (replace || same) history.replaceState(null, '', target);
  else history.pushState(null, '', target);
  route();
}

async function route() {
  current?.abort();
  const controller = new AbortController();
  current = controller;
  const main = document.getElementById('main');
  const path = location.pathname;
  const match = PAGES.map(([pattern, name, load]) => [pattern.exec(path), name, load]).find(([m]) => m);
  for (const link of document.querySelectorAll('.topbar nav a')) {
    const active = match && link.dataset.page === match[1];
    if (active) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  main.replaceChildren();
  if (!match) {
    document.title = 'Not found · weft';
    main.textContent = `There is no page at ${path}.`;
    return;
  }
  const [m, name, load] = match;
  document.title = `${TITLES[name]} · weft`;
  document.body.dataset.page = name;
  const page = await load();
  if (controller.signal.aborted) return;
  await page.render(main, {
    params: new URLSearchParams(location.search),
    pathParam: m[1] ? decodeURIComponent(m[1]) : undefined,
    hash: location.hash.slice(1),
    navigate,
    signal: controller.signal,
  });
}

// Links inside the app navigate without a page load; other links, modified
// clicks (new tab) and downloads behave as browsers do.
document.addEventListener('click', (event) => {
  if (event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  const link = event.target.closest('a[href]');
  if (!link || link.target || link.hasAttribute('download')) return;
  // getAttribute: an SVG link's `href` property is not a string.
  const url = new URL(link.getAttribute('href'), location.href);
  if (url.origin !== location.origin || url.pathname.startsWith('/api/') || url.pathname.startsWith('/ui/')) return;
  event.preventDefault();
  navigate(url);
});

window.addEventListener('popstate', route);

document.getElementById('jump-trace-id').addEventListener('input', (event) => event.target.setCustomValidity(''));

document.getElementById('jump').addEventListener('submit', (event) => {
  event.preventDefault();
  const input = document.getElementById('jump-trace-id');
  const id = input.value.trim();
  input.setCustomValidity(isTraceId(id) ? '' : 'A trace id is 32 hexadecimal characters');
  if (!input.reportValidity()) return;
  input.value = '';
  navigate(`/trace/${id.toLowerCase()}`);
});

// The Demo page exists only when `weft demo` runs this weft.
fetch('/api/v1/demo', { headers: { accept: 'application/json' } })
  .then((response) => {
    if (response.ok) document.querySelector('.topbar nav a[data-page="demo"]')?.removeAttribute('hidden');
  })
  .catch(() => {});

route();
