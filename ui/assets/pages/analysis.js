// Analysis: what went wrong in a time window, and where. Three views over
// one time range, as tabs, each loaded when first shown:
//
// - Root cause (/api/v1/analysis/rca): the window's failed and slow traces
//   set against its healthy ones, and the suspects that explain them, most
//   likely first, each with its evidence, example traces and logs.
// - Latency (/api/v1/analysis/latency): a service's request durations as a
//   heatmap with p50/p95/p99 over it, and where its requests spend their
//   time on the critical path.
// - Trends (/api/v1/analysis/trends): a service's request rate, error rate
//   and p95 with a forecast, its prediction interval and anomalies, and its
//   log volume by severity.
//
// The state (service, time range, tab) lives in the URL, as on every page.

import { getJson, withLoading, serviceOptions } from '../api.js';
import {
  h, s, fill, field, notice, query, timeRangeControl, timeWindow, timeUs,
  formatDuration, formatTime, formatCount, serviceColor, ariaTabs, niceTicks,
} from '../util.js';

const TABS = [
  { id: 'rca', label: 'Root cause' },
  { id: 'latency', label: 'Latency' },
  { id: 'trends', label: 'Trends' },
];

export async function render(main, ctx) {
  const { params, signal } = ctx;
  const chosen = params.get('service') || '';
  const service = h('select', { id: 'analysis-service', name: 'service' }, h('option', { value: '' }, 'All services'));
  const range = timeRangeControl(params, 'analysis');
  const form = h('form', { class: 'panel row analysis-form', 'aria-label': 'What to analyse' },
    h('h1', {}, 'Analysis'),
    field('Service', service),
    range.el,
    h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Analyse')));

  const between = timeWindow(params);
  const views = {
    rca: (panel) => showRootCause(panel, chosen, between, signal),
    latency: (panel) => (chosen
      ? showLatency(panel, chosen, between, signal)
      : fill(panel, needService('Latency shows where one service’s requests spend their time'))),
    trends: (panel) => (chosen
      ? showTrends(panel, chosen, between, signal)
      : fill(panel, needService('Trends follow one service’s request rate, errors and p95'))),
  };
  const shown = new Set();
  let current = TABS.some((tab) => tab.id === params.get('tab')) ? params.get('tab') : 'rca';
  const panels = TABS.map((tab) => ({ ...tab, panel: h('section', { class: 'analysis-panel', tabindex: '0' }) }));
  const tabs = ariaTabs({
    label: 'Analyses',
    tabId: (id) => `analysis-tab-${id}`,
    panelId: (id) => `analysis-${id}`,
    defs: panels,
    onShow: (id, panel) => {
    current = id;
    if (!signal.aborted) {
      const url = new URL(location.href);
      if (id === 'rca') url.searchParams.delete('tab');
      else url.searchParams.set('tab', id);
      if (url.href !== location.href) history.replaceState(history.state, '', url);
    }
    if (!shown.has(id)) {
      shown.add(id);
      views[id](panel);
    }
    },
  });

  form.addEventListener('submit', (event) => {
    event.preventDefault();
    ctx.navigate(`/analysis?${query({ service: service.value, ...range.read(), tab: current === 'rca' ? '' : current })}`);
  });
  serviceOptions(service, chosen, signal);
  fill(main, form, tabs.el, panels.map((tab) => tab.panel));
  tabs.show(current);
}

function needService(what) {
  return notice('info', `${what}: choose a service above and press Analyse.`);
}

// ---------------------------------------------------------------------------
// Formatting

/** A share (0–1) as the analysis API's summaries write it: `92 %`, `2.1 %`. */
function pct(share) {
  if (share === null || share === undefined || Number.isNaN(share)) return '–';
  const p = share * 100;
  if (p > 0 && p < 0.1) return '< 0.1 %';
  return `${p >= 10 || p === 0 ? p.toFixed(0) : p.toFixed(1)} %`;
}

const SUPERSCRIPT = { '-': '⁻', 0: '⁰', 1: '¹', 2: '²', 3: '³', 4: '⁴', 5: '⁵', 6: '⁶', 7: '⁷', 8: '⁸', 9: '⁹' };

/** `p = 0.012`, `p = 8.5×10⁻⁶`. */
function pValue(p, name = 'p') {
  if (p === null || p === undefined || Number.isNaN(p)) return null;
  if (p >= 0.001) return `${name} = ${p.toFixed(3)}`;
  if (p < 1e-300) return `${name} < 10⁻³⁰⁰`;
  const [mantissa, exponent] = p.toExponential(1).split('e');
  return `${name} = ${mantissa}×10${String(Number(exponent)).replace(/./g, (c) => SUPERSCRIPT[c])}`;
}

function formatRate(perSecond) {
  if (perSecond === null || perSecond === undefined) return '–';
  if (perSecond === 0) return '0/s';
  if (perSecond >= 100) return `${perSecond.toFixed(0)}/s`;
  return `${Number(perSecond.toPrecision(2))}/s`;
}

/** A step length: `30s`, `10m`, `1h`. */
function formatStep(seconds) {
  if (seconds % 3600 === 0) return `${seconds / 3600}h`;
  if (seconds % 60 === 0) return `${seconds / 60}m`;
  return Number.isInteger(seconds) ? `${seconds}s` : formatDuration(seconds * 1e9);
}

/** An axis label without the trailing zeros of a fixed-precision format: `5.00s` → `5s`. */
function tidy(text) {
  return text.replace(/\.(\d*?)0+(?=\D|$)/, (_, digits) => (digits ? `.${digits}` : ''));
}

function plural(n, one, many = `${one}s`) {
  return `${formatCount(n)} ${n === 1 ? one : many}`;
}

function chip(service) {
  return h('span', { class: 'service-chip', style: `--chip:${serviceColor(service)}` }, service);
}

function stat(label, value, attrs = {}) {
  return h('div', {}, h('dt', {}, label), h('dd', attrs, value));
}

/** A local time for axes and captions: seconds for short spans, the date for long ones. */
function clock(us, spanSeconds) {
  const text = formatTime(us);
  if (spanSeconds >= 2 * 86400) return text.slice(5, 16);
  return text.slice(11, spanSeconds < 600 ? 19 : 16);
}

function windowText(start, end) {
  const [a, b] = [timeUs(start), timeUs(end)];
  const date = formatTime(a).slice(0, 10) === formatTime(b).slice(0, 10);
  return `${formatTime(a).slice(0, 19)} – ${formatTime(b).slice(date ? 11 : 0, 19)}`;
}

// ---------------------------------------------------------------------------
// Root cause

async function showRootCause(panel, service, between, signal) {
  const report = await withLoading(panel, signal, 'the root-cause analysis', (abort) =>
    getJson('/api/v1/analysis/rca', query({ ...between, service }), abort));
  if (report) fill(panel, rootCause(report));
}

function rootCause(report) {
  const scope = report.service ? ` that pass through ${report.service}` : '';
  const bad = report.error_traces + report.slow_traces;
  const stats = h('dl', { class: 'stats', id: 'rca-stats' },
    stat('Window', windowText(report.start, report.end), { class: 'stat-text' }),
    stat('Traces', formatCount(report.traces), { id: 'rca-traces' }),
    stat('Failed', formatCount(report.error_traces), { id: 'rca-failed', class: report.error_traces ? 'has-errors' : undefined }),
    stat('Slow', formatCount(report.slow_traces), { id: 'rca-slow' }),
    stat('Slow threshold', report.slow_threshold_ns === null || report.slow_threshold_ns === undefined
      ? '–' : `> ${formatDuration(report.slow_threshold_ns)}`),
    stat('Analysed', `${formatCount(report.sampled)} sampled`),
    // Traces that ended moments ago may still miss spans sitting in exporters' batches.
    report.unsettled_traces ? stat('Still arriving', `${formatCount(report.unsettled_traces)} left out`,
      { id: 'rca-unsettled', title: 'Traces that ended in the last seconds wait until all their spans can have arrived' }) : null);
  if (!report.traces) {
    const settling = report.unsettled_traces
      ? ` ${plural(report.unsettled_traces, 'trace')} that just ended will be analysed once their spans have all arrived.` : '';
    return [stats, notice('empty', `No traces in this window${scope}.${settling} Widen the time range or choose another service.`)];
  }
  if (!bad) {
    return [stats, notice('empty', `No bad traces: nothing to explain. None of the ${plural(report.traces, 'trace')}${scope} ` +
      'failed or ran slower than the slow threshold.')];
  }
  if (!report.causes.length) {
    return [stats, notice('empty', `No suspect stands out: the ${plural(bad, 'bad trace')} share no failing or slowed-down operation.`)];
  }
  return [
    stats,
    h('h2', {}, 'Suspects, most likely first'),
    h('ol', { id: 'analysis-causes', class: 'cause-list' }, report.causes.map((cause, i) => causeCard(cause, i, report))),
    report.attributes?.length ? h('section', { class: 'panel window-attributes' },
      h('h2', {}, 'Attribute values over-represented in bad traces'),
      attributeTable(report.attributes, 'Attribute values over-represented in the window’s bad traces')) : null,
  ];
}

function causeCard(cause, rank, report) {
  const ev = cause.evidence || {};
  const label = `${cause.service} / ${cause.operation}`;
  const numbers = [];
  if (ev.explained_traces !== undefined && ev.bad_traces !== undefined) {
    numbers.push(['Explains', [`${formatCount(ev.explained_traces)} of ${formatCount(ev.bad_traces)} sampled bad traces`,
      ev.baseline_traces !== undefined ? h('span', { class: 'muted' }, ` · baseline ${plural(ev.baseline_traces, 'healthy trace')}`) : null]]);
  }
  if (ev.error_rate_bad !== undefined && (ev.error_rate_bad > 0 || ev.error_rate_baseline > 0)) {
    numbers.push(['Failed in', [h('strong', {}, pct(ev.error_rate_bad)), ' of bad traces vs ',
      h('strong', {}, pct(ev.error_rate_baseline)), ' of healthy ones',
      ev.p_value !== undefined ? h('span', { class: 'muted' }, ` · ${pValue(ev.p_value)}`) : null]]);
  }
  if (ev.latency_shift_ns !== undefined) {
    numbers.push(['Self time on path', [h('strong', {}, `${ev.latency_shift_ns >= 0 ? '+' : '−'}${formatDuration(Math.abs(ev.latency_shift_ns))}`),
      ` (${formatDuration(ev.self_time_bad_ns)} in bad traces vs ${formatDuration(ev.self_time_baseline_ns)} in healthy ones)`,
      ev.ks_p_value !== undefined ? h('span', { class: 'muted' }, ` · KS ${pValue(ev.ks_p_value)}`) : null]]);
  }
  if (ev.share_of_increase !== undefined) {
    numbers.push(['Share of increase', [h('strong', {}, pct(ev.share_of_increase)), ' of the bad traces’ extra duration']]);
  }
  const operations = cause.operations || [];
  const logs = ev.error_logs || [];
  const attributes = ev.attributes || [];
  const logsHref = `/logs?${query({ service: cause.service, start: report.start, end: report.end, severity: 'WARN' })}`;
  return h('li', {
    class: 'cause', style: `--chip:${serviceColor(cause.service)}`,
    dataset: { service: cause.service, operation: cause.operation, kind: cause.kind },
    'aria-label': `Suspect ${rank + 1}: ${label}, ${cause.kind}, explains ${pct(cause.score)} of bad traces`,
  },
  h('div', { class: 'cause-head' },
    h('span', { class: 'cause-rank', 'aria-hidden': 'true' }, String(rank + 1)),
    h('h3', {}, chip(cause.service), h('span', { class: 'cause-operation' }, cause.operation)),
    h('span', { class: `badge badge-${cause.kind === 'error' ? 'error' : 'latency'}` }, cause.kind),
    h('div', { class: 'cause-score' },
      h('span', { class: 'score-bar', 'aria-hidden': 'true' }, h('span', { style: `width:${Math.min(100, cause.score * 100)}%` })),
      h('span', {}, 'explains ', h('strong', {}, pct(cause.score)), ' of bad traces'))),
  ev.summary ? h('p', { class: 'cause-summary' }, ev.summary) : null,
  h('div', { class: 'cause-body' },
    numbers.length ? h('section', {}, h('h4', {}, 'Evidence'),
      h('dl', { class: 'cause-numbers' }, numbers.map(([term, value]) => h('div', {}, h('dt', {}, term), h('dd', {}, value))))) : null,
    attributes.length ? h('section', {}, h('h4', {}, 'Correlated attributes'),
      attributeTable(attributes, `Attribute values over-represented in the traces ${label} explains`)) : null,
    logs.length ? h('section', {}, h('h4', {}, 'Top error logs'),
      h('ul', { class: 'cause-logs' }, logs.map((log) => h('li', {},
        h('span', { class: 'log-count' }, `${formatCount(log.count)}×`), ' ', h('span', { class: 'log-body' }, log.message))))) : null,
    operations.length ? h('section', {}, h('h4', {}, 'Operations'),
      h('ul', { class: 'cause-operations' }, operations.map((o) => h('li', {},
        h('span', { class: 'mono' }, o.operation), h('span', { class: 'muted' }, ` ${plural(o.explained_traces, 'trace')}`))))) : null),
  h('div', { class: 'cause-foot' },
    cause.example_trace_ids?.length ? h('div', { class: 'examples' }, h('span', { class: 'muted' }, 'Example traces:'),
      cause.example_trace_ids.map((id) => h('a', {
        class: 'example-trace mono', href: `/trace/${id}`, title: id, 'aria-label': `Open example trace ${id}`,
      }, `${id.slice(0, 8)}…${id.slice(-8)}`))) : null,
    h('a', { class: 'cause-logs-link', href: logsHref }, `Warnings and errors of ${cause.service} in this window`)));
}

function attributeTable(attributes, caption) {
  return h('table', { class: 'data attr-table' },
    h('caption', { class: 'visually-hidden' }, caption),
    h('thead', {}, h('tr', {},
      h('th', { scope: 'col' }, 'Value'), h('th', { scope: 'col' }, 'In bad traces'), h('th', { scope: 'col' }, 'In healthy traces'))),
    h('tbody', {}, attributes.map((a) => h('tr', { dataset: { key: a.key, value: a.value } },
      h('td', { class: 'mono', title: pValue(a.p_value) || undefined }, `${a.key}=${a.value}`),
      h('td', {}, shareBar(a.bad_share, 'bad')),
      h('td', {}, shareBar(a.baseline_share, 'baseline'))))));
}

function shareBar(share, kind) {
  return h('span', { class: `share share-${kind}` },
    h('span', { class: 'share-track', 'aria-hidden': 'true' }, h('span', { style: `width:${Math.min(100, share * 100)}%` })),
    pct(share));
}

// ---------------------------------------------------------------------------
// Charts: shared geometry

const CHART_PAD = { left: 68, right: 18, top: 12, bottom: 26 };

/** The drawing width: the panel's own, so text in the SVG keeps its CSS size. */
function chartWidth(panel) {
  return Math.max(560, Math.floor((panel.clientWidth || 1000) - 28));
}

const TICK_STEPS_S = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800, 604800];

