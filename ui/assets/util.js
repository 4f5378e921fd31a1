// Small helpers shared by the pages: building DOM without innerHTML (every
// value from the server goes in as text), formatting times and durations,
// and the time-range control that search, logs and the service map share.

/** Creates an HTML element: h('a', {href: '/x', class: 'c', onclick: f}, 'text', child). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on') && typeof value === 'function') {
      el.addEventListener(name.slice(2), value);
    } else if (name === 'dataset') {
      Object.assign(el.dataset, value);
    } else if (name === 'value') {
      el.value = value;
    } else {
      el.setAttribute(name, value === true ? '' : String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Creates an SVG element, as `h` does an HTML one. */
export function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on') && typeof value === 'function') el.addEventListener(name.slice(2), value);
    else el.setAttribute(name, String(value));
  }
  append(el, children);
  return el;
}

/** Replaces the children of `el`. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/**
 * Microseconds since the epoch of an RFC 3339 time as the API writes it
 * (`2026-11-25T10:00:00.015000000+00:00`). A float keeps ~0.25 µs, plenty for
 * a time axis; exact durations come from `duration_ns`.
 */
export function timeUs(text) {
  if (typeof text === 'number') return text / 1000;
  const m = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$/.exec(text || '');
  if (!m) return NaN;
  const seconds = Date.parse(m[1] + (m[3] === 'Z' ? 'Z' : m[3]));
  const fraction = m[2] ? Number((m[2] + '000000000').slice(0, 9)) / 1000 : 0;
  return seconds * 1000 + fraction;
}

/** `1.23s`, `45.6ms`, `789µs`, `120ns`. */
export function formatDuration(ns) {
  if (ns === null || ns === undefined || Number.isNaN(ns)) return '–';
  const abs = Math.abs(ns);
  if (abs >= 60e9) {
    const minutes = Math.floor(ns / 60e9);
    return `${minutes}m ${((ns - minutes * 60e9) / 1e9).toFixed(1)}s`;
  }
  if (abs >= 1e9) return `${trim(ns / 1e9)}s`;
  if (abs >= 1e6) return `${trim(ns / 1e6)}ms`;
  if (abs >= 1e3) return `${trim(ns / 1e3)}µs`;
  return `${Math.round(ns)}ns`;
}

function trim(value) {
  return value >= 100 ? value.toFixed(0) : value >= 10 ? value.toFixed(1) : value.toFixed(2);
}

