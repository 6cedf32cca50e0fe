// The Active Learning view: per model family, the ranked unlabeled images (paged, filtered by
// dataset), where the ranking came from, and its charts. Refreshes itself when the stream says
// ranks changed or a model was trained, and when the settings panel saves.

import { get } from './api.js';
import { changeSummary, histogram, moveLegend, movement } from './chart.js';
import { clear, familyLabel, fmtTime, h, heuristicLabel, plural } from './dom.js';
import { grid, pager } from './grid.js';
import { ctx, loadDetail, on, projectPath } from './state.js';
import { describe } from './ui.js';

const PAGE = 24;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Families with something to show: a ranking, or heuristic none (alphabetical needs no model).
function shown(family) {
  const s = ctx.detail?.families?.[family];
  return Boolean(s?.rank_version) || ctx.settings?.[family]?.heuristic === 'none';
}

const versionLabel = (v, heuristic, model) =>
  `v${v} (${heuristicLabel(heuristic)}${model ? `, model v${model}` : ''})`;

export function rankNotice(n) {
  const p = n.payload ?? {};
  const v = p.previous_version ? `v${p.version} against v${p.previous_version}` : `v${p.version}`;
  const rho = p.spearman == null ? '' : `, Spearman ${p.spearman.toFixed(2)}`;
  return (
    `${familyLabel(n.family)} ranks changed (${v}${p.reason ? `, ${p.reason}` : ''}): ` +
    `${plural(p.entered_count ?? 0, 'image')} entered the top ${p.top_n}, ` +
    `${p.left_count ?? 0} left, overlap ${Math.round((p.overlap_fraction ?? 0) * 100)}%${rho}.`
  );
}

