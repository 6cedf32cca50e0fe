// Two small inline-SVG charts per family, no library: the score distribution of the images
// ranked now, and how the top of the ranking moved between the last two rank versions.

import { fmtScore, h, svg } from './dom.js';

const W = 300;

export function histogram(hist) {
  if (!hist || !hist.counts.length) return h('p', { class: 'muted small' }, 'No scores to plot.');
  const H = 110;
  const pad = { l: 30, r: 6, t: 8, b: 22 };
  const iw = W - pad.l - pad.r;
  const ih = H - pad.t - pad.b;
  const top = Math.max(...hist.counts, 1);
  const bw = iw / hist.counts.length;
  const bars = hist.counts.map((c, i) => {
    const bh = (c / top) * ih;
    const lo = hist.edges[i];
    const hi = hist.edges[i + 1];
    return svg(
      'rect',
      {
        x: (pad.l + i * bw + 0.5).toFixed(1),
        y: (pad.t + ih - bh).toFixed(1),
        width: Math.max(bw - 1, 1).toFixed(1),
        height: bh.toFixed(1),
        class: 'bar',
      },
      svg('title', {}, `${fmtScore(lo)}–${fmtScore(hi)}: ${c} image${c === 1 ? '' : 's'}`),
    );
  });
  const base = pad.t + ih;
  return svg(
    'svg',
    {
      viewBox: `0 0 ${W} ${H}`,
      class: 'chart histogram',
      role: 'img',
      'aria-label': `Scores of ${hist.count} images: ${fmtScore(hist.min)}–${fmtScore(hist.max)}`,
    },
    svg('line', { x1: pad.l, x2: W - pad.r, y1: base, y2: base, class: 'axis' }),
    svg('line', { x1: pad.l, x2: pad.l, y1: pad.t, y2: base, class: 'axis' }),
    svg('text', { x: pad.l - 4, y: pad.t + 8, class: 'tick', 'text-anchor': 'end' }, String(top)),
    svg('text', { x: pad.l - 4, y: base, class: 'tick', 'text-anchor': 'end' }, '0'),
    svg('text', { x: pad.l, y: H - 6, class: 'tick' }, fmtScore(hist.min)),
    svg(
      'text',
      { x: W - pad.r, y: H - 6, class: 'tick', 'text-anchor': 'end' },
      fmtScore(hist.max),
    ),
    svg(
      'text',
      { x: (pad.l + W - pad.r) / 2, y: H - 6, class: 'tick', 'text-anchor': 'middle' },
      'score',
    ),
    bars,
  );
}

// A slope chart: left axis the previous version's rank, right axis the current one. Images
// from beyond the shown range (or not ranked before) start from a lane at the bottom.
export function movement(moves, change) {
  if (!moves?.length || !change) return null;
  const H = 190;
  const pad = { l: 44, r: 44, t: 18, b: 22 };
  const shownMax = Math.max(...moves.map((m) => m.rank));
  const lane = pad.t + (H - pad.t - pad.b); // y of the "below" lane
  const ih = lane - pad.t - 16;
  const y = (r) => pad.t + ((r - 1) / Math.max(shownMax - 1, 1)) * ih;
  const x0 = pad.l;
  const x1 = W - pad.r;
  const lines = moves.map((m) => {
    // entered: new to the top N of the change summary; from below: climbed from beyond the chart
    const entered = m.previous_rank == null || m.previous_rank > change.top_n;
    const below = entered || m.previous_rank > shownMax;
    const ya = below ? lane : y(m.previous_rank);
    const yb = y(m.rank);
    const up = m.previous_rank > m.rank;
    const cls = entered
      ? 'move entered'
      : up
        ? 'move up'
        : m.previous_rank === m.rank
          ? 'move same'
          : 'move down';
    const was = m.previous_rank == null ? 'not ranked before' : `was #${m.previous_rank}`;
    return svg(
      'g',
      { class: cls },
      svg('title', {}, `${m.file_name}: #${m.rank}, ${was}`),
      svg('line', { x1: x0, y1: ya.toFixed(1), x2: x1, y2: yb.toFixed(1) }),
      svg('circle', { cx: x0, cy: ya.toFixed(1), r: 2.5 }),
      svg('circle', { cx: x1, cy: yb.toFixed(1), r: 2.5 }),
    );
  });
  const label = (x, yy, text, anchor) =>
    svg('text', { x, y: yy, class: 'tick', 'text-anchor': anchor }, text);
  return svg(
    'svg',
    {
      viewBox: `0 0 ${W} ${H}`,
      class: 'chart movement',
      role: 'img',
      'aria-label': `Top ${moves.length} of v${change.version} against v${change.previous_version}`,
    },
    label(x0, 11, `v${change.previous_version}`, 'middle'),
    label(x1, 11, `v${change.version}`, 'middle'),
    label(x0 - 6, y(1) + 3, '#1', 'end'),
    label(x1 + 6, y(1) + 3, '#1', 'start'),
    label(x0 - 6, y(shownMax) + 3, `#${shownMax}`, 'end'),
    label(x1 + 6, y(shownMax) + 3, `#${shownMax}`, 'start'),
    label(x0 - 6, lane + 3, `>#${shownMax}`, 'end'),
    svg('line', { x1: x0, x2: x0, y1: pad.t - 2, y2: lane, class: 'axis' }),
    svg('line', { x1: x1, x2: x1, y1: pad.t - 2, y2: y(shownMax), class: 'axis' }),
    lines,
  );
}

export function changeSummary(change) {
  if (!change) return null;
  const pct = Math.round((change.overlap_fraction ?? 0) * 100);
  const rho = change.spearman == null ? 'n/a' : change.spearman.toFixed(2);
  return h(
    'p',
    { class: 'small change-summary' },
    h('strong', {}, `${change.entered_count} entered`),
    ` the top ${change.top_n}, ${change.left_count} left · overlap ${pct}% · Spearman ${rho}`,
  );
}

export function moveLegend(topN) {
  const item = (cls, text) => h('span', { class: `legend-item ${cls}` }, text);
  return h(
    'p',
    { class: 'legend small muted' },
    item('up', 'climbed'),
    item('down', 'fell'),
    item('entered', `new to the top ${topN}`),
  );
}
