// The trace page: one trace as a waterfall (Jaeger's timeline), with each
// log shown under the span that wrote it, the selected span's details beside
// the waterfall, a table of all the trace's logs, and above them the answer
// of the trace's root-cause analysis ("Why is this slow / failing?").
//
// The module has two halves. First, pure functions turn the API's answer
// into a model: the span tree (spans whose parent is missing go to the top
// level), depths, the critical path, service colours, and logs attached to
// spans. Then rendering: the waterfall builds DOM only for the rows in view,
// so a trace of 50,000 spans costs the browser no more than one of 50.

import {
  h, fill, notice, query, formatDuration, formatTime, timeUs, isTraceId, sqlString, PALETTE, serviceSlot, ariaTabs,
} from '../util.js';
import { getJson, withLoading, errorNotice, ApiError } from '../api.js';

/** Height of a waterfall row in px; `.wf-row` in style.css has the same. */
const ROW_HEIGHT = 26;
/** Rows built beyond each edge of the view, so fast scrolling shows no gaps. */
const OVERSCAN = 10;
/** Indentation per tree level in px, capped so deep traces keep room for names. */
const INDENT = 14;
const MAX_INDENT_LEVELS = 24;
/** Event and log marks drawn on one bar at most; more would be noise. */
const MAX_MARKS = 40;
/** Characters of a log body put into a one-line row; the details show all. */
const ROW_BODY_CHARS = 400;

const SEVERITY_BUCKETS = ['TRACE', 'DEBUG', 'INFO', 'WARN', 'ERROR', 'FATAL'];

// ---------------------------------------------------------------------------
// Model: pure functions over the API's JSON, no DOM.

/**
 * The trace as the page draws it. Nodes keep the API's span object as
 * `span`; every node and log has a `row` (its line in the waterfall) with
 * its tree level and position among its siblings, for screen readers.
 */
export function buildTrace(data, traceId = data.trace_id) {
  const nodes = (data.spans || []).map(spanNode);
  const byId = new Map();
  for (const node of nodes) if (!byId.has(node.id)) byId.set(node.id, node);
  const topLevel = linkParents(nodes, byId);
  breakCycles(nodes, topLevel);
  topLevel.sort(byStart);
  for (const node of nodes) node.children.sort(byStart);
  const root = topLevel.find((node) => !node.span.parent_span_id) || topLevel[0] || null;
  const logs = attachLogs(data.logs || [], byId, root);
  const depth = placeRows(topLevel);
  for (const [node, segments] of root ? criticalPath(root) : []) node.critical = segments;

  const startUs = nodes.reduce((min, node) => Math.min(min, node.startUs), Infinity);
  const endUs = nodes.reduce((max, node) => Math.max(max, node.endUs), -Infinity);
  const counts = new Map();
  for (const node of nodes) counts.set(node.service, (counts.get(node.service) || 0) + 1);
  const colours = serviceColours(counts.keys());
  return {
    traceId,
    nodes,
    byId,
    topLevel,
    root,
    logs,
    depth,
    startUs: nodes.length ? startUs : NaN,
    endUs: nodes.length ? endUs : NaN,
    durationUs: nodes.length ? endUs - startUs : 0,
    colours,
    services: [...counts].sort(([a], [b]) => a.localeCompare(b)).map(([name, count]) => ({ name, count, colour: colours.get(name) })),
    errorCount: nodes.filter((node) => node.error).length,
    orphanCount: nodes.filter((node) => node.orphan).length,
    truncated: Boolean(data.truncated),
  };
}

function spanNode(span, index) {
  const startUs = timeUs(span.start_time);
  let endUs = timeUs(span.end_time);
  if (!Number.isFinite(endUs)) endUs = startUs + (Number(span.duration_ns) || 0) / 1000;
  const node = {
    index,
    span,
    id: span.span_id,
    service: span.service_name || 'unknown service',
    name: span.name || '',
    startUs,
    endUs,
    durationNs: Number.isFinite(span.duration_ns) ? span.duration_ns : (endUs - startUs) * 1000,
    error: span.status_code === 'ERROR',
    parent: null,
    orphan: false,
    children: [],
    logs: [],
    critical: null,
    row: null,
  };
  node.row = { kind: 'span', node, level: 1, posinset: 1, setsize: 1 };
  return node;
}

function byStart(a, b) {
  return a.startUs - b.startUs || a.index - b.index;
}

/** Hangs each span under its parent; answers the spans left at the top level. */
function linkParents(nodes, byId) {
  const topLevel = [];
  for (const node of nodes) {
    const parentId = node.span.parent_span_id;
    const parent = parentId ? byId.get(parentId) : undefined;
    if (parent && parent !== node) {
      node.parent = parent;
      parent.children.push(node);
    } else {
      // A parent id we do not have: its span was lost or is still in flight.
      node.orphan = Boolean(parentId);
      topLevel.push(node);
    }
  }
  return topLevel;
}

/**
 * Spans whose parent chain loops back on itself (bad data) are not reachable
 * from the top level; lifting one span of each loop to the top makes the rest
 * a tree, so every span is drawn once.
 */
function breakCycles(nodes, topLevel) {
  const seen = new Set();
  const visit = (start) => {
    const stack = [start];
    while (stack.length) {
      const node = stack.pop();
      seen.add(node);
      for (const child of node.children) stack.push(child);
    }
  };
  topLevel.forEach(visit);
  for (const node of nodes) {
    if (seen.has(node)) continue;
    const siblings = node.parent.children;
    siblings.splice(siblings.indexOf(node), 1);
    node.parent = null;
    node.orphan = true;
    topLevel.push(node);
    visit(node);
  }
}