/** Round local times for an axis from `startUs` to `endUs`, at most `most` of them. */
function timeTicks(startUs, endUs, most = 8) {
  const span = (endUs - startUs) / 1e6;
  const step = (TICK_STEPS_S.find((candidate) => span / candidate <= most) || TICK_STEPS_S.at(-1)) * 1e6;
  const shift = -new Date(startUs / 1000).getTimezoneOffset() * 60e6;
  const ticks = [];
  for (let t = Math.ceil((startUs + shift) / step) * step - shift; t <= endUs; t += step) ticks.push(t);
  return ticks;
}

function timeAxis(x, startUs, endUs, height) {
  const span = (endUs - startUs) / 1e6;
  return s('g', { class: 'axis' }, timeTicks(startUs, endUs).map((t) => s('g', {},
    s('line', { x1: x(t), x2: x(t), y1: height - CHART_PAD.bottom, y2: height - CHART_PAD.bottom + 4 }),
    s('text', { x: x(t), y: height - 8, 'text-anchor': 'middle' }, clock(t, span)))));
}

/** An SVG path through the points, broken where a value is missing. */
function linePath(points) {
  let d = '';
  let open = false;
  for (const p of points) {
    if (p === null) { open = false; continue; }
    d += `${open ? 'L' : 'M'}${p[0].toFixed(1)},${p[1].toFixed(1)}`;
    open = true;
  }
  return d;
}