export function renderActiveLearning(main) {
  const abort = new AbortController();
  const sections = new Map(); // family -> {el, offset, dataset, page, history}
  const list = h('div', { class: 'families' });
  const others = h('section', { class: 'others', 'aria-label': 'Families without ranks' });
  clear(
    main,
    h(
      'div',
      { class: 'view-head' },
      h(
        'div',
        {},
        h('h1', {}, 'Active Learning'),
        h('p', { class: 'muted' }, 'Unlabeled images, most informative first: label from the top.'),
      ),
    ),
    list,
    others,
  );

  function section(family) {
    let sec = sections.get(family);
    if (!sec) {
      sec = { family, offset: 0, dataset: '', page: null, history: null, loading: null };
      sec.el = h('section', {
        class: 'family card-panel',
        id: `family-${family}`,
        dataset: { family },
      });
      sections.set(family, sec);
    }
    return sec;
  }

  async function load(sec, { history = true } = {}) {
    const query = {
      family: sec.family,
      limit: PAGE,
      offset: sec.offset,
      dataset: sec.dataset || null,
    };
    const seq = (sec.seq = (sec.seq ?? 0) + 1); // a later load wins over one still in flight
    sec.el.classList.add('loading');
    try {
      const [page, hist] = await Promise.all([
        get(projectPath('/ranks'), query, abort.signal),
        history || !sec.history
          ? get(projectPath('/ranks/history'), { family: sec.family }, abort.signal).catch(
              () => null,
            )
          : sec.history,
      ]);
      if (seq !== sec.seq) return;
      sec.page = page;
      sec.history = hist;
      sec.error = null;
    } catch (e) {
      if (e.name === 'AbortError' || seq !== sec.seq) return;
      sec.error = e;
    } finally {
      if (seq === sec.seq) sec.el.classList.remove('loading');
    }
    draw(sec);
  }

  function draw(sec) {
    const { family, page, history } = sec;
    const datasets = ctx.detail?.datasets?.map((d) => d.dataset) ?? [];
    const filter = h(
      'label',
      { class: 'filter' },
      'Dataset ',
      h(
        'select',
        {
          class: 'dataset-filter',
          onchange: (e) => {
            sec.dataset = e.target.value;
            sec.offset = 0;
            load(sec, { history: false });
          },
        },
        h('option', { value: '', selected: !sec.dataset }, 'All datasets'),
        datasets.map((d) => h('option', { value: d, selected: sec.dataset === d }, d)),
      ),
    );
    const alphabetical = page?.source === 'alphabetical';
    let source;
    if (!page) source = null;
    else if (alphabetical) {
      source = h('span', { class: 'chip chip-off source' }, 'Alphabetical · heuristic None');
    } else {
      source = h(
        'span',
        { class: 'source meta' },
        h('span', { class: 'chip heuristic' }, heuristicLabel(page.heuristic)),
        h(
          'span',
          { class: 'model-version' },
          page.model_version ? `model v${page.model_version}` : 'no model',
        ),
        h('span', { class: 'rank-version' }, `ranks v${page.version}`),
        page.ranked_at
          ? h('span', { class: 'muted', title: page.ranked_at }, fmtTime(page.ranked_at))
          : null,
      );
    }
    const focus = ctx.focus?.family === family ? ctx.focus : null;
    const notice = focus
      ? h(
          'div',
          { class: 'notice', role: 'status' },
          focus.text,
          h(
            'button',
            {
              type: 'button',
              class: 'link',
              'aria-label': 'Dismiss',
              onclick: () => ((ctx.focus = null), draw(sec)),
            },
            '×',
          ),
        )
      : null;
    let body;
    if (sec.error) {
      body = h('p', { class: 'inline-error' }, describe(sec.error).text);
    } else if (!page) {
      body = h('p', { class: 'muted' }, 'Loading…');
    } else {
      body = h(
        'div',
        { class: 'family-body' },
        h(
          'div',
          { class: 'ranked' },
          alphabetical
            ? h(
                'p',
                { class: 'note alphabetical-note' },
                'Ranking is off for this family (heuristic None): ' +
                  'images are listed alphabetically by file name.',
              )
            : null,
          grid(page.items, { scored: !alphabetical, ranked: !alphabetical }),
          pager(page, (offset) => {
            sec.offset = offset;
            load(sec, { history: false });
          }),
        ),
        charts(page, history),
      );
    }
    clear(
      sec.el,
      h(
        'header',
        { class: 'family-head' },
        h('h2', {}, familyLabel(family)),
        source,
        h('span', { class: 'spacer' }),
        page
          ? h('span', { class: 'muted small total' }, `${plural(page.total, 'unlabeled image')}`)
          : null,
        filter,
      ),
      notice,
      body,
    );
  }

  function charts(page, hist) {
    if (page.source === 'alphabetical') {
      return h(
        'aside',
        { class: 'charts' },
        h('h3', {}, 'Scores'),
        h('p', { class: 'muted small' }, 'No scores while ranking is off.'),
      );
    }
    const change = hist?.change;
    return h(
      'aside',
      { class: 'charts' },
      h('h3', {}, 'Score distribution'),
      histogram(hist?.histogram),
      h('h3', {}, 'How the top moved'),
      change
        ? [
            h(
              'p',
              { class: 'small muted' },
              `${versionLabel(change.version, change.heuristic, change.model_version)} against ` +
                versionLabel(
                  change.previous_version,
                  change.previous_heuristic,
                  change.previous_model_version,
                ),
            ),
            movement(hist.moves, change),
            moveLegend(change.top_n),
            changeSummary(change),
          ]
        : h('p', { class: 'muted small' }, 'One rank version so far: nothing to compare yet.'),
    );
  }

  function drawOthers() {
    const rest = ctx.enums.families.filter((f) => !shown(f));
    if (!rest.length) return clear(others);
    clear(
      others,
      h('h2', {}, 'Other families'),
      h(
        'ul',
        {},
        rest.map((f) => {
          const s = ctx.detail?.families?.[f] ?? {};
          const auto = ctx.settings?.[f]?.auto ? 'on' : 'off';
          const todo = s.labeled ? 'train one' : 'label images and train one';
          const why = s.model_version
            ? `model v${s.model_version}, not ranked yet (auto-generated ranks ${auto})`
            : `no assistant yet: ${todo}, or set its heuristic to None or Random`;
          return h(
            'li',
            { dataset: { family: f } },
            h('strong', {}, familyLabel(f)),
            h(
              'span',
              { class: 'muted' },
              ` · ${(s.labeled ?? 0).toLocaleString()} labeled · ${why}`,
            ),
          );
        }),
      ),
    );
  }

  // Which families have a section, in the API's order; new ones load, others keep their page.
  function layout() {
    const want = ctx.enums.families.filter(shown);
    clear(
      list,
      want.map((f) => section(f).el),
    );
    for (const f of want) {
      const sec = section(f);
      if (!sec.page && !sec.error) load(sec);
    }
    if (!want.length) {
      clear(
        list,
        h(
          'p',
          { class: 'empty card-panel' },
          'No family is ranked yet. Import labels and train an assistant; its ranks appear here. ',
          'Or set a family’s heuristic to None to browse its images alphabetically.',
        ),
      );
    }
    drawOthers();
  }

  // After ranks_changed the replica reloads its cache in the background: ask again until the
  // announced version is served.
  async function reloadUntil(family, version) {
    const sec = section(family);
    for (let i = 0; i < 15 && !abort.signal.aborted; i++) {
      await load(sec);
      const page = sec.page;
      if (!version || !page || page.source === 'alphabetical' || page.version >= version) return;
      await sleep(1000);
    }
  }

  const offs = [
    on('settings', (all) => {
      layout();
      for (const [family, sec] of sections) {
        const h0 = sec.page?.source === 'alphabetical' ? 'none' : sec.page?.heuristic;
        if (shown(family) && all?.[family]?.heuristic !== h0) {
          sec.offset = 0;
          load(sec);
        }
      }
    }),
    on('detail', () => layout()),
    on('notification', (n) => {
      if (n.type === 'ranks_changed' || n.type === 'model_trained') {
        loadDetail().catch(() => {}); // rank/model versions in the summary and the layout
        if (shown(n.family) || n.type === 'ranks_changed')
          reloadUntil(n.family, n.payload?.version);
      }
    }),
    on('focus', (focus) => {
      const sec = sections.get(focus.family);
      if (sec) {
        draw(sec);
        sec.el.scrollIntoView({ block: 'start', behavior: 'smooth' });
      }
    }),
  ];

  layout();
  if (ctx.focus)
    setTimeout(() => sections.get(ctx.focus?.family)?.el.scrollIntoView({ block: 'start' }), 300);

  return () => {
    abort.abort();
    offs.forEach((off) => off());
  };
}
