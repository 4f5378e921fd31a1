// Logs: full-text search over log bodies (the same query language as SQL's
// text_match: words, "phrases", AND, OR, NOT, parentheses), newest first, with
// the matches highlighted and each line linked to its trace and span.

import { getJson, withLoading, serviceOptions } from '../api.js';
import {
  h, fill, field, notice, query, timeRangeControl, timeWindow, timeUs, formatTime, serviceColor,
} from '../util.js';

const SEVERITIES = ['', 'TRACE', 'DEBUG', 'INFO', 'WARN', 'ERROR', 'FATAL'];
const PAGE_SIZE = 50;

export async function render(main, ctx) {
  const { params, signal } = ctx;
  const q = h('input', {
    id: 'logs-q', name: 'q', type: 'search', value: params.get('q') || '', spellcheck: 'false',
    placeholder: 'timeout AND conductor', 'aria-describedby': 'logs-q-hint',
  });
  const service = h('select', { id: 'logs-service', name: 'service' }, h('option', { value: '' }, 'All services'));
  const severity = h('select', { id: 'logs-severity', name: 'severity' },
    SEVERITIES.map((level) => h('option', { value: level, selected: level === (params.get('severity') || '').toUpperCase() },
      level ? `${level} and above` : 'Any severity')));
  const traceId = h('input', { id: 'logs-trace-id', name: 'trace_id', value: params.get('trace_id') || '', spellcheck: 'false', placeholder: 'any' });
  const range = timeRangeControl(params, 'logs');
  const form = h('form', { class: 'panel', 'aria-label': 'Search logs' },
    h('h1', {}, 'Search logs'),
    field('Text', q, 'Words, "exact phrases", AND, OR, NOT, (parentheses)'),
    field('Service', service),
    field('Severity', severity),
    field('Trace id', traceId),
    range.el,
    h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Search')));
  const results = h('section', { id: 'logs-results', 'aria-label': 'Log records found' });
  fill(main, h('div', { class: 'layout-sidebar' }, form, results));

  const pageUrl = (offset) => `/logs?${query({
    q: q.value.trim(), service: service.value, severity: severity.value, trace_id: traceId.value.trim(),
    ...range.read(), offset: offset || '',
  })}`;
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    ctx.navigate(pageUrl(0));
  });
  serviceOptions(service, params.get('service') || '', signal);

  const offset = Math.max(0, Number(params.get('offset')) || 0);
  const between = timeWindow(params);
  const found = await withLoading(results, signal, 'logs', (abort) => getJson('/api/v1/logs', query({
    q: params.get('q'), service: params.get('service'), severity: params.get('severity'),
    trace_id: params.get('trace_id'), start: between.start, end: between.end,
    // One more than a page tells whether a next page exists.
    limit: PAGE_SIZE + 1, offset,
  }), abort));
  if (!found) return;
  const logs = found.logs.slice(0, PAGE_SIZE);
  const more = found.logs.length > PAGE_SIZE;
  const highlight = highlighter(params.get('q') || '');
  const pager = () => h('nav', { class: 'pager', 'aria-label': 'Pages of results' },
    h('a', { href: pageUrl(Math.max(0, offset - PAGE_SIZE)), class: 'page-prev', hidden: offset === 0 }, '← Newer'),
    h('span', { id: 'logs-range' }, logs.length ? `Records ${offset + 1}–${offset + logs.length}` : ''),
    h('a', { href: pageUrl(offset + PAGE_SIZE), class: 'page-next', hidden: !more }, 'Older →'));
  if (!logs.length) {
    fill(results, notice('empty', offset
      ? 'No more records.'
      : 'No log records match. Widen the time range or loosen the query; words match whole words, case-insensitively.'));
    return;
  }
  fill(results, pager(),
    h('div', { class: 'log-list', role: 'list' }, logs.map((log) => logLine(log, highlight))),
    pager());
}

function logLine(log, highlight) {
  const severity = (log.severity_text || '').toUpperCase() || severityName(log.severity_number);
  const us = timeUs(log.time);
  const traceLink = log.trace_id
    ? h('a', {
      class: 'trace-link', href: `/trace/${log.trace_id}${log.span_id ? `?span=${log.span_id}` : ''}`,
      'aria-label': `Open trace ${log.trace_id}`,
    }, 'trace')
    : h('span', {});
  return h('div', { class: 'log-line', role: 'listitem', dataset: { traceId: log.trace_id || '', spanId: log.span_id || '' } },
    h('time', { datetime: log.time }, formatTime(us)),
    h('span', { class: `sev sev-${severityName(log.severity_number)}` }, severity || '–'),
    h('span', { class: 'service-chip', style: `--chip:${serviceColor(log.service_name)}` }, log.service_name),
    h('span', { class: 'body' }, highlight(log.body ?? '')),
    traceLink);
}

/** The level a severity number falls in, as OpenTelemetry ranges them. */
function severityName(number) {
  if (!number) return '';
  return ['TRACE', 'DEBUG', 'INFO', 'WARN', 'ERROR', 'FATAL'][Math.min(5, Math.floor((number - 1) / 4))];
}

/**
 * Marks what the query matched: every word and phrase not under NOT, as
 * whole words, case-insensitively — the index's own tokenisation (runs of
 * letters and digits, lowercased).
 */
export function highlighter(text) {
  const terms = [];
  const re = /"([^"]*)"|\(|\)|([^\s()"]+)/g;
  let negate = false;
  for (let m = re.exec(text); m; m = re.exec(text)) {
    const word = m[2];
    if (word === 'NOT') { negate = true; continue; }
    if (word === 'AND' || word === 'OR' || m[0] === '(' || m[0] === ')') { if (m[0] !== '(') negate = false; continue; }
    const tokens = (m[1] ?? word).match(/[\p{L}\p{N}]+/gu) || [];
    if (!negate && tokens.length) terms.push(tokens);
    negate = false;
  }
  if (!terms.length) return (body) => body;
  const escape = (t) => t.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const pattern = new RegExp(
    `(?<![\\p{L}\\p{N}])(?:${terms.map((tokens) => tokens.map(escape).join('[^\\p{L}\\p{N}]+')).join('|')})(?![\\p{L}\\p{N}])`,
    'giu');
  return (body) => {
    const parts = [];
    let last = 0;
    for (const m of body.matchAll(pattern)) {
      if (m.index > last) parts.push(body.slice(last, m.index));
      parts.push(h('mark', {}, m[0]));
      last = m.index + m[0].length;
    }
    parts.push(body.slice(last));
    return parts;
  };
}