/** Logs in time order, each attached to its span, or to the root when its span is not in the trace. */
function attachLogs(rawLogs, byId, root) {
  const logs = rawLogs
    .map((log, index) => ({ index, log, timeUs: timeUs(log.time), severity: severityOf(log), node: null, row: null }))
    .sort((a, b) => (a.timeUs || 0) - (b.timeUs || 0) || a.index - b.index);
  for (const entry of logs) {
    entry.node = (entry.log.span_id && byId.get(entry.log.span_id)) || root;
    entry.row = { kind: 'log', entry, node: entry.node, level: 1, posinset: 1, setsize: 1 };
    entry.node?.logs.push(entry);
  }
  return logs;
}

/**
 * Sets every row's tree level and its position among its siblings (a span's
 * logs come first, then its child spans); answers the deepest span level.
 * Iterative, as a trace can be thousands of levels deep.
 */
function placeRows(topLevel) {
  const place = (items, level) => items.forEach((item, i) => {
    Object.assign(item.row, { level, posinset: i + 1, setsize: items.length });
  });
  place(topLevel, 1);
  let depth = 0;
  const stack = [...topLevel];
  while (stack.length) {
    const node = stack.pop();
    depth = Math.max(depth, node.row.level);
    place([...node.logs, ...node.children], node.row.level + 1);
    for (const child of node.children) stack.push(child);
  }
  return depth;
}

/**
 * The critical path under `root`: the chain of work the trace's end waited
 * on. Walking back from the root's end, the child that finished last before
 * the cursor was what its parent waited for; it joins the path, the walk
 * goes into it, and then the cursor moves to that child's start and the
 * parent's remaining children are considered. Children are clipped to their
 * parent's time, so a child outliving its parent counts only while the
 * parent ran. Answers a Map from each span on the path to the time segments
 * (`[startUs, endUs]`) in which it, not a child, was the one doing the work;
 * a span whose whole time is covered by its children has an empty list.
 */
export function criticalPath(root) {
  const path = new Map();
  const frame = (node, start, end) => {
    path.set(node, []);
    return {
      node,
      start,
      end,
      cursor: end,
      next: 0,
      children: node.children
        .filter((child) => child.startUs <= end && child.endUs >= start)
        .map((child) => ({ node: child, start: Math.max(child.startUs, start), end: Math.min(child.endUs, end) }))
        .sort((a, b) => b.end - a.end || b.start - a.start),
    };
  };
  const stack = [frame(root, root.startUs, root.endUs)];
  while (stack.length) {
    const top = stack[stack.length - 1];
    // Children sorted by end, latest first: those ending after the cursor
    // ran alongside work already on the path, and the cursor only moves back.
    while (top.next < top.children.length && top.children[top.next].end > top.cursor) top.next++;
    if (top.next < top.children.length) {
      const child = top.children[top.next++];
      if (top.cursor > child.end) path.get(top.node).push([child.end, top.cursor]);
      top.cursor = Math.min(top.cursor, child.start);
      stack.push(frame(child.node, child.start, child.end));
    } else {
      if (top.cursor > top.start) path.get(top.node).push([top.start, top.cursor]);
      stack.pop();
    }
  }
  for (const segments of path.values()) segments.reverse();
  return path;
}

/**
 * A colour per service. The name's hash picks it, so a service keeps its
 * colour from trace to trace; a clash within one trace moves to the next
 * free colour (in name order, so the outcome does not depend on span order).
 */
export function serviceColours(names) {
  const taken = new Set();
  const colours = new Map();
  for (const name of [...names].sort()) {
    let slot = serviceSlot(name);
    for (let tries = 0; tries < PALETTE.length && taken.has(slot); tries++) slot = (slot + 1) % PALETTE.length;
    taken.add(slot);
    colours.set(name, PALETTE[slot]);
  }
  return colours;
}


/** A log's severity: `bucket` (from the OTLP number, four numbers a level) picks the colour, `label` is shown. */
function severityOf(log) {
  const n = Number(log.severity_number);
  const bucket = n >= 1 && n <= 24 ? SEVERITY_BUCKETS[Math.floor((n - 1) / 4)] : String(log.severity_text || '').toUpperCase();
  return { bucket, label: log.severity_text || bucket || '–' };
}

function bodyText(body) {
  if (body === null || body === undefined) return '';
  return typeof body === 'string' ? body : JSON.stringify(body);
}

function selfCriticalUs(node) {
  return (node.critical || []).reduce((sum, [start, end]) => sum + end - start, 0);
}

function expandable(node) {
  return node.children.length > 0 || node.logs.length > 0;
}

// ---------------------------------------------------------------------------
// Page

const NOT_FOUND = Symbol('not found');

export async function render(main, ctx) {
  const raw = (ctx.pathParam || '').trim();
  if (!isTraceId(raw)) {
    fill(main, h('h1', {}, 'Trace'),
      notice('error', `“${raw}” is not a trace id: a trace id is 32 hexadecimal characters.`));
    return;
  }
  const traceId = raw.toLowerCase();
  const status = h('div');
  fill(main, h('h1', {}, 'Trace ', h('code', {}, traceId)), status);
  const data = await withLoading(status, ctx.signal, `trace ${traceId}`, async (signal) => {
    try {
      return await getJson(`/api/v1/traces/${traceId}`, null, signal);
    } catch (error) {
      // withLoading shows other errors as the server said them; a missing
      // trace deserves its own explanation.
      if (error instanceof ApiError && error.status === 404) return NOT_FOUND;
      throw error;
    }
  });
  if (!data || ctx.signal.aborted) return;
  if (data === NOT_FOUND) {
    fill(status, notFoundNotice(traceId, ctx));
    return;
  }
  const arrived = performance.now();
  const model = buildTrace(data, traceId);
  if (!model.nodes.length) {
    fill(status, notFoundNotice(traceId, ctx, model.logs.length));
    return;
  }
  mountTrace(main, model, ctx, arrived);
}

