// A known CRM-shaped workload, sent to weft as OTLP/JSON over HTTP exactly as
// an OpenTelemetry exporter would: crm-mobile → crm-conductor →
// crm-salesforce and crm-database, every fourth request failing in the
// database, with the services' log records carrying trace and span ids.
// Plus one 5,000-span trace to measure the waterfall on a big trace.

const SERVER = 2;
const INTERNAL = 1;
const STATUS_ERROR = 2;

export const REQUESTS = 24;
export const FAILING = 6; // every fourth request
export const BIG_TRACE_SPANS = 5000;

const hex = (n, width) => n.toString(16).padStart(width, '0');
export const traceId = (i) => `c0de${hex(i, 28)}`;
export const spanId = (i, j) => `${hex(i, 8)}${hex(j, 8)}`;
export const bigTraceId = `b19${hex(5000, 29)}`;

const attrs = (object) => Object.entries(object).map(([key, value]) => ({
  key,
  value: typeof value === 'number' ? { intValue: String(value) } : { stringValue: String(value) },
}));

function span(service, s) {
  return { service, span: s };
}

/** The spans and logs of the workload, timed just before `nowMs`. */
export function crmWorkload(nowMs) {
  const spans = [];
  const logs = [];
  const ns = (ms) => (BigInt(Math.round(ms * 1000)) * 1000n).toString();
  for (let i = 0; i < REQUESTS; i++) {
    const failing = i % 4 === 0;
    const t0 = nowMs - 60_000 - i * 15_000;
    const tier = i % 3 === 0 ? 'gold' : 'silver';
    const dbMs = failing ? 900 : 20 + (i % 5) * 4;
    const id = traceId(i);
    const mk = (service, j, parent, name, start, end, attributes, error) => span(service, {
      traceId: id, spanId: spanId(i, j), parentSpanId: parent ? spanId(i, parent) : '',
      name, kind: name === 'transform account' ? INTERNAL : SERVER,
      startTimeUnixNano: ns(t0 + start), endTimeUnixNano: ns(t0 + end),
      attributes: attrs(attributes),
      status: error ? { code: STATUS_ERROR, message: error } : {},
    });
    const total = 60 + dbMs;
    spans.push(
      mk('crm-mobile', 1, 0, 'GET /api/accounts/{id}', 0, total, {
        'http.request.method': 'GET', 'http.route': '/api/accounts/{id}',
        'http.response.status_code': failing ? 500 : 200, 'customer.tier': tier,
      }, failing ? 'upstream failed' : null),
      mk('crm-conductor', 2, 1, 'sync account', 5, total - 5, { 'customer.tier': tier }, failing ? 'crm-database failed' : null),
      mk('crm-conductor', 3, 2, 'transform account', 8, 14, { 'crm.format': 'salesforce-v2' }),
      mk('crm-salesforce', 4, 2, 'GET /services/data/accounts', 15, 45, { 'http.request.method': 'GET', 'http.response.status_code': 200 }),
      // Concurrent with the salesforce call, as the conductor fans out.
      mk('crm-database', 5, 2, 'SELECT accounts', 20, 20 + dbMs, {
        'db.system': 'sqlite', 'db.query.text': 'SELECT * FROM accounts WHERE id = ?',
      }, failing ? 'query timeout' : null),
    );
    const log = (service, j, at, severityNumber, severityText, body) => ({
      service,
      record: {
        timeUnixNano: ns(t0 + at), severityNumber, severityText, body: { stringValue: body },
        traceId: id, spanId: spanId(i, j), attributes: attrs({ 'customer.tier': tier }),
      },
    });
    if (failing) {
      logs.push(
        log('crm-database', 5, 20 + dbMs - 1, 13, 'WARN', `slow query: SELECT accounts took ${dbMs}ms`),
        log('crm-conductor', 2, total - 6, 17, 'ERROR', `timeout waiting for crm-database after ${dbMs}ms in conductor`),
      );
    } else {
      logs.push(log('crm-conductor', 2, 6, 9, 'INFO', `synced account ${i} for ${tier} customer`));
    }
  }
  return { spans, logs };
}

/**
 * One trace of BIG_TRACE_SPANS spans: a tree where each span has up to
 * eight children, over two services of its own (so the CRM numbers above
 * stay exact).
 */
export function bigTrace(nowMs) {
  const spans = [];
  const t0 = BigInt(nowMs - 30_000) * 1_000_000n;
  const children = 8;
  for (let j = 0; j < BIG_TRACE_SPANS; j++) {
    const parent = j === 0 ? null : Math.floor((j - 1) / children);
    const depth = Math.floor(Math.log(j * (children - 1) + 1) / Math.log(children));
    const start = t0 + BigInt(depth * 2_000_000 + (j % children) * 100_000);
    const end = start + BigInt(Math.max(200_000, 20_000_000 - depth * 4_000_000));
    spans.push(span(j % 2 ? 'bulk-worker' : 'bulk-sync', {
      traceId: bigTraceId, spanId: spanId(0xb16, j), parentSpanId: parent === null ? '' : spanId(0xb16, parent),
      name: `import batch ${j}`, kind: INTERNAL,
      startTimeUnixNano: start.toString(), endTimeUnixNano: end.toString(),
      attributes: attrs({ 'batch.index': j }),
      status: {},
    }));
  }
  return { spans, logs: [] };
}

/** Posts spans and logs to weft's OTLP/HTTP receiver (`http://host:port`). */
export async function send(otlpUrl, { spans, logs }) {
  const byService = (items, key) => {
    const groups = new Map();
    for (const item of items) {
      if (!groups.has(item.service)) groups.set(item.service, []);
      groups.get(item.service).push(item[key]);
    }
    return [...groups];
  };
  const resource = (service) => ({ attributes: attrs({ 'service.name': service, 'service.version': '2.3.1' }) });
  const post = async (path, body) => {
    const response = await fetch(`${otlpUrl}${path}`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body),
    });
    const text = await response.text();
    if (!response.ok || text.includes('rejected')) throw new Error(`POST ${path}: ${response.status} ${text}`);
  };
  if (spans.length) {
    await post('/v1/traces', {
      resourceSpans: byService(spans, 'span').map(([service, list]) => ({
        resource: resource(service), scopeSpans: [{ scope: { name: 'crm' }, spans: list }],
      })),
    });
  }
  if (logs.length) {
    await post('/v1/logs', {
      resourceLogs: byService(logs, 'record').map(([service, list]) => ({
        resource: resource(service), scopeLogs: [{ scope: { name: 'crm' }, logRecords: list }],
      })),
    });
  }
}
