// Notifications: the bell's unread count, kept live from the event stream; the list opens
// what each notification is about.

import { follow, get, post } from './api.js';
import { $, clear, familyLabel, fmtTime, h, plural } from './dom.js';
import { rankNotice } from './ranks.js';
import { ctx, emit, projectPath } from './state.js';
import { go, showError } from './ui.js';

const LISTED = 30;

function text(n) {
  const p = n.payload ?? {};
  const fam = familyLabel(n.family);
  switch (n.type) {
    case 'ranks_changed':
      return rankNotice(n);
    case 'run_completed':
      return `Run “${p.name}” completed: ${plural(p.images ?? 0, 'image')} ranked.`;
    case 'run_failed':
      return `Run “${p.name}” failed: ${p.error ?? 'no reason given'}`;
    case 'model_trained': {
      const m = p.metric;
      const score = m?.value == null ? '' : ` (${m.name} ${m.value.toFixed(2)})`;
      return `${fam} model v${p.version} trained on ${plural(p.label_count ?? 0, 'label')}${score}.`;
    }
    case 'training_failed':
      return `${fam} training failed: ${p.error ?? 'no reason given'}`;
    default:
      return `${n.type}${n.family ? ` (${fam})` : ''}`;
  }
}

const TITLES = {
  ranks_changed: 'Ranks changed',
  run_completed: 'Run completed',
  run_failed: 'Run failed',
  model_trained: 'Model trained',
  training_failed: 'Training failed',
};

export function startNotifications() {
  const abort = new AbortController();
  const bell = $('#bell');
  const badge = $('#unread');
  const panel = $('#notifications');
  const live = $('#live');
  const state = { unread: 0, lastId: 0, readThrough: 0, items: [] };

  const setUnread = (n) => {
    state.unread = Math.max(0, n);
    badge.textContent = state.unread > 99 ? '99+' : String(state.unread);
    badge.hidden = state.unread === 0;
    bell.setAttribute('aria-label', `Notifications: ${state.unread} unread`);
    bell.dataset.unread = String(state.unread);
  };

  async function sync() {
    const got = await get(projectPath('/notifications'), { after: 0, limit: 1 }, abort.signal);
    const latest = await get(
      projectPath('/notifications'),
      { after: Math.max(0, got.last_id - LISTED), limit: LISTED },
      abort.signal,
    );
    state.items = latest.items;
    state.lastId = latest.last_id;
    setUnread(latest.unread);
    return latest;
  }

  async function markRead(upTo) {
    const body = upTo == null ? {} : { up_to: upTo };
    const out = await post(projectPath('/notifications/read'), body);
    state.readThrough = out.read_through;
    setUnread(out.unread);
    drawPanel();
  }

  function open(n) {
    closePanel();
    if (n.id > state.readThrough) markRead(n.id).catch(showError);
    if (n.type.startsWith('run_') && n.payload?.run_id) return go('runs', n.payload.run_id);
    ctx.focus = { family: n.family, text: text(n), id: n.id };
    go('al');
    emit('focus', ctx.focus);
  }

  function drawPanel() {
    const unreadFrom = state.lastId - state.unread; // the read marker: ids above it are unread
    const items = [...state.items].reverse();
    clear(
      panel,
      h(
        'div',
        { class: 'popover-head' },
        h('strong', {}, 'Notifications'),
        h(
          'button',
          {
            type: 'button',
            class: 'link',
            disabled: !state.unread,
            onclick: () => markRead().catch(showError),
          },
          'Mark all read',
        ),
      ),
      items.length
        ? h(
            'ul',
            { class: 'notification-list' },
            items.map((n) =>
              h(
                'li',
                { class: n.id > unreadFrom ? 'unread' : '' },
                h(
                  'button',
                  {
                    type: 'button',
                    class: `notification type-${n.type}`,
                    dataset: { id: n.id, type: n.type },
                    onclick: () => open(n),
                  },
                  h(
                    'span',
                    { class: 'n-title' },
                    TITLES[n.type] ?? n.type,
                    h('span', { class: 'muted' }, ` · ${fmtTime(n.time)}`),
                  ),
                  h('span', { class: 'n-text' }, text(n)),
                ),
              ),
            ),
          )
        : h(
            'p',
            { class: 'muted pad' },
            'Nothing yet. Trainings, rank changes and runs show up here.',
          ),
    );
  }

  function closePanel() {
    panel.hidden = true;
    bell.setAttribute('aria-expanded', 'false');
  }
  async function togglePanel() {
    if (!panel.hidden) return closePanel();
    drawPanel();
    panel.hidden = false;
    bell.setAttribute('aria-expanded', 'true');
    try {
      await sync();
      drawPanel();
    } catch (e) {
      showError(e);
    }
  }
  const onDocClick = (e) => {
    if (!panel.hidden && !panel.contains(e.target) && !bell.contains(e.target)) closePanel();
  };
  const onKey = (e) => e.key === 'Escape' && closePanel();
  bell.addEventListener('click', togglePanel);
  document.addEventListener('click', onDocClick);
  document.addEventListener('keydown', onKey);

  (async () => {
    try {
      await sync();
    } catch (e) {
      if (e.name !== 'AbortError') showError(e);
      return;
    }
    await follow(projectPath('/notifications/stream'), {
      after: state.lastId,
      signal: abort.signal,
      onState: (s) => {
        live.dataset.state = s;
        live.title = s === 'live' ? 'Live updates: connected' : 'Live updates: reconnecting…';
      },
      onEvent: ({ data }) => {
        if (data.id <= state.lastId) return;
        state.lastId = data.id;
        state.items = [...state.items, data].slice(-LISTED);
        setUnread(state.unread + 1);
        if (!panel.hidden) drawPanel();
        emit('notification', data);
      },
    });
  })();

  return () => {
    abort.abort();
    closePanel();
    bell.removeEventListener('click', togglePanel);
    document.removeEventListener('click', onDocClick);
    document.removeEventListener('keydown', onKey);
    live.dataset.state = 'off';
  };
}