function notFoundNotice(traceId, ctx, logCount = 0) {
  const retry = () => ctx.navigate(location.pathname + location.search, { replace: true });
  return notice('error',
    h('strong', {}, `Trace ${traceId} not found`),
    h('p', {}, logCount
      ? `weft has ${logCount} log${logCount === 1 ? '' : 's'} with this trace id but no spans. `
      : 'weft has no spans with this trace id. ',
    'If the trace was sent moments ago it may not be ingested yet (data becomes queryable about a second after the ' +
    'collector acknowledges it), or the service may not have flushed its spans yet; otherwise the id may be wrong, ' +
    'or the trace was not sampled or has passed retention.'),
    h('div', { class: 'actions' },
      h('button', { type: 'button', class: 'secondary', onclick: retry }, 'Try again'),
      h('a', { href: '/search' }, 'Search traces')));
}

/** Draws a loaded trace: header, tabs, waterfall, details and logs. */
function mountTrace(main, model, ctx, arrived) {
  const details = h('aside', { id: 'span-details', class: 'panel span-details', 'aria-label': 'Span details' });
  const showDetails = (node) => fill(details, node
    ? spanDetails(node, model, {
      // The details are redrawn, so the focus goes back to the tree.
      select: (other) => waterfall.select(other, { reveal: true, focus: true }),
      close: () => {
        waterfall.select(null);
        waterfall.focusActive();
      },
    })
    : h('p', { class: 'muted' }, 'Select a span (click it, or press Enter on it) to see its attributes, events, links and logs.'));

  const waterfall = new Waterfall(model, {
    onSelect(node) {
      showDetails(node);
      if (!ctx.signal.aborted) setUrl((url) => (node ? url.searchParams.set('span', node.id) : url.searchParams.delete('span')));
    },
  });

  const timelinePanel = h('div', { class: 'trace-timeline' },
    timelineToolbar(model, waterfall),
    h('div', { class: 'trace-body' }, waterfall.el, details));
  const logsPanel = h('div', { class: 'trace-logs-panel' });
  let logsBuilt = false;
  const tabs = ariaTabs({
    label: 'Trace views',
    tabId: (id) => `tab-${id}`,
    panelId: (id) => `panel-${id}`,
    defs: [
      { id: 'timeline', label: 'Timeline', panel: timelinePanel },
      { id: 'logs', label: `Logs (${model.logs.length})`, panel: logsPanel },
    ],
    onShow: (id) => {
    if (id === 'logs' && !logsBuilt) {
      // Built on first view: a trace can carry thousands of logs.
      logsBuilt = true;
      fill(logsPanel, logsTable(model, (node) => {
        tabs.show('timeline');
        waterfall.select(node, { reveal: true, focus: true });
      }));
    }
    if (id === 'timeline') {
      waterfall.fitHeight();
      waterfall.schedulePaint();
    }
    if (!ctx.signal.aborted) setUrl((url) => { url.hash = id === 'logs' ? 'logs' : ''; });
    },
  });

  const why = whyPanel(model, {
    select(node) {
      tabs.show('timeline');
      waterfall.select(node, { reveal: true, focus: true });
    },
    resized: () => waterfall.fitHeight(),
  });

  document.title = `${model.root.service}: ${model.root.name} · Trace · weft`;
  fill(main, traceHeader(model), why.el, tabs.el, timelinePanel, logsPanel);
  tabs.show(ctx.hash === 'logs' ? 'logs' : 'timeline');

  const wanted = ctx.params.get('span');
  const node = wanted && model.nodes.find((n) => n.id === wanted);
  if (node) waterfall.select(node, { reveal: true, silent: true });
  showDetails(node || null);
  if (wanted && !node) details.prepend(notice('info', `Span ${wanted} is not in this trace.`));
  waterfall.paint();

  requestAnimationFrame(() => setTimeout(() => {
    if (!ctx.signal.aborted) main.dataset.renderMs = (performance.now() - arrived).toFixed(1);
  }, 0));
  // Asked once the waterfall is drawn, so the analysis never holds it up.
  why.load(ctx.signal);
  ctx.signal.addEventListener('abort', () => {
    waterfall.destroy();
    delete main.dataset.renderMs;
  });
}

/** Changes the page URL in place: selection and tab are state worth sharing, but not worth a reload. */
function setUrl(change) {
  const url = new URL(location.href);
  change(url);
  if (url.href !== location.href) history.replaceState(history.state, '', url);
}

function traceHeader(model) {
  const { root } = model;
  const idText = h('code', { class: 'trace-id' }, model.traceId);
  const copied = h('span', { class: 'copy-status', role: 'status' });
  let clearCopied;
  const copy = async () => {
    copied.textContent = await copyText(model.traceId, idText);
    clearTimeout(clearCopied);
    clearCopied = setTimeout(() => { copied.textContent = ''; }, 4000);
  };
  const sql = `SELECT * FROM spans WHERE trace_id = ${sqlString(model.traceId)} ORDER BY start_time`;
  const fact = (label, value, attrs = {}) => h('div', {}, h('dt', {}, label), h('dd', attrs, String(value)));
  return h('header', { class: 'trace-header' },
    h('h1', {}, `${root.service}: ${root.name}`),
    h('div', { class: 'trace-ident' },
      h('span', { class: 'muted' }, 'Trace'), idText,
      h('button', { type: 'button', class: 'secondary small', onclick: copy }, 'Copy trace id'),
      copied,
      h('a', { href: `/sql?q=${encodeURIComponent(sql)}` }, 'Open in SQL')),
    h('dl', { class: 'facts' },
      fact('Started', formatTime(model.startUs)),
      fact('Duration', formatDuration(model.durationUs * 1000)),
      fact('Spans', model.nodes.length, { id: 'trace-span-count' }),
      fact('Services', model.services.length),
      fact('Errors', model.errorCount, { id: 'trace-error-count', class: model.errorCount ? 'has-errors' : undefined }),
      fact('Depth', model.depth)),
    model.orphanCount
      ? h('p', { class: 'trace-warning' },
        `${model.orphanCount} span${model.orphanCount === 1 ? '' : 's'} name${model.orphanCount === 1 ? 's' : ''} a parent that is not in this trace; ` +
        'shown at the top level (the parent may be lost or not ingested yet).')
      : null,
    model.truncated
      ? h('p', { class: 'trace-warning' }, `weft sent only the first ${model.nodes.length} spans of this trace; open it in SQL to see them all.`)
      : null);
}

