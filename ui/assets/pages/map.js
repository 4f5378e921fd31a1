// Service map: services as nodes and calls between them as edges, with the
// call rate and error rate of each edge over a time range. Selecting a node
// lists that service's operations with rate, error rate and p50/p99.

import { getJson, withLoading } from '../api.js';
import {
  h, s, fill, notice, query, timeRangeControl, timeWindow, timeUs,
  formatDuration, formatPercent, serviceColor,
} from '../util.js';

const NODE_W = 170;
const NODE_H = 46;
const COL_GAP = 150;
const ROW_GAP = 36;

export async function render(main, ctx) {
  const { params, signal } = ctx;
  const range = timeRangeControl(params, 'map');
  const form = h('form', { class: 'panel row map-form', 'aria-label': 'Service map time range' },
    h('h1', { style: 'flex: 0 0 auto; margin-right: 16px' }, 'Service map'),
    range.el,
    h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Show')));
  const graph = h('section', { id: 'map-graph', 'aria-label': 'Service dependency graph' });
  const details = h('section', { id: 'map-service', 'aria-live': 'polite' });
  fill(main, form, graph, details);
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    ctx.navigate(`/map?${query({ ...range.read(), service: params.get('service') })}`);
  });

  const between = timeWindow(params);
  const seconds = windowSeconds(between);
  // The window as the URL names it (a lookback stays relative), for links to other pages.
  const linkWindow = params.get('start') || params.get('end')
    ? { start: params.get('start'), end: params.get('end') }
    : { lookback: params.get('lookback') };
  const found = await withLoading(graph, signal, 'the service map', (abort) =>
    getJson('/api/v1/dependencies', query(between), abort));
  if (!found) return;
  const edges = found.dependencies;
  if (!edges.length) {
    fill(graph, notice('empty', 'No calls between services in this time range. ' +
      'Edges come from spans whose parent span belongs to another service; widen the range or check that context propagates between your services.'));
    return;
  }
  const select = (service) => {
    const next = new URL(location.href);
    next.searchParams.set('service', service);
    history.replaceState(null, '', next);
    for (const node of graph.querySelectorAll('.node')) {
      node.classList.toggle('selected', node.dataset.service === service);
    }
    showOperations(details, service, between, seconds, linkWindow, signal);
  };
  fill(graph, mapSvg(edges, seconds, select));
  const wanted = params.get('service');
  if (wanted) select(wanted);
  else fill(details, notice('info', 'Select a service to see its operations.'));
}

function windowSeconds({ start, end }) {
  const startUs = timeUs(start) || Date.parse(start) * 1000;
  const endUs = timeUs(end) || Date.parse(end) * 1000;
  const seconds = (endUs - startUs) / 1e6;
  return Number.isFinite(seconds) && seconds > 0 ? seconds : NaN;
}

function formatRate(count, seconds) {
  if (!Number.isFinite(seconds)) return `${count} calls`;
  const rate = count / seconds;
  if (rate * 3600 < 1) return `${count} call${count === 1 ? '' : 's'}`;
  if (rate >= 100) return `${rate.toFixed(0)}/s`;
  if (rate >= 1) return `${rate.toFixed(1)}/s`;
  if (rate * 60 >= 1) return `${(rate * 60).toFixed(1)}/min`;
  return `${(rate * 3600).toFixed(1)}/h`;
}

/**
 * Columns by depth: a service sits one column right of the deepest caller
 * that reaches it from a service nobody calls, so calls flow left to right.
 * Cycles are cut where they close.
 */
export function layout(edges) {
  const names = [...new Set(edges.flatMap((e) => [e.parent, e.child]))].sort();
  const callers = new Map(names.map((n) => [n, []]));
  for (const e of edges) if (e.parent !== e.child) callers.get(e.child).push(e.parent);
  const depth = new Map();
  const visiting = new Set();
  const depthOf = (name) => {
    if (depth.has(name)) return depth.get(name);
    if (visiting.has(name)) return 0;
    visiting.add(name);
    const d = Math.max(-1, ...callers.get(name).map(depthOf)) + 1;
    visiting.delete(name);
    depth.set(name, d);
    return d;
  };
  names.forEach(depthOf);
  const columns = [];
  for (const name of names) (columns[depth.get(name)] ||= []).push(name);
  const positions = new Map();
  const tallest = Math.max(...columns.map((c) => c?.length || 0));
  columns.forEach((column, i) => {
    const offset = ((tallest - column.length) * (NODE_H + ROW_GAP)) / 2;
    column.forEach((name, j) => positions.set(name, {
      x: 20 + i * (NODE_W + COL_GAP),
      y: 20 + offset + j * (NODE_H + ROW_GAP),
    }));
  });
  return {
    positions,
    width: 40 + columns.length * NODE_W + (columns.length - 1) * COL_GAP,
    height: 40 + tallest * NODE_H + (tallest - 1) * ROW_GAP,
  };
}

