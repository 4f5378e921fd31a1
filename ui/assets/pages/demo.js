// The demo's control panel (only under `weft demo`, which serves
// /api/v1/demo): how the load is doing, and the faults, switched on and off
// here so root-cause analysis has something to find.

import { getJson, errorNotice, ApiError } from '../api.js';
import { h, fill, notice, query } from '../util.js';

const EXAMPLES = [
  ['Slow database for gold customers', 'crm-database:latency=400ms:when=customer.tier=gold'],
  ['Slow Salesforce for 20 %', 'crm-salesforce:latency=300ms:p=0.2'],
  ['Salesforce failing 10 %', 'crm-salesforce:error=0.1'],
  ['Conductor failing on profiles', 'crm-conductor:error=0.3:when=http.route=/accounts/{id}/profile'],
];

async function changeFaults(method, body) {
  const response = await fetch('/api/v1/demo/faults', {
    method,
    headers: { 'content-type': 'application/json', accept: 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) throw new ApiError(response.status, answer.error || response.statusText);
  return answer.faults;
}

export async function render(main, ctx) {
  const { signal } = ctx;
  const load = h('section', { class: 'panel', id: 'demo-load', 'aria-label': 'Load', 'aria-live': 'polite' }, 'Loading…');
  const faults = h('ul', { id: 'demo-faults', class: 'demo-faults', 'aria-label': 'Active faults' });
  const status = h('div', { id: 'demo-status', 'aria-live': 'polite' });
  const input = h('input', {
    id: 'demo-fault', name: 'fault', size: '48', spellcheck: 'false', autocomplete: 'off',
    placeholder: 'crm-database:latency=300ms:p=0.2', 'aria-describedby': 'demo-fault-hint',
  });
  const form = h('form', { id: 'demo-fault-form', 'aria-label': 'Add a fault' },
    h('label', { for: input.id }, 'Add a fault '), input, ' ', h('button', { type: 'submit' }, 'Add'),
    h('div', { class: 'hint', id: 'demo-fault-hint' },
      'service:latency=DURATION[:p=P] or service:error=RATE, optionally :when=customer.tier=gold ',
      '(also http.route, http.request.method).'));
  const examples = h('div', { class: 'actions', style: 'flex-wrap:wrap' },
    EXAMPLES.map(([label, spec]) => h('button', {
      type: 'button', class: 'secondary', title: spec, onclick: () => apply(() => changeFaults('POST', { fault: spec })),
    }, label)),
    h('button', { type: 'button', id: 'demo-clear', onclick: () => apply(() => changeFaults('DELETE')) }, 'Clear all faults'));
  const since = { at: null };

  fill(main, h('div', { class: 'demo' },
    h('h1', {}, 'Demo'),
    h('p', {}, 'The CRM runs behind weft\'s gateway and inside its mesh, under live load. ',
      'Switch a fault on, give it a minute, then ask ', h('a', { href: '/analysis?tab=rca', id: 'demo-rca-link' }, 'root-cause analysis'),
      ' what happened.'),
    load,
    h('section', { class: 'panel', 'aria-label': 'Faults' }, h('h2', {}, 'Faults'), faults, form, examples, status)));

  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const spec = input.value.trim();
    if (!spec) return;
    apply(() => changeFaults('POST', { fault: spec })).then((ok) => { if (ok) input.value = ''; });
  });

  async function apply(change) {
    try {
      showFaults(await change());
      since.at = new Date();
      rcaLink();
      fill(status, notice('info', 'Faults changed. Root-cause analysis of the time since then: ',
        h('a', { href: rcaHref() }, 'open')));
      return true;
    } catch (error) {
      fill(status, errorNotice(error));
      return false;
    }
  }

  function rcaHref() {
    return since.at ? `/analysis?${query({ tab: 'rca', start: since.at.toISOString() })}` : '/analysis?tab=rca';
  }

  function rcaLink() {
    main.querySelector('#demo-rca-link')?.setAttribute('href', rcaHref());
  }

  function showFaults(list) {
    if (!list.length) {
      fill(faults, h('li', { class: 'notice-empty' }, 'No faults: the CRM is healthy.'));
      return;
    }
    fill(faults, list.map((spec) => h('li', {},
      h('code', {}, spec), ' ',
      h('button', {
        type: 'button', class: 'secondary', 'aria-label': `Remove ${spec}`,
        onclick: () => apply(async () => {
          const current = await getJson('/api/v1/demo/faults', null, signal);
          return changeFaults('PUT', { faults: current.faults.filter((f) => f !== spec) });
        }),
      }, 'Remove'))));
  }

  async function refresh() {
    try {
      const state = await getJson('/api/v1/demo', null, signal);
      showFaults(state.faults);
      const latest = state.load.latest;
      const totals = state.load.totals;
      const ms = (v) => (v === null || v === undefined ? '–' : `${v.toFixed(1)} ms`);
      fill(load,
        h('h2', {}, 'Load'),
        h('dl', { class: 'demo-load' },
          h('dt', {}, 'Target'), h('dd', {}, `${state.rate} requests/s`),
          h('dt', {}, 'Achieved'), h('dd', { id: 'demo-achieved' }, latest ? `${latest.achieved_rate.toFixed(1)} requests/s` : '–'),
          h('dt', {}, 'Latency'), h('dd', {}, latest ? `p50 ${ms(latest.p50_ms)}, p99 ${ms(latest.p99_ms)}` : '–'),
          h('dt', {}, 'Errors'), h('dd', {}, latest ? `${(latest.error_rate * 100).toFixed(1)} %` : '–'),
          h('dt', {}, 'Sent'), h('dd', { id: 'demo-sent' }, String(totals.sent))),
        h('p', {}, 'Try it: ', h('code', {}, `curl -H 'apikey: ${state.api_key}' ${state.gateway}/api/accounts/42`)));
    } catch (error) {
      if (error.name !== 'AbortError') fill(load, errorNotice(error));
    }
  }

  await refresh();
  const timer = setInterval(refresh, 5000);
  signal.addEventListener('abort', () => clearInterval(timer));
}