/**
 * "Why is this slow / failing?": the trace's root-cause analysis
 * (`/api/v1/analysis/rca?trace_id=`). A closed panel whose one line names the
 * top suspect; opened, it shows the suspects with their evidence and logs,
 * where the error started, and the critical path with each span's self time.
 * A span in it is a button that selects that span in the waterfall.
 */
function whyPanel(model, { select, resized }) {
  const headline = h('span', { class: 'why-headline' }, h('span', { class: 'muted' }, 'Analysing…'));
  const body = h('div', { class: 'why-body' }, h('p', { class: 'muted' }, 'Analysing the trace…'));
  const el = h('details', { id: 'trace-why', class: 'why-panel', ontoggle: resized },
    h('summary', {},
      h('span', { class: 'why-title' }, model.errorCount ? 'Why is this failing?' : 'Why is this slow?'),
      headline),
    body);
  const spanButton = (step) => {
    const node = model.byId.get(step.span_id);
    const label = [chipFor(model, step.service), h('span', { class: 'why-op' }, step.operation)];
    return node
      ? h('button', {
        type: 'button', class: 'link-button why-span', onclick: () => select(node),
        'aria-label': `Select span ${step.service}: ${step.operation} in the timeline`,
      }, label)
      : h('span', { class: 'why-span' }, label);
  };
  const load = async (signal) => {
    let report;
    try {
      report = await getJson('/api/v1/analysis/rca', query({ trace_id: model.traceId }), signal);
    } catch (error) {
      if (error.name === 'AbortError') return;
      fill(headline, h('span', { class: 'muted' }, 'The analysis failed: open for the error.'));
      fill(body, errorNotice(error));
      return;
    }
    const [top] = report.causes;
    fill(headline, top
      ? [chipFor(model, top.service), h('span', { class: 'why-op' }, top.operation), kindBadge(top.kind),
        h('span', { class: 'muted why-short' }, causeShort(top))]
      : h('span', { class: 'muted' }, 'No suspect stands out.'));
    fill(body,
      h('section', { class: 'why-causes' },
        h('h3', {}, report.causes.length > 1 ? 'Suspects, most likely first' : 'Most likely cause'),
        report.causes.length
          ? h('ol', { class: 'why-cause-list' }, report.causes.map((cause) => whyCause(cause, report, model, spanButton)))
          : h('p', { class: 'muted' }, 'No span failed and no span stands out on the critical path.')),
      h('section', { class: 'why-origin' },
        h('h3', {}, 'Where the error started'),
        report.error_origin
          ? h('p', {}, spanButton(report.error_origin), h('br'),
            h('span', { class: 'muted' }, `at +${formatDuration(report.error_origin.offset_ns)}, ` +
              `ran ${formatDuration(report.error_origin.duration_ns)}`))
          : h('p', { class: 'muted' }, 'No span failed.')),
      h('section', { class: 'why-path' },
        h('h3', {}, 'Critical path'),
        h('p', { class: 'muted why-hint' }, 'Self time: how long each span, not one it called, held the trace up.'),
        h('ol', { class: 'why-path-list' }, [...report.critical_path]
          .sort((a, b) => a.offset_ns - b.offset_ns)
          .map((step) => h('li', {},
            spanButton(step),
            h('span', { class: 'why-bar', 'aria-hidden': 'true' },
              h('span', { style: `width:${report.duration_ns ? Math.min(100, (100 * step.self_ns) / report.duration_ns) : 0}%` })),
            h('span', { class: 'why-self' }, formatDuration(step.self_ns)))))));
    if (el.open) resized();
  };
  return { el, load };
}

function whyCause(cause, report, model, spanButton) {
  const ev = cause.evidence || {};
  const startUs = timeUs(report.start);
  return h('li', { class: 'why-cause', dataset: { service: cause.service, operation: cause.operation, kind: cause.kind } },
    h('div', { class: 'why-cause-head' },
      cause.span_id ? spanButton({ span_id: cause.span_id, service: cause.service, operation: cause.operation })
        : [chipFor(model, cause.service), h('span', { class: 'why-op' }, cause.operation)],
      kindBadge(cause.kind)),
    ev.summary ? h('p', { class: 'why-summary' }, ev.summary) : null,
    h('dl', { class: 'why-facts' },
      ev.status_message ? h('div', {}, h('dt', {}, 'Status'), h('dd', {}, ev.status_message)) : null,
      ev.self_time_ns !== undefined
        ? h('div', {}, h('dt', {}, 'Self time'), h('dd', {}, `${formatDuration(ev.self_time_ns)}` +
          `${ev.share_of_trace !== undefined ? `, ${Math.round(ev.share_of_trace * 100)} % of the trace` : ''}`))
        : null),
    cause.logs?.length ? h('ul', { class: 'why-logs', 'aria-label': `Logs of ${cause.service}: ${cause.operation}` },
      cause.logs.map((log) => h('li', {},
        h('span', { class: 'muted' }, `+${formatDuration((timeUs(log.time) - startUs) * 1000)}`), ' ',
        h('span', { class: `sev sev-${String(log.severity).toUpperCase()}` }, log.severity), ' ',
        h('span', { class: 'log-body' }, log.body)))) : null);
}

function causeShort(cause) {
  const ev = cause.evidence || {};
  if (ev.status_message) return ev.status_message;
  if (ev.share_of_trace !== undefined) return `${Math.round(ev.share_of_trace * 100)} % of the trace’s time`;
  return ev.summary || '';
}

function kindBadge(kind) {
  return h('span', { class: `badge ${kind === 'error' ? 'badge-error' : 'badge-latency'}` }, kind);
}

function chipFor(model, service) {
  return h('span', { class: 'service-chip', style: `--chip:${model.colours.get(service) || PALETTE[serviceSlot(service)]}` }, service);
}