function mapSvg(edges, seconds, select) {
  const { positions, width, height } = layout(edges);
  const incoming = new Map();
  for (const e of edges) {
    const into = incoming.get(e.child) || { calls: 0, errors: 0 };
    into.calls += e.call_count;
    into.errors += e.error_count;
    incoming.set(e.child, into);
  }
  const edgeEls = edges.map((e) => {
    const a = positions.get(e.parent);
    const b = positions.get(e.child);
    let path;
    let label;
    if (b.x > a.x) {
      const [x1, y1, x2, y2] = [a.x + NODE_W, a.y + NODE_H / 2, b.x, b.y + NODE_H / 2];
      const mid = (x1 + x2) / 2;
      path = `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2 - 6},${y2}`;
      // Beside the arrowhead, so edges leaving one service keep their labels apart.
      label = { x: x2 - 70, y: y2 - 8 };
    } else {
      // A call back to the same or an earlier column: arc over the top.
      const [x1, y1, x2, y2] = [a.x + NODE_W / 2, a.y, b.x + NODE_W / 2, b.y];
      const top = Math.min(y1, y2) - 30;
      path = `M${x1},${y1} C${x1},${top} ${x2},${top} ${x2},${y2 - 6}`;
      label = { x: (x1 + x2) / 2, y: top + 4 };
    }
    const errorRate = e.call_count ? e.error_count / e.call_count : 0;
    const text = `${formatRate(e.call_count, seconds)} · ${formatPercent(e.error_count, e.call_count)} errors`;
    return s('g', {
      class: `edge${errorRate > 0 ? ' error' : ''}`, 'data-parent': e.parent, 'data-child': e.child,
      'data-calls': e.call_count, 'data-errors': e.error_count,
    },
    s('title', {}, `${e.parent} → ${e.child}: ${e.call_count} calls, ${e.error_count} errors`),
    s('path', { d: path, 'marker-end': `url(#arrow${errorRate > 0 ? '-error' : ''})` }),
    s('text', { x: label.x, y: label.y, 'text-anchor': 'middle' }, text));
  });
  const nodeEls = [...positions].map(([name, p]) => {
    const into = incoming.get(name);
    const activate = () => select(name);
    return s('g', {
      class: `node${into?.errors ? ' has-error' : ''}`, transform: `translate(${p.x},${p.y})`,
      tabindex: '0', role: 'button', 'aria-label': `Service ${name}: show its operations`,
      'data-service': name,
      onclick: activate,
      onkeydown: (event) => {
        if (event.key === 'Enter' || event.key === ' ') { event.preventDefault(); activate(); }
      },
    },
    s('rect', { width: NODE_W, height: NODE_H, rx: 8 }),
    s('rect', { width: 6, height: NODE_H, rx: 3, style: `fill:${serviceColor(name)};stroke:none` }),
    s('text', { x: 14, y: 19 }, name.length > 20 ? `${name.slice(0, 19)}…` : name),
    s('text', { x: 14, y: 36, class: 'sub' }, into
      ? `in: ${formatRate(into.calls, seconds)}, ${formatPercent(into.errors, into.calls)} err`
      : 'entry point'));
  });
  const marker = (id, color) => s('marker', {
    id, viewBox: '0 0 10 10', refX: '8', refY: '5', markerWidth: '8', markerHeight: '8', orient: 'auto-start-reverse',
  }, s('path', { d: 'M0,0 L10,5 L0,10 z', fill: color }));
  return s('svg', {
    class: 'map-svg', viewBox: `0 -20 ${width} ${height + 20}`, role: 'group',
    'aria-label': `${positions.size} services, ${edges.length} calls between them`,
    style: `max-width:${width}px`,
  },
  s('defs', {}, marker('arrow', '#6b7280'), marker('arrow-error', '#b42318')),
  s('g', {}, edgeEls), s('g', {}, nodeEls));
}

async function showOperations(target, service, between, seconds, linkWindow, signal) {
  const found = await withLoading(target, signal, `the operations of ${service}`, (abort) =>
    getJson(`/api/v1/services/${encodeURIComponent(service)}/operations`, query(between), abort));
  if (!found) return;
  const operations = found.operations;
  const searchLink = (name) => `/search?${query({ service, operation: name, start: between.start, end: between.end })}`;
  fill(target,
    h('div', { class: 'section-head' },
      h('h2', {}, 'Operations of ', h('span', { class: 'service-chip', style: `--chip:${serviceColor(service)}` }, service)),
      h('a', { class: 'analyse-link', href: `/analysis?${query({ service, ...linkWindow })}` }, `Analyse ${service}`)),
    operations.length
      ? h('table', { class: 'data', id: 'map-operations' },
        h('thead', {}, h('tr', {},
          h('th', { scope: 'col' }, 'Operation'), h('th', { scope: 'col' }, 'Kind'),
          h('th', { scope: 'col', class: 'num' }, 'Spans'), h('th', { scope: 'col', class: 'num' }, 'Rate'),
          h('th', { scope: 'col', class: 'num' }, 'Error rate'),
          h('th', { scope: 'col', class: 'num' }, 'p50'), h('th', { scope: 'col', class: 'num' }, 'p99'))),
        h('tbody', {}, operations.map((o) => h('tr', { dataset: { operation: o.name } },
          h('td', {}, h('a', { href: searchLink(o.name) }, o.name)),
          h('td', {}, o.kind),
          h('td', { class: 'num' }, o.span_count),
          h('td', { class: 'num' }, formatRate(o.span_count, seconds)),
          h('td', { class: `num${o.error_count ? ' sev-ERROR' : ''}` }, formatPercent(o.error_count, o.span_count)),
          h('td', { class: 'num' }, formatDuration(o.p50_ns)),
          h('td', { class: 'num' }, formatDuration(o.p99_ns))))))
      : notice('empty', `${service} has no spans in this time range.`));
}
