// Runs (ranks on demand): the list with live status and progress, the New rank form with the
// API's validation messages next to the fields, and a completed run's ranked images and CSV.

import { ApiError, get, post } from './api.js';
import { $, clear, familyLabel, fmtTime, h, heuristicLabel, plural } from './dom.js';
import { grid, pager } from './grid.js';
import { ctx, on, projectPath } from './state.js';
import { describe, go, showError } from './ui.js';

const ACTIVE = new Set(['queued', 'running']);
const POLL_MS = 1500; // progress is not a notification: poll while a run is active
const RESULT_PAGE = 48;

function statusChip(run) {
  return h('span', { class: `status status-${run.status}` }, run.status);
}

function progressBar(run) {
  const pct = Math.round((run.status === 'completed' ? 1 : (run.progress ?? 0)) * 100);
  return h(
    'div',
    {
      class: `progress ${ACTIVE.has(run.status) ? 'active' : ''}`,
      role: 'progressbar',
      'aria-valuemin': 0,
      'aria-valuemax': 100,
      'aria-valuenow': pct,
      title: `${pct}%`,
    },
    h('div', { class: 'bar', style: `width: ${pct}%` }),
    h('span', { class: 'pct' }, `${pct}%`),
  );
}

// The poller runs while the view is open and some run is queued or running, and once more
// when the stream announces that a run finished.
function poller(fn, signal) {
  let timer = null;
  const tick = async () => {
    timer = null;
    if (signal.aborted) return;
    let again = false;
    try {
      again = await fn();
    } catch (e) {
      if (e.name !== 'AbortError') showError(e);
    }
    if (again && !signal.aborted) timer = setTimeout(tick, POLL_MS);
  };
  signal.addEventListener('abort', () => timer && clearTimeout(timer));
  return () => {
    if (timer) clearTimeout(timer);
    tick();
  };
}

export function renderRuns(main) {
  const abort = new AbortController();
  const body = h('div', { class: 'runs-body' }, h('p', { class: 'muted' }, 'Loading…'));
  clear(
    main,
    h(
      'div',
      { class: 'view-head runs-head' },
      h(
        'div',
        {},
        h('h1', {}, 'Runs'),
        h('p', { class: 'muted' }, 'Ranks on demand: one-off rankings of chosen datasets.'),
      ),
      h(
        'button',
        { type: 'button', class: 'primary', id: 'new-run', onclick: () => openNewRun(refresh) },
        '+ New rank',
      ),
    ),
    body,
  );

  async function fetchRuns() {
    const { runs } = await get(projectPath('/runs'), null, abort.signal);
    draw(runs);
    return runs.some((r) => ACTIVE.has(r.status));
  }
  const refresh = poller(fetchRuns, abort.signal);

  async function cancel(run) {
    try {
      await post(projectPath(`/runs/${run.id}/cancel`));
    } catch (e) {
      showError(e);
    }
    refresh();
  }

  function draw(runs) {
    if (!runs.length) {
      return clear(
        body,
        h(
          'p',
          { class: 'empty card-panel' },
          'No runs yet. “New rank” ranks chosen datasets with any heuristic.',
        ),
      );
    }
    const rows = [...runs]
      .reverse()
      .map((r) =>
        h(
          'tr',
          { class: `run-row run-${r.status}`, dataset: { runId: r.id, status: r.status } },
          h(
            'td',
            { class: 'run-name' },
            r.status === 'completed'
              ? h('a', { href: `#/${encodeURIComponent(ctx.project)}/runs/${r.id}` }, r.name)
              : h('span', {}, r.name),
            h('div', { class: 'muted small' }, r.id),
            h(
              'div',
              { class: 'muted small show-narrow' },
              `${familyLabel(r.family)} · ${heuristicLabel(r.heuristic)} · ${plural(r.n, 'image')}`,
            ),
          ),
          h('td', { class: 'hide-narrow' }, familyLabel(r.family)),
          h('td', { class: 'hide-narrow' }, heuristicLabel(r.heuristic)),
          h('td', { class: 'num hide-narrow' }, r.n.toLocaleString()),
          h('td', { class: 'hide-narrow' }, r.datasets?.join(', ') ?? 'all'),
          h(
            'td',
            { class: 'c-status' },
            statusChip(r),
            r.error ? h('div', { class: 'inline-error small' }, r.error) : null,
            r.note ? h('div', { class: 'muted small' }, r.note) : null,
          ),
          h('td', { class: 'progress-cell' }, progressBar(r)),
          h('td', { class: 'muted small hide-narrow', title: r.created ?? '' }, fmtTime(r.created)),
          h(
            'td',
            { class: 'actions' },
            ACTIVE.has(r.status)
              ? h(
                  'button',
                  { type: 'button', class: 'small-btn', onclick: () => cancel(r) },
                  'Cancel',
                )
              : null,
            r.status === 'completed'
              ? h(
                  'a',
                  { class: 'small-btn', href: `#/${encodeURIComponent(ctx.project)}/runs/${r.id}` },
                  'Open',
                )
              : null,
          ),
        ),
      );
    clear(
      body,
      h(
        'div',
        { class: 'table-wrap card-panel' },
        h(
          'table',
          { class: 'runs' },
          h(
            'thead',
            {},
            h(
              'tr',
              {},
              [
                'Name',
                'Family',
                'Heuristic',
                'Images',
                'Datasets',
                'Status',
                'Progress',
                'Created',
                '',
              ].map((t, i) => h('th', { class: i === 3 ? 'num' : null }, t)),
            ),
          ),
          h('tbody', {}, rows),
        ),
      ),
    );
  }

  const off = on('notification', (n) => n.type.startsWith('run_') && refresh());
  refresh();
  return () => {
    abort.abort();
    off();
  };
}