/** A local date and time with milliseconds, for lists and tooltips. */
export function formatTime(us) {
  if (!Number.isFinite(us)) return '–';
  const d = new Date(us / 1000);
  const pad = (n, w = 2) => String(n).padStart(w, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

/** `3 minutes ago`, for result lists. */
export function formatAgo(us) {
  const seconds = (Date.now() - us / 1000) / 1000;
  if (!Number.isFinite(seconds)) return '';
  if (seconds < 0) return 'in the future';
  if (seconds < 60) return `${Math.round(seconds)}s ago`;
  if (seconds < 3600) return `${Math.round(seconds / 60)}m ago`;
  if (seconds < 86400) return `${Math.round(seconds / 3600)}h ago`;
  return `${Math.round(seconds / 86400)}d ago`;
}

export function formatCount(n) {
  return Number(n).toLocaleString('en-US');
}

export function formatPercent(part, whole) {
  if (!whole) return '0%';
  const p = (100 * part) / whole;
  return `${p >= 10 || p === 0 ? p.toFixed(0) : p.toFixed(1)}%`;
}

// ---------------------------------------------------------------------------
// Time ranges: `lookback=1h` (relative, the default) or `start`/`end`
// (absolute, RFC 3339) in the page URL; the API gets absolute times.

export const LOOKBACKS = [
  ['5m', 'Last 5 minutes'], ['15m', 'Last 15 minutes'], ['1h', 'Last hour'], ['6h', 'Last 6 hours'],
  ['24h', 'Last 24 hours'], ['7d', 'Last 7 days'], ['30d', 'Last 30 days'],
];
const UNIT_MS = { s: 1e3, m: 60e3, h: 3600e3, d: 86400e3 };

/** Milliseconds of a lookback such as `15m`, or NaN. */
export function lookbackMs(text) {
  const m = /^(\d+)([smhd])$/.exec(text || '');
  return m ? Number(m[1]) * UNIT_MS[m[2]] : NaN;
}

/** The window a page's URL parameters describe, as `{start, end}` RFC 3339 strings. */
export function timeWindow(params) {
  const start = params.get('start');
  const end = params.get('end');
  if (start || end) {
    return { start: start || undefined, end: end || undefined };
  }
  const ms = lookbackMs(params.get('lookback') || '1h');
  const now = Date.now();
  return { start: new Date(now - (Number.isNaN(ms) ? 3600e3 : ms)).toISOString(), end: new Date(now).toISOString() };
}

/** `datetime-local` input value ↔ RFC 3339 in UTC. */
function toLocalInput(rfc3339) {
  const us = timeUs(rfc3339) || Date.parse(rfc3339) * 1000;
  if (!Number.isFinite(us)) return '';
  const d = new Date(us / 1000);
  const pad = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function fromLocalInput(value) {
  if (!value) return '';
  const d = new Date(value);
  return Number.isNaN(d.getTime()) ? '' : d.toISOString();
}

/**
 * The time-range control: a preset list plus "Custom range" with two
 * datetime inputs. `read()` gives the URL parameters it stands for.
 */
export function timeRangeControl(params, idPrefix) {
  const custom = Boolean(params.get('start') || params.get('end'));
  const lookback = params.get('lookback') || '1h';
  const select = h('select', { id: `${idPrefix}-range`, name: 'lookback' },
    LOOKBACKS.map(([value, label]) => h('option', { value, selected: !custom && value === lookback }, label)),
    h('option', { value: 'custom', selected: custom }, 'Custom range'));
  const startInput = h('input', { type: 'datetime-local', step: '1', id: `${idPrefix}-start`, value: toLocalInput(params.get('start') || '') });
  const endInput = h('input', { type: 'datetime-local', step: '1', id: `${idPrefix}-end`, value: toLocalInput(params.get('end') || '') });
  const customBox = h('div', { class: 'custom-range', hidden: !custom },
    h('label', { for: startInput.id }, 'From'), startInput,
    h('label', { for: endInput.id }, 'To'), endInput);
  select.addEventListener('change', () => {
    customBox.hidden = select.value !== 'custom';
    if (select.value === 'custom' && !startInput.value) {
      const now = Date.now();
      startInput.value = toLocalInput(new Date(now - 3600e3).toISOString());
      endInput.value = toLocalInput(new Date(now).toISOString());
    }
  });
  const el = h('div', { class: 'field time-range' },
    h('label', { for: select.id }, 'Time range'), select, customBox);
  return {
    el,
    read() {
      if (select.value !== 'custom') return { lookback: select.value };
      return { start: fromLocalInput(startInput.value), end: fromLocalInput(endInput.value) };
    },
  };
}

/** URLSearchParams from an object, leaving out empty values. */
export function query(values) {
  const out = new URLSearchParams();
  for (const [name, value] of Object.entries(values)) {
    if (value === undefined || value === null || value === '') continue;
    if (Array.isArray(value)) value.filter((v) => v !== '').forEach((v) => out.append(name, v));
    else out.set(name, String(value));
  }
  return out;
}

/** A labelled form field. */
export function field(label, input, hint) {
  return h('div', { class: 'field' }, h('label', { for: input.id }, label), input,
    hint ? h('div', { class: 'hint', id: `${input.id}-hint` }, hint) : null);
}

/** The one SQL string literal syntax: single quotes doubled. */
export function sqlString(text) {
  return `'${String(text).replaceAll("'", "''")}'`;
}

export function isTraceId(text) {
  return /^[0-9a-fA-F]{32}$/.test(text || '');
}

/** A status box: `kind` is 'error', 'empty' or 'info'. */
export function notice(kind, ...children) {
  return h('div', { class: `notice notice-${kind}`, role: kind === 'error' ? 'alert' : 'status' }, ...children);
}

// Service colours. No reds (red marks errors) and no oranges (orange marks
// the trace's critical path), each dark enough to stand out on white (WCAG 1.4.11).
export const PALETTE = [
  '#2563eb', '#0f766e', '#7c3aed', '#15803d', '#db2777', '#0891b2', '#4338ca',
  '#4d7c0f', '#a21caf', '#475569', '#0369a1', '#047857', '#57534e', '#6d28d9',
];

/** The palette slot of a service: a hash of its name (FNV-1a), so it is the same on every page. */
export function serviceSlot(name) {
  let hash = 0x811c9dc5;
  for (let i = 0; i < name.length; i++) {
    hash ^= name.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193);
  }
  return (hash >>> 0) % PALETTE.length;
}

/** A service's colour outside a trace (inside one, the trace page avoids collisions). */
export function serviceColor(name) {
  return PALETTE[serviceSlot(String(name ?? ''))];
}

/**
 * ARIA tabs over `defs` (`{id, label, panel}`): arrow keys, Home and End move
 * between them and show their panel; `onShow(id, panel)` runs on each switch.
 * `tabId`/`panelId` name the elements, for links and tests.
 */
export function ariaTabs({ defs, label, tabId, panelId, onShow }) {
  const buttons = defs.map((def) => h('button', {
    type: 'button', role: 'tab', id: tabId(def.id), 'aria-controls': panelId(def.id),
    'aria-selected': 'false', tabindex: '-1', onclick: () => show(def.id),
  }, def.label));
  for (const def of defs) {
    Object.assign(def.panel, { id: panelId(def.id), hidden: true });
    def.panel.setAttribute('role', 'tabpanel');
    def.panel.setAttribute('aria-labelledby', tabId(def.id));
  }
  function show(id, focus = false) {
    defs.forEach((def, i) => {
      const on = def.id === id;
      buttons[i].setAttribute('aria-selected', String(on));
      buttons[i].tabIndex = on ? 0 : -1;
      def.panel.hidden = !on;
      if (on && focus) buttons[i].focus();
    });
    const shown = defs.find((def) => def.id === id);
    onShow(id, shown?.panel);
  }
  const onkeydown = (event) => {
    const i = buttons.indexOf(event.target);
    const next = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: buttons.length - 1 }[event.key];
    if (i < 0 || next === undefined) return;
    event.preventDefault();
    show(defs[(next + defs.length) % defs.length].id, true);
  };
  return { el: h('div', { class: 'tabs', role: 'tablist', 'aria-label': label, onkeydown }, buttons), show };
}

/** 0 and round steps (1, 2 or 5 × 10ⁿ) up to at least `max`, for chart axes. */
export function niceTicks(max) {
  const raw = max / 4;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * magnitude).find((candidate) => candidate >= raw);
  const steps = Math.max(1, Math.ceil(max / step - 1e-9));
  return Array.from({ length: steps + 1 }, (_, i) => i * step);
}