/** Points with no neighbour on either side: a line would not show them. */
function isolated(points) {
  return points.filter((p, i) => p && !points[i - 1] && !points[i + 1]);
}

// ---------------------------------------------------------------------------
// Latency

const PERCENTILES = [
  { key: 'p50_ns', label: 'p50', colour: '#15803d' },
  { key: 'p95_ns', label: 'p95', colour: '#b45309' },
  { key: 'p99_ns', label: 'p99', colour: '#7c3aed' },
];

async function showLatency(panel, service, between, signal) {
  const report = await withLoading(panel, signal, `the latency of ${service}`, (abort) =>
    getJson('/api/v1/analysis/latency', query({ service, ...between }), abort));
  if (!report) return;
  if (!report.requests) {
    fill(panel, notice('empty', `${service} served no requests in this window (${windowText(report.start, report.end)}). ` +
      'Widen the time range or choose another service.'));
    return;
  }
  const p99 = Math.max(...report.series.map((p) => p.p99_ns ?? 0));
  const max = Math.max(...report.heatmap.map((c) => c.count), 1);
  fill(panel,
    h('dl', { class: 'stats' },
      stat('Window', windowText(report.start, report.end), { class: 'stat-text' }),
      stat('Requests', formatCount(report.requests), { id: 'latency-requests' }),
      stat('Step', formatStep(report.step_seconds)),
      stat('Highest p99', formatDuration(p99))),
    h('section', { class: 'chart-card' },
      h('div', { class: 'chart-head' },
        h('h2', {}, `Request duration of ${service}`),
        h('span', { class: 'muted' }, 'requests per step and duration range (log scale)'),
        h('ul', { class: 'legend', 'aria-label': 'Legend' },
          h('li', {}, h('span', { class: 'key-ramp', 'aria-hidden': 'true' }), `1 to ${formatCount(max)} requests`),
          PERCENTILES.map((p) => h('li', {}, h('span', { class: 'key-line', style: `--c:${p.colour}`, 'aria-hidden': 'true' }), p.label)))),
      heatmap(report, service, chartWidth(panel))),
    h('section', { class: 'chart-card' },
      h('div', { class: 'chart-head' },
        h('h2', { id: 'latency-breakdown-title' }, 'Where the time goes'),
        h('span', { class: 'muted' }, `self time on the critical path, mean per request over ${plural(report.breakdown_sample, 'sampled request')}`)),
      breakdown(report)));
}