/** Copies `text` to the clipboard; answers what happened, for a status line. */
async function copyText(text, shownIn) {
  try {
    await navigator.clipboard.writeText(text);
    return 'Copied';
  } catch {
    // No clipboard API (plain http on a remote host) or no permission:
    // select the text so the usual shortcut copies it.
    const range = document.createRange();
    range.selectNodeContents(shownIn);
    getSelection().removeAllRanges();
    getSelection().addRange(range);
    return 'Selected: press Ctrl+C (⌘C) to copy';
  }
}

function timelineToolbar(model, waterfall) {
  const critical = h('input', {
    type: 'checkbox', id: 'wf-critical', checked: true,
    onchange: () => waterfall.el.classList.toggle('show-critical', critical.checked),
  });
  return h('div', { class: 'wf-toolbar' },
    h('button', { type: 'button', class: 'secondary small', onclick: () => waterfall.expandAll() }, 'Expand all'),
    h('button', { type: 'button', class: 'secondary small', onclick: () => waterfall.collapseAll() }, 'Collapse all'),
    h('label', { class: 'wf-check', for: critical.id }, critical, 'Highlight critical path'),
    h('ul', { class: 'wf-legend', 'aria-label': 'Legend' },
      model.services.map((service) => h('li', { class: 'service-chip', style: `--chip:${service.colour}` },
        service.name, h('span', { class: 'muted' }, ` ${service.count}`))),
      h('li', { class: 'wf-legend-key' }, h('span', { class: 'wf-key-critical', 'aria-hidden': 'true' }), 'critical path'),
      h('li', { class: 'wf-legend-key' }, h('span', { class: 'wf-err', 'aria-hidden': 'true' }, '!'), 'error')));
}

// ---------------------------------------------------------------------------
// Waterfall

/**
 * The span tree on a time axis. Rows are absolutely placed in a container as
 * tall as all of them; only those in view (plus some overscan) exist in the
 * DOM, rebuilt on scroll in an animation frame. The flat list of visible rows
 * is recomputed only when a span is collapsed or expanded.
 *
 * Keyboard: the tree is one tab stop (roving tabindex). The active row, the
 * one that takes focus, is always kept in the DOM even when scrolled away.
 */
class Waterfall {
  constructor(model, { onSelect }) {
    this.model = model;
    this.onSelect = onSelect;
    this.collapsed = new Set();
    this.selected = null;
    this.rows = [];
    this.positions = new Map();
    this.pool = new Map(); // row → { el, index, active, selected, expanded }
    this.rowOf = new WeakMap(); // element → row, for the delegated handlers
    this.frame = 0;

    this.ruler = ruler(model);
    this.rowsEl = h('div', {
      class: 'wf-rows', role: 'tree', 'aria-label': `Spans and logs of trace ${model.traceId}`,
      onclick: (event) => this.onClick(event),
      onkeydown: (event) => this.onKeyDown(event),
      onfocusin: (event) => this.onFocusIn(event),
    });
    this.el = h('div', {
      id: 'waterfall', class: 'waterfall show-critical', dataset: { spanCount: String(model.nodes.length) },
    }, this.ruler, this.rowsEl);
    this.el.addEventListener('scroll', () => this.schedulePaint(), { passive: true });
    this.resize = new ResizeObserver(() => this.schedulePaint());
    this.resize.observe(this.el);
    this.onWindowResize = () => this.fitHeight();
    window.addEventListener('resize', this.onWindowResize);

    this.flatten();
    this.active = this.rows[0];
  }

  destroy() {
    cancelAnimationFrame(this.frame);
    this.resize.disconnect();
    window.removeEventListener('resize', this.onWindowResize);
  }

  /**
   * Lets the waterfall (and the details beside it, through `--wf-max`) fill
   * the window below its top, so a big trace scrolls inside it and the
   * header stays in view. Needs the waterfall to be laid out.
   */
  fitHeight() {
    if (!this.el.offsetParent) return; // hidden: the Logs tab is showing
    const top = this.el.getBoundingClientRect().top + window.scrollY;
    this.el.parentElement.style.setProperty('--wf-max', `${Math.max(320, Math.floor(window.innerHeight - top - 16))}px`);
  }

  /** The rows the collapse state leaves visible, in tree order (a span, its logs, its children). */
  flatten() {
    const rows = [];
    const stack = [...this.model.topLevel].reverse();
    while (stack.length) {
      const node = stack.pop();
      rows.push(node.row);
      if (this.collapsed.has(node)) continue;
      for (const entry of node.logs) rows.push(entry.row);
      for (let i = node.children.length - 1; i >= 0; i--) stack.push(node.children[i]);
    }
    this.rows = rows;
    this.positions = new Map(rows.map((row, i) => [row, i]));
    this.rowsEl.style.height = `${rows.length * ROW_HEIGHT}px`;
    this.el.dataset.rowCount = String(rows.length);
    // A row hidden under a collapsed span hands the focus to that span.
    let row = this.active;
    while (row && !this.positions.has(row)) row = row.kind === 'log' ? row.node.row : row.node.parent?.row;
    this.active = row || rows[0];
  }

  schedulePaint() {
    if (!this.frame) this.frame = requestAnimationFrame(() => { this.frame = 0; this.paint(); });
  }

