// SQL console: an editor with the schema beside it, results as a table,
// CSV download, and the server's error message as it was given. The query is
// in the URL (`?q=`), so a query can be shared as a link.

import { sql, sqlCsv, withLoading, errorNotice } from '../api.js';
import { h, fill, notice, query } from '../util.js';

const EXAMPLE = `SELECT service_name, count(*) AS spans,
       approx_percentile_cont(duration_ns, 0.99) / 1e6 AS p99_ms
FROM spans
WHERE start_time > now() - INTERVAL '1 hour'
GROUP BY service_name
ORDER BY spans DESC`;

export async function render(main, ctx) {
  const { params, signal } = ctx;
  const editor = h('textarea', {
    id: 'sql-editor', class: 'sql-editor', spellcheck: 'false', rows: '8',
    'aria-describedby': 'sql-editor-hint',
  });
  editor.value = params.get('q') || EXAMPLE;
  const run = h('button', { type: 'submit', id: 'sql-run' }, 'Run');
  const download = h('button', { type: 'button', class: 'secondary', id: 'sql-csv' }, 'Download CSV');
  const results = h('section', { id: 'sql-results', 'aria-label': 'Query results', 'aria-live': 'polite' });
  const schema = h('aside', { class: 'panel schema', id: 'sql-schema', 'aria-label': 'Tables and columns' }, 'Loading schema…');
  const form = h('form', { 'aria-label': 'SQL query' },
    h('h1', {}, h('label', { for: editor.id }, 'SQL')),
    editor,
    h('div', { class: 'hint', id: 'sql-editor-hint' },
      'Read-only SQL over the spans and logs tables (DataFusion dialect). Ctrl+Enter runs. ',
      'Full-text search: ', h('code', {}, "text_match(body, 'timeout AND conductor')"), '.'),
    h('div', { class: 'actions', style: 'margin-top:8px' }, run, download));
  fill(main, h('div', { class: 'sql-layout' }, schema, h('div', {}, form, results)));

  editor.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    // Same URL again still re-runs: navigate() re-renders the page.
    ctx.navigate(`/sql?${query({ q: editor.value })}`);
  });
  download.addEventListener('click', () => downloadCsv(editor.value, results, signal));
  loadSchema(schema, editor, signal);

  if (!params.get('q')) {
    fill(results, notice('info', 'Write a query and press Run.'));
    return;
  }
  const started = performance.now();
  const answer = await withLoading(results, signal, 'query results', (abort) => sql(editor.value, abort));
  if (!answer) return;
  const elapsed = performance.now() - started;
  fill(results, resultTable(answer, elapsed));
}

function resultTable({ columns, rows, truncated }, elapsedMs) {
  const summary = h('p', { id: 'sql-summary' },
    `${rows.length} row${rows.length === 1 ? '' : 's'} in ${elapsedMs.toFixed(0)} ms`,
    truncated ? h('strong', {}, ' — truncated at the server\'s row limit; add a LIMIT or aggregate') : null);
  if (!columns.length) return summary;
  return h('div', {}, summary, h('div', { class: 'table-scroll' },
    h('table', { class: 'data', id: 'sql-table' },
      h('thead', {}, h('tr', {}, columns.map((c) => h('th', { scope: 'col', title: c.type }, c.name)))),
      h('tbody', {}, rows.map((row) => h('tr', {}, row.map((value) => cell(value))))))));
}

function cell(value) {
  if (value === null || value === undefined) return h('td', { class: 'null' }, 'null');
  if (typeof value === 'object') return h('td', { title: JSON.stringify(value, null, 2) }, JSON.stringify(value));
  if (typeof value === 'number') return h('td', { class: 'num' }, String(value));
  return h('td', { title: String(value).length > 60 ? String(value) : null }, String(value));
}

async function downloadCsv(statement, results, signal) {
  const text = await withLoading(results, signal, 'CSV', (abort) => sqlCsv(statement, abort));
  if (text === undefined) return;
  const url = URL.createObjectURL(new Blob([text], { type: 'text/csv' }));
  const link = h('a', { href: url, download: 'weft-query.csv' }, 'weft-query.csv');
  fill(results, notice('info', 'CSV ready: ', link));
  link.click();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

/** The tables and columns, from information_schema; a click inserts a name. */
async function loadSchema(target, editor, signal) {
  try {
    const { rows } = await sql(
      "SELECT table_name, column_name, data_type FROM information_schema.columns " +
      "WHERE table_schema = 'public' ORDER BY table_name, ordinal_position", signal);
    const tables = new Map();
    for (const [table, column, type] of rows) {
      if (!tables.has(table)) tables.set(table, []);
      tables.get(table).push([column, type]);
    }
    const insert = (text) => {
      const { selectionStart, selectionEnd, value } = editor;
      editor.value = value.slice(0, selectionStart) + text + value.slice(selectionEnd);
      editor.focus();
      editor.selectionStart = editor.selectionEnd = selectionStart + text.length;
    };
    fill(target, h('h2', { style: 'margin-top:0' }, 'Schema'), [...tables].map(([table, columns]) =>
      h('details', { open: true, dataset: { table } },
        h('summary', {}, table),
        h('ul', {}, columns.map(([column, type]) => h('li', {},
          h('button', { type: 'button', title: `Insert ${column}`, onclick: () => insert(column) }, column),
          h('span', { class: 'type' }, shortType(type))))))));
  } catch (error) {
    if (error.name !== 'AbortError') fill(target, errorNotice(error));
  }
}

function shortType(type) {
  return String(type)
    .replace(/^Timestamp\(.*/, 'timestamp')
    .replace(/Map\(.*/, 'map')
    .replace(/List\(.*/, 'list');
}