/** Light to dark blue by `t` in [0, 1]. */
function heat(t) {
  const from = [219, 230, 252];
  const to = [30, 58, 138];
  return `rgb(${from.map((c, i) => Math.round(c + (to[i] - c) * t)).join(',')})`;
}

function heatmap(report, service, width) {
  const height = 300;
  const pad = CHART_PAD;
  const [startUs, endUs] = [timeUs(report.start), timeUs(report.end)];
  const x = (us) => pad.left + ((us - startUs) / (endUs - startUs)) * (width - pad.left - pad.right);
  const buckets = [...report.buckets].sort((a, b) => a.index - b.index);
  if (!buckets.length) return notice('empty', 'No request durations to draw in this window.');
  const byIndex = new Map(buckets.map((b) => [b.index, b]));
  const [lo, hi] = [Math.log10(buckets[0].lower_ns), Math.log10(buckets.at(-1).upper_ns)];
  const bottom = height - pad.bottom;
  const y = (ns) => bottom - ((Math.min(hi, Math.max(lo, Math.log10(ns))) - lo) / (hi - lo)) * (bottom - pad.top);
  const stepUs = report.step_seconds * 1e6;
  const span = (endUs - startUs) / 1e6;
  const cells = report.heatmap.filter((c) => c.count > 0 && byIndex.has(c.bucket));
  const max = Math.max(...cells.map((c) => c.count), 1);
  const cellEls = cells.map((c) => {
    const b = byIndex.get(c.bucket);
    const t = timeUs(c.time);
    const [x0, x1] = [x(Math.max(startUs, t)), x(Math.min(endUs, t + stepUs))];
    const [y0, y1] = [y(b.upper_ns), y(b.lower_ns)];
    // A gap between columns while they are wide; narrow ones touch.
    const gap = x1 - x0 > 6 ? 1 : 0;
    return s('rect', {
      class: 'cell', x: x0.toFixed(1), y: y0.toFixed(1), width: Math.max(1, x1 - x0 - gap).toFixed(1), height: Math.max(1, y1 - y0 - 1).toFixed(1),
      fill: heat(0.15 + 0.85 * (Math.log1p(c.count) / Math.log1p(max))), 'data-count': c.count,
    }, s('title', {}, `${clock(t, span)}: ${plural(c.count, 'request')} of ${formatDuration(b.lower_ns)}–${formatDuration(b.upper_ns)}`));
  });
  const lines = PERCENTILES.map((p) => {
    const points = report.series.map((point) => (point[p.key] === null || point[p.key] === undefined
      ? null : [x(Math.min(endUs, timeUs(point.time) + stepUs / 2)), y(point[p.key])]));
    return s('g', { class: 'pline', style: `--c:${p.colour}` },
      s('path', { d: linePath(points) }),
      isolated(points).map(([px, py]) => s('circle', { cx: px, cy: py, r: 2.5 })));
  });
  const every = Math.ceil((buckets.length + 1) / 8);
  const bounds = [...buckets.map((b) => b.lower_ns), buckets.at(-1).upper_ns].filter((_, i) => i % every === 0);
  const yAxis = s('g', { class: 'axis' }, bounds.map((ns) => s('g', {},
    s('line', { x1: pad.left - 4, x2: pad.left, y1: y(ns), y2: y(ns) }),
    s('text', { x: pad.left - 7, y: y(ns) + 4, 'text-anchor': 'end' }, tidy(formatDuration(ns))))));
  const peak = report.series.reduce((worst, p) => ((p.p99_ns ?? -1) > (worst?.p99_ns ?? -1) ? p : worst), null);
  return s('svg', {
    id: 'latency-heatmap', class: 'chart heatmap', viewBox: `0 0 ${width} ${height}`, role: 'img',
    'data-cells': cellEls.length,
    'aria-label': `Heatmap of ${plural(report.requests, 'request')} to ${service} by time and duration, ` +
      `${formatDuration(buckets[0].lower_ns)} to ${formatDuration(buckets.at(-1).upper_ns)} on a log scale, ` +
      `with p50, p95 and p99 lines${peak ? `; the highest p99 is ${formatDuration(peak.p99_ns)} at ${clock(timeUs(peak.time), span)}` : ''}`,
  },
  s('rect', { class: 'plot-bg', x: pad.left, y: pad.top, width: width - pad.left - pad.right, height: bottom - pad.top }),
  s('g', { class: 'grid' }, bounds.map((ns) => s('line', { x1: pad.left, x2: width - pad.right, y1: y(ns), y2: y(ns) }))),
  s('g', { class: 'cells' }, cellEls),
  s('g', { class: 'plines', 'aria-hidden': 'true' }, lines),
  yAxis,
  timeAxis(x, startUs, endUs, height));
}