  /** Builds the rows in view, drops those out of it, and brings the kept ones up to date. */
  paint() {
    const top = this.el.scrollTop;
    const view = Math.max(0, this.el.clientHeight - this.rulerHeight());
    const first = Math.max(0, Math.floor(top / ROW_HEIGHT) - OVERSCAN);
    const last = Math.min(this.rows.length, Math.ceil((top + view) / ROW_HEIGHT) + OVERSCAN);
    const wanted = [];
    const activeIndex = this.positions.get(this.active);
    if (activeIndex < first) wanted.push(activeIndex);
    for (let i = first; i < last; i++) wanted.push(i);
    if (activeIndex >= last) wanted.push(activeIndex);
    const keep = new Set(wanted.map((i) => this.rows[i]));
    for (const [row, entry] of this.pool) {
      if (!keep.has(row)) {
        entry.el.remove();
        this.pool.delete(row);
      }
    }
    // Kept rows are already in tree order (collapsing never reorders rows),
    // so new ones are slotted in between; moving a focused row would blur it.
    let next = this.rowsEl.firstChild;
    for (const index of wanted) {
      const row = this.rows[index];
      let entry = this.pool.get(row);
      if (entry) {
        next = entry.el.nextSibling;
      } else {
        const el = row.kind === 'span' ? spanRow(row, this.model) : logRow(row, this.model);
        entry = { el, index: -1 };
        this.rowOf.set(el, row);
        this.pool.set(row, entry);
        this.rowsEl.insertBefore(el, next);
      }
      this.sync(row, entry, index);
    }
  }

  /** Writes a row's position and state to its element, touching only what changed. */
  sync(row, entry, index) {
    const { el } = entry;
    if (entry.index !== index) {
      el.style.transform = `translateY(${index * ROW_HEIGHT}px)`;
      entry.index = index;
    }
    const active = row === this.active;
    if (entry.active !== active) {
      el.tabIndex = active ? 0 : -1;
      entry.active = active;
    }
    if (row.kind !== 'span') return;
    const selected = row.node === this.selected;
    if (entry.selected !== selected) {
      el.setAttribute('aria-selected', String(selected));
      entry.selected = selected;
    }
    if (!expandable(row.node)) return;
    const expanded = !this.collapsed.has(row.node);
    if (entry.expanded !== expanded) {
      el.setAttribute('aria-expanded', String(expanded));
      const toggle = el.querySelector('.wf-toggle');
      toggle.setAttribute('aria-expanded', String(expanded));
      toggle.setAttribute('aria-label', `${expanded ? 'Collapse' : 'Expand'} ${row.node.service}: ${row.node.name}`);
      entry.expanded = expanded;
    }
  }

  syncAll() {
    for (const [row, entry] of this.pool) this.sync(row, entry, entry.index);
  }

  rulerHeight() {
    return this.ruler.offsetHeight || 28;
  }

  setExpanded(node, expanded) {
    if (expanded) this.collapsed.delete(node);
    else this.collapsed.add(node);
    this.flatten();
    this.paint();
  }

  expandAll() {
    this.collapsed.clear();
    this.flatten();
    this.paint();
  }

  collapseAll() {
    for (const node of this.model.nodes) if (expandable(node)) this.collapsed.add(node);
    this.flatten();
    this.paint();
  }

  /**
   * Selects a span (or nothing) and tells the page. `reveal` opens its
   * ancestors, makes it the active row and scrolls it to the middle;
   * `focus` then focuses it; `silent` skips the callback, for a selection
   * the page applies itself.
   */
  select(node, { reveal = false, focus = false, silent = false } = {}) {
    this.selected = node;
    if (node && reveal) {
      let opened = false;
      for (let up = node.parent; up; up = up.parent) opened = this.collapsed.delete(up) || opened;
      if (opened) this.flatten();
      this.active = node.row;
      this.scrollTo(this.positions.get(node.row), true);
      this.paint();
    }
    this.syncAll();
    if (node && focus) this.focusActive();
    if (!silent) this.onSelect(node);
  }

  /** Scrolls row `index` into view: to the middle, or just enough. */
  scrollTo(index, center = false) {
    const top = index * ROW_HEIGHT;
    const view = this.el.clientHeight - this.rulerHeight();
    if (center) this.el.scrollTop = top - (view - ROW_HEIGHT) / 2;
    else if (top < this.el.scrollTop) this.el.scrollTop = top;
    else if (top + ROW_HEIGHT > this.el.scrollTop + view) this.el.scrollTop = top + ROW_HEIGHT - view;
  }

  /** Moves the focus to row `index` (clamped), scrolling it into view. */
  moveTo(index) {
    const i = Math.max(0, Math.min(this.rows.length - 1, index));
    this.active = this.rows[i];
    this.scrollTo(i);
    this.paint();
    this.focusActive();
  }

  focusActive() {
    this.pool.get(this.active)?.el.focus({ preventScroll: true });
  }

  onFocusIn(event) {
    const row = this.rowOf.get(event.target.closest('.wf-row'));
    if (!row || row === this.active) return;
    this.active = row;
    this.syncAll();
  }

  onClick(event) {
    const row = this.rowOf.get(event.target.closest('.wf-row'));
    if (!row) return;
    if (event.target.closest('.wf-toggle')) {
      this.setExpanded(row.node, this.collapsed.has(row.node));
    } else {
      this.active = row;
      this.select(row.node);
    }
  }

  onKeyDown(event) {
    const rowEl = event.target.closest('.wf-row');
    const row = this.rowOf.get(rowEl);
    if (!row || event.altKey || event.ctrlKey || event.metaKey) return;
    // Enter and Space on the toggle button are the button's own.
    if (event.target !== rowEl && (event.key === 'Enter' || event.key === ' ')) return;
    const index = this.positions.get(row);
    const page = Math.max(1, Math.floor((this.el.clientHeight - this.rulerHeight()) / ROW_HEIGHT) - 1);
    const { node } = row;
    const open = row.kind === 'span' && expandable(node) && !this.collapsed.has(node);
    switch (event.key) {
      case 'ArrowDown': this.moveTo(index + 1); break;
      case 'ArrowUp': this.moveTo(index - 1); break;
      case 'PageDown': this.moveTo(index + page); break;
      case 'PageUp': this.moveTo(index - page); break;
      case 'Home': this.moveTo(0); break;
      case 'End': this.moveTo(this.rows.length - 1); break;
      case 'ArrowRight':
        if (row.kind === 'span' && expandable(node)) {
          if (open) this.moveTo(index + 1);
          else this.setExpanded(node, true);
        }
        break;
      case 'ArrowLeft':
        if (open) this.setExpanded(node, false);
        else if (row.kind === 'log') this.moveTo(this.positions.get(node.row));
        else if (node.parent) this.moveTo(this.positions.get(node.parent.row));
        break;
      case 'Enter':
      case ' ':
        this.select(node);
        break;
      default:
        return;
    }
    event.preventDefault();
  }
}

