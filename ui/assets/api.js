// The HTTP API, as the pages use it. Every request takes an AbortSignal so a
// page can cancel it (the Cancel button, or leaving the page); errors carry
// the server's own message (`{"error": "..."}`).

import { h, fill, notice } from './util.js';

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function send(path, init) {
  let response;
  try {
    response = await fetch(path, init);
  } catch (error) {
    if (error.name === 'AbortError') throw error;
    throw new ApiError(0, `weft did not answer (${error.message}); is it running?`);
  }
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    const text = await response.text().catch(() => '');
    try {
      message = JSON.parse(text).error || message;
    } catch {
      if (text.trim()) message = text.trim();
    }
    throw new ApiError(response.status, message);
  }
  return response;
}

/** GET `path?params` as JSON. */
export async function getJson(path, params, signal) {
  const qs = params && params.toString();
  const response = await send(qs ? `${path}?${qs}` : path, { signal, headers: { accept: 'application/json' } });
  return response.json();
}

/** Runs SQL: `{columns, rows, truncated}`. */
export async function sql(statement, signal) {
  const response = await send('/api/v1/sql', {
    method: 'POST',
    signal,
    headers: { 'content-type': 'application/json', accept: 'application/json' },
    body: JSON.stringify({ sql: statement }),
  });
  return response.json();
}

/** Runs SQL and answers CSV text. */
export async function sqlCsv(statement, signal) {
  const response = await send('/api/v1/sql', {
    method: 'POST',
    signal,
    headers: { 'content-type': 'application/json', accept: 'text/csv' },
    body: JSON.stringify({ sql: statement }),
  });
  return response.text();
}

/**
 * Runs `load(signal)` while `target` shows a loading line with a Cancel
 * button. Resolves to the result, or to `undefined` when cancelled or
 * failed (the error is then shown in `target`). `pageSignal` aborts too.
 */
export async function withLoading(target, pageSignal, what, load) {
  const controller = new AbortController();
  const abort = () => controller.abort();
  pageSignal?.addEventListener('abort', abort);
  const cancel = h('button', { type: 'button', class: 'secondary', onclick: abort }, 'Cancel');
  const slow = setTimeout(() => target.querySelector('.loading')?.classList.add('slow'), 1000);
  fill(target, h('div', { class: 'loading', role: 'status', 'aria-live': 'polite' },
    h('span', { class: 'spinner', 'aria-hidden': 'true' }), `Loading ${what}…`, cancel));
  target.setAttribute('aria-busy', 'true');
  try {
    return await load(controller.signal);
  } catch (error) {
    if (error.name === 'AbortError') {
      if (!pageSignal?.aborted) fill(target, notice('info', `Cancelled loading ${what}.`));
    } else {
      fill(target, errorNotice(error));
    }
    return undefined;
  } finally {
    clearTimeout(slow);
    target.removeAttribute('aria-busy');
    pageSignal?.removeEventListener('abort', abort);
  }
}

/** The server's error, as it said it. */
export function errorNotice(error) {
  const status = error instanceof ApiError && error.status ? `${error.status}: ` : '';
  return notice('error', h('strong', {}, error instanceof ApiError && error.status >= 500 ? 'Server error' : 'Error'),
    ' ', h('span', { class: 'error-message' }, `${status}${error.message}`));
}

/**
 * Fills a service `<select>` from `/api/v1/services`, selecting `wanted`
 * (kept as an option even when it sent nothing yet). The list is a
 * convenience: a failure leaves it as it was and the page's own request
 * reports the problem.
 */
export async function serviceOptions(select, wanted, signal) {
  try {
    const { services } = await getJson('/api/v1/services', null, signal);
    for (const name of services) select.append(h('option', { value: name, selected: name === wanted }, name));
    if (wanted && !services.includes(wanted)) select.append(h('option', { value: wanted, selected: true }, wanted));
    return services;
  } catch {
    return [];
  }
}