function breakdown(report) {
  if (!report.breakdown.length) {
    return notice('empty', 'No critical paths to break down: the sampled requests have no spans below them in this window.');
  }
  const top = Math.max(...report.breakdown.map((row) => row.share), 1e-9);
  return h('table', { id: 'latency-breakdown', class: 'data breakdown', 'aria-labelledby': 'latency-breakdown-title' },
    h('thead', {}, h('tr', {},
      h('th', { scope: 'col' }, 'Service / operation'),
      h('th', { scope: 'col' }, 'Share of the time'),
      h('th', { scope: 'col', class: 'num' }, 'Mean self time'),
      h('th', { scope: 'col', class: 'num' }, 'p99 self time'),
      h('th', { scope: 'col', class: 'num' }, 'On the path in'))),
    h('tbody', {}, report.breakdown.map((row) => h('tr', {
      class: 'breakdown-row', dataset: { service: row.service, operation: row.operation, share: row.share },
    },
    h('td', {}, chip(row.service), h('span', { class: 'mono' }, row.operation)),
    h('td', { class: 'share-cell' },
      h('span', { class: 'bd-bar', 'aria-hidden': 'true' },
        h('span', { style: `width:${(100 * row.share) / top}%;background:${serviceColor(row.service)}` })),
      h('span', { class: 'bd-share' }, pct(row.share))),
    h('td', { class: 'num' }, formatDuration(row.mean_ns)),
    h('td', { class: 'num' }, formatDuration(row.p99_ns)),
    h('td', { class: 'num' }, `${formatCount(row.on_path)} of ${formatCount(report.breakdown_sample)}`)))));
}