/** Percent of the trace's width at time `us`. */
function percentAt(model, us) {
  return model.durationUs > 0 ? ((us - model.startUs) / model.durationUs) * 100 : 0;
}

function offsetText(model, us) {
  return `+${formatDuration((us - model.startUs) * 1000)}`;
}

function indentStyle(level) {
  return `padding-left:${6 + Math.min(level - 1, MAX_INDENT_LEVELS) * INDENT}px`;
}

/** The time ruler: five ticks over the trace's duration, aligned with the bars' track. */
function ruler(model) {
  const ticks = [0, 0.25, 0.5, 0.75, 1].map((f) => h('span', { class: 'wf-tick', style: `left:${f * 100}%` },
    formatDuration(model.durationUs * 1000 * f)));
  return h('div', { class: 'wf-ruler', 'aria-hidden': 'true' },
    h('div', { class: 'wf-ruler-label' }, 'Service: operation'),
    h('div', { class: 'wf-ruler-track' }, ticks));
}

function spanRow(row, model) {
  const { node } = row;
  const colour = model.colours.get(node.service);
  const left = percentAt(model, node.startUs);
  const width = Math.max(0, percentAt(model, node.endUs) - left);
  const duration = formatDuration(node.durationNs);

  const bar = h('div', {
    class: 'wf-bar', style: `left:${left}%;width:${width}%;--c:${colour}`,
    title: `${node.service}: ${node.name}\n${duration} from ${offsetText(model, node.startUs)}`,
  });
  const spanUs = node.endUs - node.startUs;
  if (node.critical && spanUs > 0) {
    for (const [start, end] of node.critical) {
      bar.append(h('span', {
        class: 'wf-crit',
        style: `left:${((start - node.startUs) / spanUs) * 100}%;width:${((end - start) / spanUs) * 100}%`,
      }));
    }
  }
  const marks = [...(node.span.events || []).map((event) => timeUs(event.time)), ...node.logs.map((entry) => entry.timeUs)]
    .filter(Number.isFinite).slice(0, MAX_MARKS)
    .map((us) => h('span', { class: 'wf-mark', style: `left:${Math.min(100, Math.max(0, percentAt(model, us)))}%` }));
  // The duration sits right of the bar; left of it when the bar reaches the
  // right edge; inside it when the bar spans nearly the whole trace.
  const end = left + width;
  const label = end <= 75 ? h('span', { class: 'wf-dur', style: `left:${end}%` }, duration)
    : left >= 20 ? h('span', { class: 'wf-dur', style: `right:${100 - left}%` }, duration)
      : h('span', { class: 'wf-dur wf-dur-inside', style: `right:${100 - end}%` }, duration);

  const expandButton = expandable(node)
    ? h('button', { type: 'button', class: 'wf-toggle', tabindex: '-1', 'aria-expanded': 'true' }, h('span', { 'aria-hidden': 'true' }, '▸'))
    : h('span', { class: 'wf-toggle-space' });
  return h('div', {
    class: 'wf-row span-row', role: 'treeitem', tabindex: '-1',
    'aria-level': row.level, 'aria-setsize': row.setsize, 'aria-posinset': row.posinset,
    'aria-label': `${node.service}: ${node.name}, ${duration}${node.error ? ', error' : ''}${node.critical ? ', on the critical path' : ''}`,
    dataset: { spanId: node.id, service: node.service, error: String(node.error), critical: String(Boolean(node.critical)) },
  },
  h('div', { class: 'wf-label', style: indentStyle(row.level) },
    expandButton,
    node.error ? h('span', { class: 'wf-err', title: 'Error', 'aria-hidden': 'true' }, '!') : null,
    h('span', { class: 'wf-service', style: `--c:${colour}` }, node.service),
    h('span', { class: 'wf-name' }, node.name)),
  h('div', { class: 'wf-track' }, bar, marks, label));
}

function logRow(row, model) {
  const { entry } = row;
  const body = bodyText(entry.log.body);
  const line = body.length > ROW_BODY_CHARS ? `${body.slice(0, ROW_BODY_CHARS)}…` : body;
  return h('div', {
    class: 'wf-row log-row', role: 'treeitem', tabindex: '-1',
    'aria-level': row.level, 'aria-setsize': row.setsize, 'aria-posinset': row.posinset,
    'aria-label': `Log, ${entry.severity.label}, ${offsetText(model, entry.timeUs)}: ${line}`,
    dataset: { spanId: row.node.id },
  },
  h('div', { class: 'wf-label', style: indentStyle(row.level) },
    h('span', { class: 'wf-toggle-space' }),
    h('span', { class: `sev sev-${entry.severity.bucket}` }, entry.severity.label),
    h('span', { class: 'wf-offset' }, offsetText(model, entry.timeUs))),
  h('div', { class: 'wf-track' }, h('span', { class: 'wf-logbody' }, line)));
}

// ---------------------------------------------------------------------------
// Span details and the logs table

