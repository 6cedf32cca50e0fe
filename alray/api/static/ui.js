// Shared bits of UI: the error banner and navigation between views.

import { ApiError } from './api.js';
import { $, clear, h } from './dom.js';
import { ctx } from './state.js';

// Errors: the server's own message, shown plainly -------------------------------------------------
export function describe(err) {
  if (err instanceof ApiError) {
    const where = err.status ? `${err.status}: ` : '';
    return { text: `${where}${err.detail}`, problems: err.problems };
  }
  return { text: String(err?.message ?? err), problems: [] };
}

export function showError(err) {
  if (err?.name === 'AbortError') return;
  console.error(err);
  const { text, problems } = describe(err);
  const banner = $('#error');
  clear(
    banner,
    h('span', { class: 'error-text' }, text),
    problems.length
      ? h(
          'ul',
          {},
          problems.slice(0, 10).map((p) => h('li', {}, p)),
        )
      : null,
    h(
      'button',
      {
        type: 'button',
        class: 'link',
        'aria-label': 'Dismiss',
        onclick: () => (banner.hidden = true),
      },
      '×',
    ),
  );
  banner.hidden = false;
}

export function go(view = 'al', runId = null) {
  const base = `#/${encodeURIComponent(ctx.project)}`;
  location.hash = view === 'al' ? base : runId ? `${base}/runs/${runId}` : `${base}/runs`;
}