// ---------------------------------------------------------------------------
// Trends

const METRICS = [
  // `max` caps the axis; below `tiny` (a model's rounding noise) the values
  // count as 0 and the axis goes up to `flat`.
  { id: 'rate', title: 'Request rate', unit: 'requests per second', format: formatRate, max: Infinity, tiny: 1e-6, flat: 1 },
  { id: 'errors', title: 'Error rate', unit: 'share of requests with status ERROR', format: pct, max: 1, tiny: 1e-6, flat: 1 },
  { id: 'p95', title: 'p95 duration', unit: '95th percentile of request duration', format: formatDuration, max: Infinity, tiny: 1, flat: 1e6 },
];

const SEVERITIES = [
  ['TRACE', '#94a3b8'], ['DEBUG', '#64748b'], ['INFO', '#2563eb'], ['WARN', '#d97706'],
  ['ERROR', '#b42318'], ['FATAL', '#6b0f0a'], ['UNSPECIFIED', '#cbd5e1'],
];

async function showTrends(panel, service, between, signal) {
  const reports = await withLoading(panel, signal, `the trends of ${service}`, (abort) => Promise.all(METRICS.map((metric) =>
    getJson('/api/v1/analysis/trends', query({ service, metric: metric.id, ...between }), abort))));
  if (!reports) return;
  // One time axis for every chart, from the window's start to the furthest forecast.
  const startUs = timeUs(reports[0].start);
  const endUs = Math.max(...reports.map((r) => {
    const last = r.forecast?.points.at(-1);
    return last ? timeUs(last.time) + r.step_seconds * 1e6 : timeUs(r.end);
  }));
  const domain = { startUs, endUs, nowUs: timeUs(reports[0].end) };
  const width = chartWidth(panel);
  const windowStat = stat('Window', windowText(reports[0].start, reports[0].end), { class: 'stat-text' });
  if (!reports[0].series.some((p) => p.value > 0)) {
    fill(panel, h('dl', { class: 'stats' }, windowStat),
      notice('empty', `${service} served no requests in this window: no rate, errors or p95 to follow. ` +
        'Widen the time range or choose another service.'),
      logVolumeCard(reports[0], service, domain, width));
    return;
  }
  fill(panel,
    h('dl', { class: 'stats' },
      windowStat,
      stat('Step', formatStep(reports[0].step_seconds)),
      stat('Forecast to', reports.some((r) => r.forecast) ? formatTime(endUs).slice(11, 19) : 'none'),
      stat('Anomalies', formatCount(reports.reduce((n, r) => n + r.anomalies.length, 0)), { id: 'trend-anomalies' })),
    METRICS.map((metric, i) => trendCard(metric, reports[i], service, domain, width)),
    logVolumeCard(reports[0], service, domain, width));
}

