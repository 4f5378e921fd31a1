// Browser tests of the web explorer: real Chromium, driven by Playwright,
// against a real `weft serve` that tests/ui_browser.rs started and that this
// file fills through OTLP/HTTP. Each test clicks through a page as a user
// would and checks what is on the screen.
//
// Environment: WEFT_URL (query port), WEFT_OTLP_HTTP (OTLP/HTTP receiver),
// WEFT_CHROMIUM (browser executable), WEFT_SCREENSHOTS (optional directory
// for one screenshot per page).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import {
  crmWorkload, bigTrace, send, traceId, spanId, bigTraceId, REQUESTS, FAILING, BIG_TRACE_SPANS,
} from './workload.mjs';

const base = process.env.WEFT_URL;
const otlp = process.env.WEFT_OTLP_HTTP;
const screenshots = process.env.WEFT_SCREENSHOTS;
const failingTrace = traceId(0);

let browser;
let page;
const pageErrors = [];

before(async () => {
  assert.ok(base && otlp, 'WEFT_URL and WEFT_OTLP_HTTP must be set (tests/ui_browser.rs sets them)');
  const now = Date.now();
  await send(otlp, crmWorkload(now));
  await send(otlp, bigTrace(now));
  browser = await chromium.launch({
    executablePath: process.env.WEFT_CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const context = await browser.newContext({ viewport: { width: 1400, height: 900 }, acceptDownloads: true });
  page = await context.newPage();
  page.setDefaultTimeout(15_000);
  page.on('pageerror', (error) => pageErrors.push(error.message));
});

after(async () => {
  await browser?.close();
});

async function shot(name) {
  if (!screenshots) return;
  mkdirSync(screenshots, { recursive: true });
  await page.screenshot({ path: join(screenshots, `${name}.png`) });
}

function noPageErrors() {
  assert.deepEqual(pageErrors.splice(0), [], 'the page threw');
}

test('search: filter by service and tag, read the list, open a trace from the scatter plot', async () => {
  await page.goto(`${base}/search`);
  await page.selectOption('#search-service', 'crm-mobile');
  await page.fill('#search-tags', 'http.response.status_code=500');
  await page.fill('#search-limit', '50');
  await page.click('button:has-text("Find traces")');
  await page.waitForURL(/service=crm-mobile/);
  assert.match(page.url(), /tags=http.response.status_code%3D500/);
  await page.waitForSelector('#search-count');
  assert.equal(await page.textContent('#search-count'), `${FAILING} traces`);
  const items = page.locator('.trace-item');
  assert.equal(await items.count(), FAILING);
  for (const item of await items.all()) {
    assert.match(await item.textContent(), /crm-mobile: GET \/api\/accounts\/\{id\}/);
    assert.match(await item.locator('.badge-error').textContent(), /3 errors/);
    assert.match(await item.textContent(), /5 spans/);
  }
  assert.equal(await page.locator('.scatter circle.error').count(), FAILING);

  // The unfiltered last hour holds every request and the big trace.
  await page.goto(`${base}/search?limit=100`);
  await page.waitForSelector('#search-count');
  assert.equal(await page.textContent('#search-count'), `${REQUESTS + 1} traces`);
  await page.selectOption('#search-sort', 'spans');
  assert.equal(await page.locator('.trace-item').first().getAttribute('data-trace-id'), bigTraceId);
  await shot('search');

  const dot = page.locator(`.scatter circle[data-trace-id="${failingTrace}"]`);
  await dot.click();
  await page.waitForURL(`${base}/trace/${failingTrace}`);
  await page.waitForSelector('#waterfall');
  noPageErrors();
});

test('trace: waterfall with errors, critical path, logs under their span, span details', async () => {
  await page.goto(`${base}/trace/${failingTrace}`);
  await page.waitForSelector('#waterfall');
  assert.equal((await page.textContent('#trace-span-count')).trim(), '5');
  assert.equal((await page.textContent('#trace-error-count')).trim(), '3');
  assert.equal(await page.getAttribute('#waterfall', 'data-span-count'), '5');

  const row = (j) => page.locator(`.span-row[data-span-id="${spanId(0, j)}"]`);
  assert.equal(await page.locator('.span-row[data-error="true"]').count(), 3);
  assert.equal(await row(5).getAttribute('data-error'), 'true');
  assert.equal(await row(4).getAttribute('data-error'), 'false');
  // The request waited on the database: root, conductor, the transform before
  // the fan-out and the database are on the critical path; the salesforce
  // call ran alongside the database call and finished first, so it is not.
  for (const j of [1, 2, 3, 5]) assert.equal(await row(j).getAttribute('data-critical'), 'true', `span ${j}`);
  assert.equal(await row(4).getAttribute('data-critical'), 'false');

  // The conductor's error log sits under the conductor's row, above the next span's.
  const logRow = page.locator(`.log-row[data-span-id="${spanId(0, 2)}"]`).filter({ hasText: 'timeout waiting for crm-database' });
  assert.equal(await logRow.count(), 1);
  const top = async (locator) => (await locator.boundingBox()).y;
  assert.ok(await top(logRow) > await top(row(2)), 'log below its span');
  const databaseLog = page.locator(`.log-row[data-span-id="${spanId(0, 5)}"]`);
  assert.match(await databaseLog.textContent(), /slow query/);
  assert.ok(await top(databaseLog) > await top(row(5)), 'database log below the database span');

  await row(5).click();
  await page.waitForURL(/span=/);
  const details = page.locator('#span-details');
  await details.waitFor();
  const text = await details.textContent();
  for (const expected of ['crm-database', 'SELECT accounts', 'query timeout', 'db.system', 'sqlite', 'service.version']) {
    assert.ok(text.includes(expected), `details show ${expected}`);
  }
  await shot('trace');

  await page.click('#tab-logs');
  const logsPanel = await page.textContent('[role="tabpanel"]:not([hidden])');
  assert.match(logsPanel, /slow query: SELECT accounts took 900ms/);
  assert.match(logsPanel, /timeout waiting for crm-database after 900ms in conductor/);

  // Collapsing the conductor hides its three children and their logs.
  await page.click('#tab-timeline');
  const rowsBefore = Number(await page.getAttribute('#waterfall', 'data-row-count'));
  await row(2).locator('[aria-expanded]').first().click();
  const rowsAfter = Number(await page.getAttribute('#waterfall', 'data-row-count'));
  assert.ok(rowsAfter <= rowsBefore - 3, `collapsed: ${rowsBefore} → ${rowsAfter} rows`);
  assert.equal(await row(5).count(), 0);
  noPageErrors();
});

test('trace: keyboard moves through the waterfall', async () => {
  await page.goto(`${base}/trace/${failingTrace}`);
  await page.waitForSelector('#waterfall');
  await page.locator(`.span-row[data-span-id="${spanId(0, 1)}"]`).focus();
  await page.keyboard.press('ArrowDown');
  const focused = await page.evaluate(() => document.activeElement?.closest('[data-span-id]')?.dataset.spanId);
  assert.ok(focused && focused !== spanId(0, 1), 'ArrowDown moved focus to another row');
  await page.keyboard.press('Enter');
  await page.locator('#span-details').waitFor();
  noPageErrors();
});

test('trace: a 5,000-span trace renders its waterfall', async () => {
  const started = Date.now();
  await page.goto(`${base}/trace/${bigTraceId}`);
  await page.waitForSelector('#waterfall[data-span-count]');
  assert.equal(await page.getAttribute('#waterfall', 'data-span-count'), String(BIG_TRACE_SPANS));
  await page.waitForFunction(() => document.querySelector('main').dataset.renderMs);
  const loadMs = Date.now() - started;
  const renderMs = Number(await page.evaluate(() => document.querySelector('main').dataset.renderMs));
  const apiMs = await page.evaluate(() => performance.getEntriesByType('resource')
    .find((entry) => entry.name.includes('/api/v1/traces/'))?.duration);
  // Reported, not asserted: timings belong in BENCHMARKS.md, not in tests.
  console.log(`trace of ${BIG_TRACE_SPANS} spans: page load ${loadMs} ms, of which the API answer ` +
    `${apiMs?.toFixed(0)} ms and the waterfall render ${renderMs.toFixed(0)} ms`);
  assert.ok(await page.locator('.span-row').count() > 10, 'rows are drawn');
  await shot('trace-5000-spans');
  noPageErrors();
});

test('trace: a malformed id and an unknown id say so', async () => {
  await page.goto(`${base}/trace/not-a-trace`);
  await page.waitForSelector('.notice-error');
  assert.match(await page.textContent('.notice-error'), /not a trace id/);
  await page.goto(`${base}/trace/${'f'.repeat(32)}`);
  await page.waitForSelector('.notice');
  assert.match(await page.textContent('main'), /not found/i);
  noPageErrors();
});

test('logs: full-text search highlights matches and links a line to its span', async () => {
  await page.goto(`${base}/logs`);
  await page.fill('#logs-q', 'timeout AND conductor');
  await page.click('button:has-text("Search")');
  await page.waitForURL(/q=timeout/);
  await page.waitForSelector('.log-line');
  const lines = page.locator('.log-line');
  assert.equal(await lines.count(), FAILING);
  const marks = await page.locator('.log-line mark').allTextContents();
  assert.ok(marks.includes('timeout') && marks.includes('conductor'), `highlighted: ${marks}`);
  // Newest first: request 0 is the most recent.
  assert.equal(await lines.first().getAttribute('data-trace-id'), failingTrace);
  await shot('logs');

  await page.selectOption('#logs-severity', 'ERROR');
  await page.fill('#logs-q', '');
  await page.click('button:has-text("Search")');
  await page.waitForURL(/severity=ERROR/);
  await page.waitForSelector('.log-line');
  assert.equal(await page.locator('.log-line').count(), FAILING);

  await page.locator('.log-line').first().locator('.trace-link').click();
  await page.waitForURL(`${base}/trace/${failingTrace}?span=${spanId(0, 2)}`);
  await page.locator('#span-details').waitFor();
  assert.match(await page.textContent('#span-details'), /sync account/);
  noPageErrors();
});

test('logs: paging walks older records', async () => {
  await page.goto(`${base}/logs?q=synced`);
  await page.waitForSelector('.log-line');
  assert.equal(await page.locator('.log-line').count(), REQUESTS - FAILING);
  assert.equal(await page.locator('.page-next:visible').count(), 0, 'one page only');
  await page.goto(`${base}/logs?q=nothing-matches-this`);
  await page.waitForSelector('.notice-empty');
  noPageErrors();
});

test('service map: edges with rates and errors; a service lists its operations', async () => {
  await page.goto(`${base}/map`);
  await page.waitForSelector('.map-svg');
  const edge = (parent, child) => page.locator(`.edge[data-parent="${parent}"][data-child="${child}"]`);
  assert.equal(await edge('crm-mobile', 'crm-conductor').getAttribute('data-calls'), String(REQUESTS));
  assert.equal(await edge('crm-mobile', 'crm-conductor').getAttribute('data-errors'), String(FAILING));
  assert.equal(await edge('crm-conductor', 'crm-database').getAttribute('data-errors'), String(FAILING));
  assert.equal(await edge('crm-conductor', 'crm-salesforce').getAttribute('data-errors'), '0');
  // Three CRM edges, and the big trace's two services calling each other both ways.
  assert.equal(await page.locator('.edge').count(), 5);

  await page.locator('.node[data-service="crm-conductor"]').click();
  await page.waitForSelector('#map-operations');
  assert.match(page.url(), /service=crm-conductor/);
  const sync = page.locator('#map-operations tr[data-operation="sync account"]');
  const cells = await sync.locator('td').allTextContents();
  assert.equal(cells[2], String(REQUESTS));
  assert.equal(cells[4], '25%');
  assert.equal(await page.locator('#map-operations tbody tr').count(), 2);
  await shot('service-map');

  // Keyboard: a node is focusable and Enter opens it.
  await page.locator('.node[data-service="crm-database"]').focus();
  await page.keyboard.press('Enter');
  await page.waitForSelector('#map-operations tr[data-operation="SELECT accounts"]');
  noPageErrors();
});

test('analysis: root cause over the last hour puts the failing database first, with its evidence and examples', async () => {
  await page.goto(`${base}/analysis`);
  await page.waitForSelector('#analysis-causes .cause');
  assert.equal(await page.getAttribute('#analysis-tab-rca', 'aria-selected'), 'true');
  // Every CRM request and the big trace; every fourth request failed; none of the rest is slower.
  assert.equal(await page.textContent('#rca-traces'), String(REQUESTS + 1));
  assert.equal(await page.textContent('#rca-failed'), String(FAILING));
  const first = page.locator('#analysis-causes .cause').first();
  assert.equal(await first.getAttribute('data-service'), 'crm-database');
  assert.equal(await first.getAttribute('data-operation'), 'SELECT accounts');
  assert.equal(await first.getAttribute('data-kind'), 'error');
  const text = await first.textContent();
  assert.match(text, /explains 100 % of bad traces/);
  assert.match(text, new RegExp(`${FAILING} of ${FAILING} sampled bad traces`));
  assert.match(text, /100 % of bad traces vs 0 % of healthy ones/);
  assert.match(text, /slow query: SELECT accounts took #ms/);
  await shot('analysis-rca');

  // The example traces are the failing requests; one opens its trace.
  const failing = new Set(Array.from({ length: REQUESTS }, (_, i) => i).filter((i) => i % 4 === 0).map(traceId));
  const examples = await first.locator('a.example-trace').evaluateAll((links) => links.map((a) => a.getAttribute('href')));
  assert.ok(examples.length > 0, 'example traces are linked');
  for (const href of examples) assert.ok(failing.has(href.replace('/trace/', '')), `${href} is a failing request`);
  await first.locator('a.example-trace').first().click();
  await page.waitForURL(`${base}${examples[0]}`);
  await page.waitForSelector('#waterfall');
  assert.equal((await page.textContent('#trace-error-count')).trim(), '3');

  // The logs link lists the database's warnings in the analysed window.
  await page.goBack();
  await page.waitForSelector('#analysis-causes .cause');
  await page.locator('#analysis-causes .cause').first().locator('.cause-logs-link').click();
  await page.waitForURL(/\/logs\?service=crm-database&start=.*&end=.*&severity=WARN/);
  await page.waitForSelector('.log-line');
  assert.equal(await page.locator('.log-line').count(), FAILING);
  noPageErrors();
});

test('analysis: from the service map to the latency heatmap and critical-path breakdown of a service', async () => {
  await page.goto(`${base}/map`);
  await page.locator('.node[data-service="crm-mobile"]').click();
  await page.locator('a.analyse-link:has-text("Analyse crm-mobile")').click();
  await page.waitForURL(`${base}/analysis?service=crm-mobile`);
  await page.waitForSelector('#analysis-causes .cause');
  // Only the traces that pass through crm-mobile: the big trace does not.
  assert.equal(await page.textContent('#rca-traces'), String(REQUESTS));
  assert.equal(await page.locator('#analysis-causes .cause').first().getAttribute('data-service'), 'crm-database');

  await page.click('#analysis-tab-latency');
  await page.waitForURL(/tab=latency/);
  await page.waitForSelector('#latency-heatmap');
  assert.equal(await page.textContent('#latency-requests'), String(REQUESTS));
  const cells = Number(await page.getAttribute('#latency-heatmap', 'data-cells'));
  assert.ok(cells > 0, 'the heatmap has cells');
  const drawn = await page.locator('#latency-heatmap rect.cell').evaluateAll((rects) => rects.map((r) => Number(r.dataset.count)));
  assert.equal(drawn.length, cells);
  assert.equal(drawn.reduce((a, b) => a + b, 0), REQUESTS, 'every request is in one cell');
  assert.match(await page.getAttribute('#latency-heatmap', 'aria-label'), /Heatmap of 24 requests to crm-mobile/);
  assert.ok(await page.locator('#latency-heatmap .pline path').count() === 3, 'p50, p95 and p99 lines');

  // The database's 900 ms timeouts dominate the requests' time; every hop is listed.
  const rows = page.locator('#latency-breakdown .breakdown-row');
  assert.equal(await rows.first().getAttribute('data-service'), 'crm-database');
  const services = new Set(await rows.evaluateAll((trs) => trs.map((tr) => tr.dataset.service)));
  for (const name of ['crm-database', 'crm-conductor', 'crm-mobile']) assert.ok(services.has(name), `breakdown lists ${name}`);
  const shares = await rows.evaluateAll((trs) => trs.map((tr) => tr.querySelector('.bd-share').textContent));
  for (const share of shares) assert.match(share, /^[\d.]+ %$/);
  const total = await rows.evaluateAll((trs) => trs.reduce((sum, tr) => sum + Number(tr.dataset.share), 0));
  assert.ok(Math.abs(total - 1) < 1e-6, `shares add up to 1, not ${total}`);
  await shot('analysis-latency');
  noPageErrors();
});

test('analysis: trends of a service draw rate, errors and p95 with their forecast, and the tabs work from the keyboard', async () => {
  await page.goto(`${base}/analysis?service=crm-mobile&tab=latency`);
  await page.waitForSelector('#latency-heatmap');
  await page.focus('#analysis-tab-latency');
  await page.keyboard.press('ArrowRight');
  assert.equal(await page.getAttribute('#analysis-tab-trends', 'aria-selected'), 'true');
  assert.equal(await page.evaluate(() => document.activeElement.id), 'analysis-tab-trends');
  await page.waitForURL(/tab=trends/);
  await page.waitForSelector('#trend-p95');
  for (const metric of ['rate', 'errors', 'p95']) {
    const chart = page.locator(`#trend-${metric}`);
    assert.equal(await chart.getAttribute('role'), 'img');
    assert.ok(Number(await chart.getAttribute('data-points')) > 0, `${metric}: observed points`);
    // 24 requests over a few minutes may be too few to forecast: then the note says why.
    const forecast = Number(await chart.getAttribute('data-forecast-points'));
    const note = await page.locator(`#trend-${metric}-note`).count();
    assert.ok(forecast > 0 || note === 1, `${metric}: a forecast or the note why there is none`);
    if (forecast > 0) assert.equal(await chart.locator('path.band').count(), 1, `${metric}: the prediction interval`);
  }
  // Every step has a rate; errors and p95 only where requests ran.
  const points = async (metric) => Number(await page.getAttribute(`#trend-${metric}`, 'data-points'));
  assert.ok(await points('errors') <= await points('rate'));
  assert.equal(await points('errors'), await points('p95'));
  for (const marker of await page.locator('.anomaly').all()) {
    assert.match(await marker.locator('title').textContent(), /^Anomaly at .*expected/);
  }
  // crm-mobile writes no logs in the workload; the conductor does.
  assert.match(await page.textContent('#analysis-trends'), /crm-mobile wrote no log records in this window/);
  await page.evaluate(() => document.activeElement.blur());
  await shot('analysis-trends');

  await page.goto(`${base}/analysis?service=crm-conductor&tab=trends`);
  await page.waitForSelector('#trend-logs');
  assert.match(await page.getAttribute('#trend-logs', 'aria-label'), new RegExp(`${REQUESTS - FAILING} INFO, ${FAILING} ERROR`));
  noPageErrors();
});

test('analysis: latency and trends ask for a service; a bad request shows the server’s error', async () => {
  await page.goto(`${base}/analysis?tab=latency`);
  await page.waitForSelector('#analysis-latency .notice-info');
  assert.match(await page.textContent('#analysis-latency'), /choose a service/);
  await page.goto(`${base}/analysis?service=crm-mobile&tab=trends&start=2025-11-20T01:00:00Z&end=2025-11-20T00:00:00Z`);
  await page.waitForSelector('#analysis-trends .notice-error');
  assert.match(await page.textContent('#analysis-trends .notice-error'), /400: start must be before end/);
  noPageErrors();
});

test('trace: "why is this failing?" names the database and its critical path selects spans', async () => {
  await page.goto(`${base}/trace/${failingTrace}`);
  await page.waitForSelector('#waterfall');
  const why = page.locator('#trace-why');
  await page.waitForSelector('#trace-why .why-cause', { state: 'attached' });
  assert.equal(await why.getAttribute('open'), null, 'closed until asked');
  const cause = why.locator('.why-cause').first();
  assert.equal(await cause.getAttribute('data-service'), 'crm-database');
  assert.equal(await cause.getAttribute('data-kind'), 'error');
  assert.match(await why.locator('summary').textContent(), /Why is this failing\?.*crm-database.*SELECT accounts.*query timeout/);

  await why.locator('summary').click();
  assert.match(await cause.textContent(), /slow query: SELECT accounts took 900ms/);
  assert.match(await why.locator('.why-origin').textContent(), /crm-database.*SELECT accounts/);
  const path = why.locator('.why-path-list li');
  assert.equal(await path.count(), 4, 'root, conductor, transform and database');
  await path.filter({ hasText: 'SELECT accounts' }).locator('button').click();
  await page.waitForURL(new RegExp(`span=${spanId(0, 5)}`));
  assert.equal(await page.locator(`.span-row[data-span-id="${spanId(0, 5)}"]`).getAttribute('aria-selected'), 'true');
  assert.match(await page.textContent('#span-details'), /query timeout/);
  noPageErrors();
});

test('sql: run a query, see the schema, download CSV, read an error as the server gave it', async () => {
  await page.goto(`${base}/sql`);
  await page.waitForSelector('#sql-schema details[data-table="spans"]');
  assert.match(await page.textContent('#sql-schema'), /duration_ns/);
  await page.fill('#sql-editor', "SELECT service_name, count(*) AS n FROM spans WHERE service_name LIKE 'crm-%' GROUP BY service_name ORDER BY service_name");
  await page.press('#sql-editor', 'Control+Enter');
  await page.waitForSelector('#sql-table');
  const rows = await page.locator('#sql-table tbody tr').evaluateAll((trs) => trs.map((tr) => [...tr.cells].map((td) => td.textContent)));
  assert.deepEqual(rows, [
    ['crm-conductor', String(2 * REQUESTS)], ['crm-database', String(REQUESTS)],
    ['crm-mobile', String(REQUESTS)], ['crm-salesforce', String(REQUESTS)],
  ]);
  assert.match(page.url(), /q=SELECT/);
  await shot('sql');

  const [download] = await Promise.all([page.waitForEvent('download'), page.click('#sql-csv')]);
  const { readFile } = await import('node:fs/promises');
  const csv = await readFile(await download.path(), 'utf8');
  assert.match(csv, /^service_name,n\n/);
  assert.match(csv, new RegExp(`crm-mobile,${REQUESTS}`));

  await page.fill('#sql-editor', 'SELECT nope FROM spans');
  await page.click('#sql-run');
  await page.waitForSelector('.notice-error');
  assert.match(await page.textContent('.notice-error'), /400: .*nope/);
  await page.fill('#sql-editor', 'DROP TABLE spans');
  await page.click('#sql-run');
  await page.waitForSelector('.notice-error');
  assert.match(await page.textContent('.notice-error'), /400/);
  noPageErrors();
});

test('a slow query shows that it is loading and can be cancelled', async () => {
  await page.goto(`${base}/sql`);
  // Billions of rows: slow enough to catch, and the server's timeout ends it.
  await page.fill('#sql-editor', 'SELECT max(a.duration_ns + b.duration_ns + c.duration_ns) FROM spans a, spans b, spans c');
  await page.click('#sql-run');
  await page.waitForSelector('.loading');
  await page.click('.loading button:has-text("Cancel")');
  await page.waitForSelector('.notice-info');
  assert.match(await page.textContent('#sql-results'), /Cancelled/);
  noPageErrors();
});

test('the trace id box in the header opens a trace and refuses a malformed id', async () => {
  await page.goto(`${base}/search`);
  await page.fill('#jump-trace-id', 'xyz');
  await page.press('#jump-trace-id', 'Enter');
  assert.equal(await page.evaluate(() => document.getElementById('jump-trace-id').validity.valid), false);
  await page.fill('#jump-trace-id', failingTrace.toUpperCase());
  await page.press('#jump-trace-id', 'Enter');
  await page.waitForURL(`${base}/trace/${failingTrace}`);
  await page.waitForSelector('#waterfall');
  noPageErrors();
});
