// Browser test of the Demo page: real Chromium, driven by Playwright, against
// a real `weft demo` that tests/ui_browser.rs started. Faults are switched on
// and off from the page, and the demo's API is asked whether that happened.
//
// Environment: WEFT_URL (the demo's UI port), WEFT_CHROMIUM (browser
// executable), WEFT_SCREENSHOTS (optional directory for a screenshot).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const base = process.env.WEFT_URL;
const screenshots = process.env.WEFT_SCREENSHOTS;

let browser;
let page;
const pageErrors = [];

before(async () => {
  assert.ok(base, 'WEFT_URL must be set (tests/ui_browser.rs sets it)');
  browser = await chromium.launch({
    executablePath: process.env.WEFT_CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  page = await (await browser.newContext({ viewport: { width: 1400, height: 900 } })).newPage();
  page.setDefaultTimeout(15_000);
  page.on('pageerror', (error) => pageErrors.push(error.message));
});

after(async () => {
  await browser?.close();
});

async function serverFaults() {
  const response = await fetch(`${base}/api/v1/demo/faults`);
  return (await response.json()).faults;
}

test('demo: the nav links the Demo page; faults go on and off from it; a bad one is explained', async () => {
  await page.goto(`${base}/search`);
  await page.locator('.topbar nav a[data-page="demo"]').click();
  await page.waitForURL(/\/demo$/);
  await page.locator('#demo-sent').waitFor();
  assert.match(await page.locator('#demo-load').innerText(), /20 requests\/s/);
  assert.match(await page.locator('#demo-faults').innerText(), /No faults/);

  await page.getByRole('button', { name: 'Slow database for gold customers' }).click();
  await page.locator('#demo-faults code', { hasText: 'crm-database:latency=400ms:when=customer.tier=gold' }).waitFor();
  assert.deepEqual(await serverFaults(), ['crm-database:latency=400ms:when=customer.tier=gold']);
  const rca = await page.locator('#demo-rca-link').getAttribute('href');
  assert.match(rca, /^\/analysis\?tab=rca&start=/, 'the analysis link starts when the fault did');

  await page.fill('#demo-fault', 'crm-salesforce:error=0.1');
  await page.press('#demo-fault', 'Enter');
  await page.locator('#demo-faults code', { hasText: 'crm-salesforce:error=0.1' }).waitFor();
  assert.equal((await serverFaults()).length, 2);
  await shot('demo');

  await page.fill('#demo-fault', 'crm-database:latency=soon');
  await page.press('#demo-fault', 'Enter');
  const error = page.locator('#demo-status .error-message');
  await error.waitFor();
  assert.match(await error.innerText(), /400: .*not a duration/);
  assert.equal((await serverFaults()).length, 2, 'a bad fault changes nothing');

  await page.getByRole('button', { name: 'Remove crm-salesforce:error=0.1' }).click();
  await page.locator('#demo-faults code', { hasText: 'crm-salesforce' }).waitFor({ state: 'detached' });
  assert.deepEqual(await serverFaults(), ['crm-database:latency=400ms:when=customer.tier=gold']);

  await page.locator('#demo-clear').click();
  await page.locator('#demo-faults', { hasText: 'No faults' }).waitFor();
  assert.deepEqual(await serverFaults(), []);
  assert.deepEqual(pageErrors.splice(0), [], 'the page threw');
});

async function shot(name) {
  if (!screenshots) return;
  mkdirSync(screenshots, { recursive: true });
  await page.screenshot({ path: join(screenshots, `${name}.png`) });
}