function trendCard(metric, report, service, domain, width) {
  const last = [...report.series].reverse().find((p) => p.value !== null);
  const forecast = report.forecast;
  const titleId = `trend-${metric.id}-title`;
  return h('section', { class: 'chart-card trend-card', 'aria-labelledby': titleId },
    h('div', { class: 'chart-head' },
      h('h2', { id: titleId }, metric.title),
      h('span', { class: 'muted' }, metric.unit),
      last ? h('span', { class: 'latest' }, 'last ', h('strong', {}, metric.format(last.value))) : null,
      report.anomalies.length ? h('span', { class: 'badge badge-error' }, plural(report.anomalies.length, 'anomaly', 'anomalies')) : null,
      h('ul', { class: 'legend', 'aria-label': 'Legend' },
        h('li', {}, h('span', { class: 'key-line', style: '--c:var(--accent)', 'aria-hidden': 'true' }), 'observed'),
        forecast ? h('li', {}, h('span', { class: 'key-line key-dash', style: '--c:#6d28d9', 'aria-hidden': 'true' }),
          `forecast (${forecast.model})`) : null,
        forecast ? h('li', {}, h('span', { class: 'key-box', style: '--c:rgba(109,40,217,0.18)', 'aria-hidden': 'true' }),
          `${Math.round(forecast.level * 100)} % interval`) : null,
        h('li', {}, h('span', { class: 'key-dot', 'aria-hidden': 'true' }), 'anomaly'))),
    trendChart(metric, report, service, last, domain, width),
    report.forecast_note ? h('p', { class: 'forecast-note', id: `trend-${metric.id}-note` }, report.forecast_note) : null);
}

function trendChart(metric, report, service, last, domain, width) {
  const height = 170;
  const pad = CHART_PAD;
  const bottom = height - pad.bottom;
  const points = report.forecast?.points || [];
  const highest = (values) => Math.max(0, ...values.filter((v) => v !== null && Number.isFinite(v)));
  // The interval may widen far past the data; the axis follows the data and
  // cuts the band off at twice its height.
  const data = highest([...report.series.map((p) => p.value), ...points.map((p) => p.value), ...report.anomalies.map((a) => a.value)]);
  const band = Math.min(highest(points.map((p) => p.upper)), 2 * data);
  const top = Math.min(metric.max, Math.max(data, band) * 1.08);
  const ticks = niceTicks(top >= metric.tiny ? top : metric.flat);
  const axisTop = ticks.at(-1);
  const x = (us) => pad.left + ((us - domain.startUs) / (domain.endUs - domain.startUs)) * (width - pad.left - pad.right);
  const y = (v) => bottom - (Math.min(axisTop, Math.max(0, v)) / axisTop) * (bottom - pad.top);
  const observed = report.series.map((p) => (p.value === null ? null : [x(timeUs(p.time)), y(p.value)]));
  const measured = observed.filter(Boolean);
  const lastObserved = measured.at(-1);
  const forecastLine = points.map((p) => [x(timeUs(p.time)), y(p.value)]);
  const bandPath = points.length
    ? `M${points.map((p) => `${x(timeUs(p.time)).toFixed(1)},${y(p.upper).toFixed(1)}`).join('L')}` +
      `L${[...points].reverse().map((p) => `${x(timeUs(p.time)).toFixed(1)},${y(p.lower).toFixed(1)}`).join('L')}Z`
    : '';
  const span = (domain.endUs - domain.startUs) / 1e6;
  const anomalies = report.anomalies.map((a) => s('circle', {
    class: 'anomaly', cx: x(timeUs(a.time)), cy: y(a.value), r: 4.5,
  }, s('title', {}, `Anomaly at ${clock(timeUs(a.time), 0)}: ${metric.format(a.value)}, ` +
    `expected ${metric.format(a.expected)} (${metric.format(a.lower)}–${metric.format(a.upper)})`)));
  const lastText = last ? `; the last is ${metric.format(last.value)}` : '';
  const forecastText = points.length
    ? `; forecast ${plural(points.length, 'step')} ahead with a ${Math.round(report.forecast.level * 100)} % interval`
    : '; no forecast';
  return s('svg', {
    id: `trend-${metric.id}`, class: 'chart trend', viewBox: `0 0 ${width} ${height}`, role: 'img',
    'data-points': measured.length, 'data-forecast-points': points.length, 'data-anomalies': report.anomalies.length,
    'aria-label': `${metric.title} of ${service} per ${formatStep(report.step_seconds)} step: ` +
      `${plural(measured.length, 'measured point')}${lastText}${forecastText}; ${plural(report.anomalies.length, 'anomaly', 'anomalies')}`,
  },
  s('rect', { class: 'plot-bg', x: pad.left, y: pad.top, width: width - pad.left - pad.right, height: bottom - pad.top }),
  s('g', { class: 'grid' }, ticks.map((v) => s('line', { x1: pad.left, x2: width - pad.right, y1: y(v), y2: y(v) }))),
  s('g', { class: 'axis' }, ticks.map((v) => s('text', { x: pad.left - 7, y: y(v) + 4, 'text-anchor': 'end' }, tidy(metric.format(v))))),
  timeAxis(x, domain.startUs, domain.endUs, height),
  points.length ? s('g', { class: 'now', 'aria-hidden': 'true' },
    s('line', { x1: x(domain.nowUs), x2: x(domain.nowUs), y1: pad.top, y2: bottom }),
    s('text', { x: x(domain.nowUs) + 4, y: pad.top + 11 }, 'forecast →')) : null,
  bandPath ? s('path', { class: 'band', d: bandPath }) : null,
  forecastLine.length ? s('path', { class: 'forecast', d: linePath([lastObserved || null, ...forecastLine]) }) : null,
  s('path', { class: 'observed', d: linePath(observed) }),
  s('g', { class: 'observed-dots' }, isolated(observed).map(([px, py]) => s('circle', { cx: px, cy: py, r: 2.5 }))),
  s('g', { class: 'anomalies' }, anomalies));
}