// A completed run ---------------------------------------------------------------------------------
const csvField = (v) => {
  const s = v == null ? '' : String(v);
  return /[",\n\r]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s;
};

async function downloadCSV(run) {
  const rows = [];
  for (let offset = 0; ; offset += 1000) {
    const { result } = await get(projectPath(`/runs/${run.id}`), { limit: 1000, offset });
    rows.push(...result.items);
    if (!result.items.length || rows.length >= result.total) break;
  }
  const cols = ['rank', 'image_id', 'file_name', 'dataset', 'score'];
  const text =
    [cols.join(','), ...rows.map((r) => cols.map((c) => csvField(r[c])).join(','))].join('\n') +
    '\n';
  const a = h('a', {
    href: URL.createObjectURL(new Blob([text], { type: 'text/csv' })),
    download: `${run.name.replace(/[^\w.-]+/g, '_')}-${run.id}.csv`,
  });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
}

export function renderRun(main, runId) {
  const abort = new AbortController();
  let offset = 0;
  const back = h(
    'a',
    { class: 'back', href: `#/${encodeURIComponent(ctx.project)}/runs` },
    '‹ All runs',
  );
  clear(main, back, h('p', { class: 'muted' }, 'Loading…'));

  async function fetchRun() {
    const run = await get(
      projectPath(`/runs/${runId}`),
      { limit: RESULT_PAGE, offset },
      abort.signal,
    );
    draw(run);
    return ACTIVE.has(run.status);
  }
  const refresh = poller(fetchRun, abort.signal);

  function draw(run) {
    const facts = [
      ['Family', familyLabel(run.family)],
      ['Heuristic', heuristicLabel(run.heuristic)],
      ['Reduction', run.reduction],
      ['Images asked', run.n.toLocaleString()],
      ['Datasets', run.datasets?.join(', ') ?? 'all'],
      ['Model', run.model_version ? `v${run.model_version}` : '—'],
      ['Created', run.created ? new Date(run.created).toLocaleString() : '—'],
      ['Finished', run.finished ? new Date(run.finished).toLocaleString() : '—'],
    ];
    const res = run.result;
    clear(
      main,
      back,
      h(
        'div',
        { class: 'view-head runs-head' },
        h(
          'div',
          {},
          h('h1', {}, run.name, ' ', statusChip(run)),
          h('p', { class: 'muted' }, `Run ${run.id}`),
        ),
        run.status === 'completed'
          ? h(
              'button',
              {
                type: 'button',
                class: 'primary',
                id: 'download-csv',
                onclick: () => downloadCSV(run).catch(showError),
              },
              'Download CSV',
            )
          : null,
      ),
      h(
        'dl',
        { class: 'facts card-panel' },
        facts.map(([k, v]) => h('div', {}, h('dt', {}, k), h('dd', {}, v ?? '—'))),
      ),
      ACTIVE.has(run.status) ? h('div', { class: 'card-panel' }, progressBar(run)) : null,
      run.error ? h('p', { class: 'inline-error card-panel' }, run.error) : null,
      res
        ? h(
            'section',
            { class: 'card-panel run-result' },
            h('h2', {}, `Ranked images (${plural(res.total, 'image')})`),
            grid(res.items, { scored: run.heuristic !== 'none' }),
            pager(res, (o) => {
              offset = o;
              refresh();
            }),
          )
        : null,
    );
  }

  const off = on('notification', (n) => n.payload?.run_id === runId && refresh());
  refresh();
  return () => {
    abort.abort();
    off();
  };
}

// New rank form -----------------------------------------------------------------------------------
const FIELDS = ['name', 'family', 'heuristic', 'n', 'datasets', 'reduction'];

// Where an API message belongs: its field (body.n → n), or the form when it names none. The
// coordinator's run checks come as one message, "invalid run: datasets: …; family: …".
function fieldMessages(err) {
  const out = {};
  const add = (field, msg) => (out[field] = out[field] ? `${out[field]}; ${msg}` : msg);
  for (const e of err.errors ?? []) {
    const name = e.field?.split('.')[1];
    add(FIELDS.includes(name) ? name : 'form', e.message);
  }
  if (!err.errors?.length) {
    const text = err.detail.replace(/^invalid run:\s*/, '');
    let field = 'form';
    for (const part of text.split(/;\s+/)) {
      const m = part.match(/^(\w+):\s*(.*)$/);
      if (m && FIELDS.includes(m[1])) {
        field = m[1];
        add(field, m[2]);
      } else add(field, part); // continues the previous field's message
    }
  }
  return out;
}

export function openNewRun(onCreated) {
  const dialog = $('#run-dialog');
  const fams = ctx.enums.families;
  const withModel = fams.find((f) => ctx.detail?.families?.[f]?.model_version) ?? fams[0];
  const errorEl = (f) =>
    h('p', { class: 'field-error', id: `err-${f}`, dataset: { for: f }, role: 'alert' });
  const heuristicOptions = (family) => {
    const dflt = ctx.settings?.[family]?.heuristic;
    return [
      h('option', { value: '' }, `Family default (${heuristicLabel(dflt)})`),
      ctx.enums.heuristics.map((x) => h('option', { value: x }, heuristicLabel(x))),
    ];
  };
  const heuristic = h(
    'select',
    { name: 'heuristic', id: 'run-heuristic' },
    heuristicOptions(withModel),
  );
  const family = h(
    'select',
    {
      name: 'family',
      id: 'run-family',
      onchange: () => clear(heuristic, heuristicOptions(family.value)),
    },
    fams.map((f) => h('option', { value: f, selected: f === withModel }, familyLabel(f))),
  );
  const datasets = ctx.detail?.datasets ?? [];
  const form = h(
    'form',
    { id: 'run-form', novalidate: true, method: 'dialog' },
    h('h2', {}, 'New rank'),
    h(
      'p',
      { class: 'muted small' },
      'Rank the unlabeled images of some datasets now, with any heuristic.',
    ),
    h('label', { for: 'run-name' }, 'Name'),
    h('input', {
      id: 'run-name',
      name: 'name',
      type: 'text',
      placeholder: 'e.g. night shots, batch 3',
      autocomplete: 'off',
    }),
    errorEl('name'),
    h(
      'div',
      { class: 'row2' },
      h('div', {}, h('label', { for: 'run-family' }, 'Family'), family, errorEl('family')),
      h(
        'div',
        {},
        h('label', { for: 'run-heuristic' }, 'Heuristic'),
        heuristic,
        errorEl('heuristic'),
      ),
    ),
    h('label', { for: 'run-n' }, 'Number of images'),
    h('input', {
      id: 'run-n',
      name: 'n',
      type: 'number',
      min: 1,
      step: 1,
      value: '100',
      inputmode: 'numeric',
    }),
    errorEl('n'),
    h(
      'fieldset',
      { class: 'datasets' },
      h('legend', {}, 'Datasets ', h('span', { class: 'muted small' }, '(none ticked: all)')),
      datasets.map((d) =>
        h(
          'label',
          { class: 'check' },
          h('input', { type: 'checkbox', name: 'datasets', value: d.dataset }),
          ` ${d.dataset} `,
          h('span', { class: 'muted small' }, `(${d.images})`),
        ),
      ),
    ),
    errorEl('datasets'),
    errorEl('reduction'),
    errorEl('form'),
    h(
      'div',
      { class: 'actions' },
      h('button', { type: 'button', onclick: () => dialog.close() }, 'Cancel'),
      h('button', { type: 'submit', class: 'primary', id: 'run-submit' }, 'Start run'),
    ),
  );

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    form.querySelectorAll('.field-error').forEach((el) => (el.textContent = ''));
    form.querySelectorAll('[aria-invalid]').forEach((el) => el.removeAttribute('aria-invalid'));
    const data = new FormData(form);
    const body = { name: data.get('name'), family: data.get('family') };
    if (data.get('heuristic')) body.heuristic = data.get('heuristic');
    const n = String(data.get('n') ?? '').trim();
    if (n !== '') body.n = /^-?\d+$/.test(n) ? Number(n) : n; // anything else: the API says why
    const picked = data.getAll('datasets');
    if (picked.length) body.datasets = picked;
    const submit = $('#run-submit', form);
    submit.disabled = true;
    try {
      const run = await post(projectPath('/runs'), body);
      dialog.close();
      onCreated?.(run);
    } catch (err) {
      if (!(err instanceof ApiError) || err.status !== 422) {
        $('#err-form', form).textContent = describe(err).text;
        return;
      }
      for (const [field, msg] of Object.entries(fieldMessages(err))) {
        $(`#err-${field}`, form).textContent = msg;
        form.querySelector(`[name="${field}"]`)?.setAttribute('aria-invalid', 'true');
      }
    } finally {
      submit.disabled = false;
    }
  });
  clear(dialog, form);
  dialog.showModal();
  $('#run-name', form).focus();
}