function spanDetails(node, model, { select, close }) {
  const { span } = node;
  const parent = node.parent
    ? h('button', { type: 'button', class: 'link-button mono', onclick: () => select(node.parent), 'aria-label': `Select parent span ${node.parent.name}` }, node.parent.id)
    : span.parent_span_id ? [h('code', {}, span.parent_span_id), ' (not in this trace)'] : 'none (root span)';
  const critical = node.critical
    ? `yes: ${formatDuration(selfCriticalUs(node) * 1000)} of its own time`
    : 'no';
  const facts = [
    ['Service', h('span', { class: 'service-chip', style: `--chip:${model.colours.get(node.service)}` }, node.service)],
    ['Operation', span.name],
    ['Kind', span.kind || 'UNSPECIFIED'],
    ['Span id', h('code', {}, node.id)],
    ['Parent id', parent],
    ['Start', [formatTime(node.startUs), ' ', h('span', { class: 'muted' }, `(${offsetText(model, node.startUs)})`)]],
    ['Duration', formatDuration(node.durationNs)],
    ['Status', [h('span', { class: node.error ? 'badge badge-error' : 'badge' }, span.status_code || 'UNSET'),
      span.status_message ? ` ${span.status_message}` : null]],
    ['Critical path', critical],
    ['Scope', `${span.scope_name || '–'}${span.scope_version ? ` ${span.scope_version}` : ''}`],
    span.trace_state ? ['Trace state', h('code', {}, span.trace_state)] : null,
  ].filter(Boolean);

  const events = span.events || [];
  const links = span.links || [];
  return h('div', {},
    h('div', { class: 'details-head' },
      h('h2', {}, node.name || '(unnamed span)'),
      h('button', { type: 'button', class: 'secondary small', onclick: close, 'aria-label': 'Close span details' }, 'Close')),
    h('dl', { class: 'span-facts' }, facts.map(([label, value]) => h('div', {}, h('dt', {}, label), h('dd', {}, value)))),
    section('Attributes', kvTable(span.attributes, 'Span attributes')),
    section('Resource attributes', kvTable(span.resource_attributes, 'Resource attributes')),
    events.length ? section(`Events (${events.length})`, h('ul', { class: 'detail-list' }, events.map((event) => h('li', {},
      h('div', {}, h('span', { class: 'muted' }, offsetText(model, timeUs(event.time))), ' ', h('strong', {}, event.name)),
      kvTable(event.attributes, `Attributes of event ${event.name}`, true))))) : null,
    links.length ? section(`Links (${links.length})`, h('ul', { class: 'detail-list' }, links.map((link) => spanLink(link, model, select)))) : null,
    section(`Logs (${node.logs.length})`, node.logs.length
      ? h('ul', { class: 'detail-list' }, node.logs.map((entry) => detailLog(entry, node, model)))
      : h('p', { class: 'muted' }, 'No logs for this span.')));
}

function section(title, content) {
  return h('section', {}, h('h3', {}, title), content);
}

/** Attributes as a two-column table, keys sorted; `quiet` prints nothing for none. */
function kvTable(object, caption, quiet = false) {
  const entries = Object.entries(object || {}).sort(([a], [b]) => a.localeCompare(b));
  if (!entries.length) return quiet ? null : h('p', { class: 'muted' }, 'None.');
  return h('table', { class: 'data kv' },
    h('caption', { class: 'visually-hidden' }, caption),
    h('tbody', {}, entries.map(([key, value]) => h('tr', {},
      h('th', { scope: 'row' }, key),
      h('td', {}, typeof value === 'string' ? value : JSON.stringify(value))))));
}

function spanLink(link, model, select) {
  const same = link.trace_id === model.traceId && model.byId.get(link.span_id);
  const target = same
    ? h('button', { type: 'button', class: 'link-button', onclick: () => select(same) }, `span ${link.span_id} in this trace (${same.name})`)
    : isTraceId(link.trace_id)
      ? h('a', { href: `/trace/${link.trace_id}?span=${encodeURIComponent(link.span_id || '')}` }, `trace ${link.trace_id}, span ${link.span_id}`)
      : h('code', {}, `${link.trace_id} ${link.span_id}`);
  return h('li', {}, target,
    link.trace_state ? h('div', { class: 'muted' }, `trace state ${link.trace_state}`) : null,
    kvTable(link.attributes, 'Link attributes', true));
}

function detailLog(entry, node, model) {
  const { log } = entry;
  return h('li', { class: 'detail-log' },
    h('div', {},
      h('span', { class: 'muted', title: formatTime(entry.timeUs) }, offsetText(model, entry.timeUs)), ' ',
      h('span', { class: `sev sev-${entry.severity.bucket}` }, entry.severity.label),
      log.service_name && log.service_name !== node.service ? ` ${log.service_name}` : null,
      log.span_id !== node.id ? h('span', { class: 'muted' }, log.span_id ? ` (span ${log.span_id} is not in this trace)` : ' (no span)') : null),
    h('div', { class: 'log-body' }, bodyText(log.body)),
    kvTable(log.attributes, 'Log attributes', true));
}

function logsTable(model, pickSpan) {
  if (!model.logs.length) {
    return notice('empty', 'No logs carry this trace id. Logs join a trace when the SDK writes them with the active span’s trace id.');
  }
  return h('table', { class: 'data trace-logs' },
    h('caption', { class: 'visually-hidden' }, 'Logs of this trace, in time order'),
    h('thead', {}, h('tr', {},
      ['Time', 'Offset', 'Service', 'Severity', 'Body', 'Span'].map((title) => h('th', { scope: 'col', class: title === 'Offset' ? 'num' : undefined }, title)))),
    h('tbody', {}, model.logs.map((entry) => {
      const { log } = entry;
      const node = log.span_id && model.byId.get(log.span_id);
      const span = node
        ? h('button', { type: 'button', class: 'link-button', onclick: () => pickSpan(node), 'aria-label': `Show span ${node.service}: ${node.name} in the timeline` },
          node.name || node.id)
        : log.span_id ? h('code', { title: 'This span is not in the trace' }, log.span_id) : h('span', { class: 'muted' }, '–');
      return h('tr', { dataset: { spanId: log.span_id || '' } },
        h('td', { class: 'mono nowrap' }, formatTime(entry.timeUs)),
        h('td', { class: 'num nowrap' }, offsetText(model, entry.timeUs)),
        h('td', {}, log.service_name || ''),
        h('td', {}, h('span', { class: `sev sev-${entry.severity.bucket}` }, entry.severity.label)),
        h('td', { class: 'log-body' }, bodyText(log.body)),
        h('td', {}, span));
    })));
}
