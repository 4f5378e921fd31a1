// Search: find traces by service, operation, tags, duration and time, then
// pick one from the list or the duration-over-time scatter plot.

import { getJson, withLoading, serviceOptions } from '../api.js';
import {
  h, s, fill, field, notice, query, timeRangeControl, timeWindow, timeUs,
  formatDuration, formatTime, formatAgo, serviceColor, niceTicks,
} from '../util.js';

const SORTS = [
  ['recent', 'Most recent'], ['longest', 'Longest first'], ['shortest', 'Shortest first'],
  ['spans', 'Most spans'], ['errors', 'Most errors'],
];

export async function render(main, ctx) {
  const { params, signal } = ctx;
  const service = h('select', { id: 'search-service', name: 'service' }, h('option', { value: '' }, 'All services'));
  const operation = h('select', { id: 'search-operation', name: 'operation' }, h('option', { value: '' }, 'All operations'));
  const tags = h('input', {
    id: 'search-tags', name: 'tags', value: params.getAll('tags').join(' '), spellcheck: 'false',
    placeholder: 'http.response.status_code=500', 'aria-describedby': 'search-tags-hint',
  });
  const minDuration = h('input', { id: 'search-min-duration', name: 'min_duration', value: params.get('min_duration') || '', placeholder: 'e.g. 100ms' });
  const maxDuration = h('input', { id: 'search-max-duration', name: 'max_duration', value: params.get('max_duration') || '', placeholder: 'e.g. 1.5s' });
  const limit = h('input', { id: 'search-limit', name: 'limit', type: 'number', min: '1', max: '1000', value: params.get('limit') || '20' });
  const range = timeRangeControl(params, 'search');
  const sort = h('select', { id: 'search-sort', 'aria-label': 'Sort traces' },
    SORTS.map(([value, label]) => h('option', { value, selected: value === (params.get('sort') || 'recent') }, label)));

  const form = h('form', { class: 'panel', 'aria-label': 'Find traces' },
    h('h1', {}, 'Find traces'),
    field('Service', service),
    field('Operation', operation),
    field('Tags', tags, 'key=value, several separated by spaces'),
    h('div', { class: 'row' }, field('Min duration', minDuration), field('Max duration', maxDuration)),
    range.el,
    field('Limit', limit),
    h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Find traces')));
  const results = h('section', { id: 'search-results', 'aria-label': 'Traces found' });
  fill(main, h('div', { class: 'layout-sidebar' }, form, results));

  form.addEventListener('submit', (event) => {
    event.preventDefault();
    ctx.navigate(`/search?${query({
      service: service.value,
      operation: operation.value,
      tags: tags.value.trim() ? tags.value.trim().split(/\s+/) : [],
      min_duration: minDuration.value.trim(),
      max_duration: maxDuration.value.trim(),
      limit: limit.value,
      sort: sort.value === 'recent' ? '' : sort.value,
      ...range.read(),
    })}`);
  });

  loadServices(service, operation, params, signal);
  const found = await withLoading(results, signal, 'traces', (abort) => {
    const between = timeWindow(params);
    return getJson('/api/v1/traces', query({
      service: params.get('service'),
      operation: params.get('operation'),
      tags: params.getAll('tags'),
      min_duration: params.get('min_duration'),
      max_duration: params.get('max_duration'),
      limit: params.get('limit') || 20,
      start: between.start,
      end: between.end,
    }), abort);
  });
  if (!found) return;
  const traces = found.traces.map((t) => ({ ...t, startUs: timeUs(t.start_time) }));
  const show = () => {
    const sorted = sortTraces(traces, sort.value);
    fill(results,
      h('div', { class: 'results-header' },
        h('h2', { id: 'search-count' }, `${traces.length} trace${traces.length === 1 ? '' : 's'}`),
        h('label', {}, 'Sort ', sort)),
      traces.length ? scatterPlot(traces) : null,
      traces.length ? traceList(sorted) : notice('empty',
        'No traces match. Widen the time range, remove a filter, or check that your services send traces to weft (OTLP on :4317 / :4318).'));
  };
  sort.addEventListener('change', () => {
    const next = new URL(location.href);
    if (sort.value === 'recent') next.searchParams.delete('sort');
    else next.searchParams.set('sort', sort.value);
    history.replaceState(null, '', next);
    show();
  });
  show();
}

/** The service list, and the chosen service's operations whenever it changes. */
async function loadServices(service, operation, params, signal) {
  await serviceOptions(service, params.get('service') || '', signal);
  const wanted = params.get('operation') || '';
  const loadOperations = async () => {
    fill(operation, h('option', { value: '' }, 'All operations'));
    if (!service.value) return;
    const { operations } = await getJson(`/api/v1/services/${encodeURIComponent(service.value)}/operations`, null, signal);
    const names = [...new Set(operations.map((o) => o.name))];
    for (const name of names) operation.append(h('option', { value: name, selected: name === wanted }, name));
    if (wanted && !names.includes(wanted)) operation.append(h('option', { value: wanted, selected: true }, wanted));
  };
  // The lists are a convenience; the search itself reports errors.
  service.addEventListener('change', () => loadOperations().catch(() => {}));
  await loadOperations().catch(() => {});
}

function sortTraces(traces, how) {
  const by = {
    recent: (a, b) => b.startUs - a.startUs,
    longest: (a, b) => b.duration_ns - a.duration_ns,
    shortest: (a, b) => a.duration_ns - b.duration_ns,
    spans: (a, b) => b.span_count - a.span_count,
    errors: (a, b) => b.error_count - a.error_count || b.startUs - a.startUs,
  }[how] || ((a, b) => b.startUs - a.startUs);
  return [...traces].sort(by);
}

function traceList(traces) {
  const longest = Math.max(...traces.map((t) => t.duration_ns), 1);
  return h('ol', { class: 'trace-list' }, traces.map((t) => h('li', {},
    h('a', {
      class: `trace-item${t.error_count ? ' has-error' : ''}`, href: `/trace/${t.trace_id}`,
      dataset: { traceId: t.trace_id },
    },
    h('div', { class: 'title' },
      h('span', {}, `${t.root_service || '?'}: ${t.root_name || '(missing root span)'}`),
      h('span', {}, formatDuration(t.duration_ns))),
    h('div', { class: 'bar', 'aria-hidden': 'true' }, h('span', { style: `width:${Math.max(1, (100 * t.duration_ns) / longest)}%` })),
    h('div', { class: 'meta' },
      h('span', {}, `${t.span_count} span${t.span_count === 1 ? '' : 's'}`),
      t.error_count ? h('span', { class: 'badge badge-error' }, `${t.error_count} error${t.error_count === 1 ? '' : 's'}`) : null,
      h('span', {}, (t.services || []).map((name) => h('span', { class: 'service-chip', style: `--chip:${serviceColor(name)}` }, name))),
      h('span', { title: formatTime(t.startUs) }, `${formatTime(t.startUs)} (${formatAgo(t.startUs)})`),
      h('span', { class: 'mono' }, t.trace_id.slice(0, 16)))))));
}

/** Duration over start time, one dot per trace; a dot is a link to its trace. */
function scatterPlot(traces) {
  const width = 900;
  const height = 220;
  const pad = { left: 64, right: 16, top: 12, bottom: 28 };
  const xs = traces.map((t) => t.startUs);
  const ys = traces.map((t) => t.duration_ns);
  let [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  if (x1 - x0 < 1000) { x0 -= 500_000; x1 += 500_000; }
  // Room at both ends so the first and last dots are whole.
  const margin = (x1 - x0) * 0.04;
  x0 -= margin;
  x1 += margin;
  const yTicks = niceTicks(Math.max(...ys) * 1.1 || 1);
  const y1 = yTicks[yTicks.length - 1];
  const x = (v) => pad.left + ((v - x0) / (x1 - x0)) * (width - pad.left - pad.right);
  const y = (v) => height - pad.bottom - (v / y1) * (height - pad.top - pad.bottom);
  const xTicks = [0.1, 0.3, 0.5, 0.7, 0.9].map((f) => x0 + f * (x1 - x0));
  // Show milliseconds when the whole axis spans less than a minute.
  const clock = (us) => formatTime(us).slice(11, x1 - x0 < 60e6 ? 23 : 19);
  const maxSpans = Math.max(...traces.map((t) => t.span_count), 1);
  return s('svg', {
    class: 'scatter', viewBox: `0 0 ${width} ${height}`, role: 'img',
    'aria-label': 'Trace duration over time; each dot opens its trace',
  },
  s('g', { class: 'grid' }, yTicks.map((v) => s('line', { x1: pad.left, x2: width - pad.right, y1: y(v), y2: y(v) }))),
  s('g', { class: 'axis' },
    yTicks.map((v) => s('text', { x: pad.left - 6, y: y(v) + 4, 'text-anchor': 'end' }, formatDuration(v))),
    xTicks.map((v) => s('text', { x: x(v), y: height - 8, 'text-anchor': 'middle' }, clock(v)))),
  s('g', {}, traces.map((t) => s('a', { href: `/trace/${t.trace_id}`, 'aria-label': `${t.root_service}: ${t.root_name}, ${formatDuration(t.duration_ns)}` },
    s('circle', {
      cx: x(t.startUs), cy: y(t.duration_ns), r: 3 + (7 * t.span_count) / maxSpans,
      class: t.error_count ? 'error' : '', 'data-trace-id': t.trace_id,
    }, s('title', {}, `${t.root_service}: ${t.root_name}\n${formatDuration(t.duration_ns)}, ${t.span_count} spans\n${formatTime(t.startUs)}`))))));
}
