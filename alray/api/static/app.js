// Entry point: sign-in, the project picker, hash routing between the views, the error banner
// and the project summary. Views live in their own modules and return a cleanup function.

import { get, getToken, onTokenNeeded, setToken } from './api.js';
import { $, clear, familyLabel, h, plural } from './dom.js';
import { startNotifications } from './notify.js';
import { renderActiveLearning } from './ranks.js';
import { renderRun, renderRuns } from './runs.js';
import { renderSettings } from './settings.js';
import { ctx, loadDetail, loadEnums, loadSettings, on } from './state.js';
import { showError } from './ui.js';

// Sign-in -----------------------------------------------------------------------------------------
function promptToken(message) {
  const dialog = $('#token-dialog');
  const input = $('#token-input');
  // a stored token that got a 401 is wrong or stale: say so; a first prompt needs no message
  $('#token-error').textContent = getToken() && message ? message : '';
  input.value = '';
  return new Promise((resolve) => {
    const done = () => {
      const value = input.value.trim();
      if (!value) {
        $('#token-error').textContent = 'Enter the token.';
        dialog.showModal();
        return;
      }
      dialog.removeEventListener('close', done);
      resolve(value);
    };
    dialog.addEventListener('close', done);
    if (!dialog.open) dialog.showModal();
    input.focus();
  });
}

// Routing: #/<project>[/runs[/<run id>]] ----------------------------------------------------------
function parseHash() {
  const parts = location.hash
    .replace(/^#\/?/, '')
    .split('/')
    .filter(Boolean)
    .map(decodeURIComponent);
  return { project: parts[0] ?? null, view: parts[1] ?? 'al', runId: parts[2] ?? null };
}

let projects = [];
let disposeView = () => {};
let disposeProject = () => {};

async function openProject(name) {
  disposeProject();
  ctx.project = name;
  ctx.detail = ctx.settings = ctx.focus = null;
  document.title = `${name} · alray`;
  $('#project-picker').value = name;
  await Promise.all([loadDetail(), loadSettings()]);
  const offSettings = renderSettings($('#settings'));
  const offNotifications = startNotifications();
  disposeProject = () => (offSettings(), offNotifications());
}

async function route() {
  const want = parseHash();
  if (!projects.length) return;
  const name = projects.includes(want.project) ? want.project : projects[0];
  if (want.project !== name) {
    history.replaceState(null, '', `#/${encodeURIComponent(name)}`);
  }
  try {
    if (ctx.project !== name) await openProject(name);
  } catch (e) {
    showError(e);
    return;
  }
  $('#tab-al').href = `#/${encodeURIComponent(name)}`;
  $('#tab-runs').href = `#/${encodeURIComponent(name)}/runs`;
  $('#tab-al').classList.toggle('active', want.view !== 'runs');
  $('#tab-runs').classList.toggle('active', want.view === 'runs');
  disposeView();
  const main = $('#main');
  if (want.view === 'runs' && want.runId) disposeView = renderRun(main, want.runId);
  else if (want.view === 'runs') disposeView = renderRuns(main);
  else disposeView = renderActiveLearning(main);
}

// Project summary (upper left) --------------------------------------------------------------------
function renderSummary(detail) {
  const el = $('#summary');
  if (!detail) return clear(el);
  const rows = ctx.enums.families
    .filter((f) => detail.families[f])
    .map((f) => {
      const s = detail.families[f];
      const model = s.model_version ? `v${s.model_version}` : '—';
      return h(
        'tr',
        {},
        h('th', { scope: 'row' }, familyLabel(f)),
        h('td', { class: 'num' }, s.labeled.toLocaleString()),
        h('td', { class: 'num muted' }, model),
      );
    });
  clear(
    el,
    h('h2', { class: 'panel-title' }, detail.name),
    h(
      'p',
      { class: 'small muted' },
      `${plural(detail.images, 'image')} in ${plural(detail.datasets.length, 'dataset')}: `,
      detail.datasets.map((d) => `${d.dataset} (${d.images})`).join(', '),
    ),
    h(
      'table',
      { class: 'summary-table small' },
      h(
        'thead',
        {},
        h(
          'tr',
          {},
          h('th', {}, 'Family'),
          h('th', { class: 'num' }, 'Labeled'),
          h('th', { class: 'num', title: 'Latest model version' }, 'Model'),
        ),
      ),
      h('tbody', {}, rows),
    ),
  );
}
on('detail', renderSummary);

window.addEventListener('unhandledrejection', (e) => showError(e.reason));

// Boot --------------------------------------------------------------------------------------------
async function boot() {
  onTokenNeeded(promptToken);
  $('#token-dialog').addEventListener('cancel', (e) => e.preventDefault()); // no data without it
  try {
    const health = await get('/healthz');
    if (health.auth && !getToken()) setToken(await promptToken());
  } catch (e) {
    showError(e);
  }
  try {
    await loadEnums();
    projects = (await get('/api/projects')).projects.map((p) => p.name);
  } catch (e) {
    showError(e);
    clear(
      $('#main'),
      h('p', { class: 'pad' }, 'The projects cannot be listed; see the message above.'),
    );
    return;
  }
  const picker = $('#project-picker');
  clear(
    picker,
    projects.map((p) => h('option', { value: p }, p)),
  );
  picker.addEventListener(
    'change',
    () => (location.hash = `#/${encodeURIComponent(picker.value)}`),
  );
  if (!projects.length) {
    clear(
      $('#main'),
      h(
        'div',
        { class: 'empty pad' },
        h('h2', {}, 'No projects yet'),
        h(
          'p',
          {},
          'Create one with ',
          h('code', {}, 'alray project create NAME --images FOLDER'),
          ' or POST /api/projects.',
        ),
      ),
    );
    return;
  }
  window.addEventListener('hashchange', route);
  await route();
}

boot();