function logVolumeCard(report, service, domain, width) {
  const title = () => [
    h('h2', { id: 'trend-logs-title' }, 'Log volume'),
    h('span', { class: 'muted' }, `records of ${service} per step, by severity`),
  ];
  if (!report.log_volume.length) {
    return h('section', { class: 'chart-card', 'aria-labelledby': 'trend-logs-title' }, h('div', { class: 'chart-head' }, title()),
      notice('empty', `${service} wrote no log records in this window.`));
  }
  const height = 150;
  const pad = CHART_PAD;
  const bottom = height - pad.bottom;
  const steps = new Map();
  const totals = new Map();
  for (const { time, severity, count } of report.log_volume) {
    const level = SEVERITIES.some(([name]) => name === severity) ? severity : 'UNSPECIFIED';
    if (!steps.has(time)) steps.set(time, new Map());
    steps.get(time).set(level, (steps.get(time).get(level) || 0) + count);
    totals.set(level, (totals.get(level) || 0) + count);
  }
  // At least 4, so small counts keep whole-number ticks.
  const ticks = niceTicks(Math.max(4, ...[...steps.values()].map((m) => [...m.values()].reduce((a, b) => a + b, 0))));
  const top = ticks.at(-1);
  const x = (us) => pad.left + ((us - domain.startUs) / (domain.endUs - domain.startUs)) * (width - pad.left - pad.right);
  const y = (v) => bottom - (v / top) * (bottom - pad.top);
  const stepUs = report.step_seconds * 1e6;
  const span = (domain.endUs - domain.startUs) / 1e6;
  const bars = [...steps].map(([time, counts]) => {
    const t = timeUs(time);
    const [x0, x1] = [x(t), x(Math.min(domain.nowUs, t + stepUs))];
    let base = 0;
    return s('g', {}, SEVERITIES.filter(([name]) => counts.has(name)).map(([name, colour]) => {
      const count = counts.get(name);
      const rect = s('rect', {
        x: x0.toFixed(1), width: Math.max(1, x1 - x0 - 1).toFixed(1), y: y(base + count).toFixed(1),
        height: Math.max(0.5, y(base) - y(base + count)).toFixed(1), fill: colour,
      }, s('title', {}, `${clock(t, span)}: ${plural(count, `${name} record`)}`));
      base += count;
      return rect;
    }));
  });
  const present = SEVERITIES.filter(([name]) => totals.has(name));
  return h('section', { class: 'chart-card', 'aria-labelledby': 'trend-logs-title' },
    h('div', { class: 'chart-head' }, title(),
      h('ul', { class: 'legend', 'aria-label': 'Legend' }, present.map(([name, colour]) => h('li', {},
        h('span', { class: 'key-box', style: `--c:${colour}`, 'aria-hidden': 'true' }), `${name} ${formatCount(totals.get(name))}`)))),
    s('svg', {
      id: 'trend-logs', class: 'chart log-volume', viewBox: `0 0 ${width} ${height}`, role: 'img',
      'data-steps': steps.size,
      'aria-label': `Log records of ${service} per step by severity: ${present.map(([name]) => `${formatCount(totals.get(name))} ${name}`).join(', ')}`,
    },
    s('rect', { class: 'plot-bg', x: pad.left, y: pad.top, width: width - pad.left - pad.right, height: bottom - pad.top }),
    s('g', { class: 'grid' }, ticks.map((v) => s('line', { x1: pad.left, x2: width - pad.right, y1: y(v), y2: y(v) }))),
    s('g', { class: 'axis' }, ticks.map((v) => s('text', { x: pad.left - 7, y: y(v) + 4, 'text-anchor': 'end' }, formatCount(v)))),
    timeAxis(x, domain.startUs, domain.endUs, height),
    s('g', { class: 'bars' }, bars)));
}
