// The thumbnail grid shared by the ranks and a run's result, a pager, and the image viewer.

import { imageURL } from './api.js';
import { $, clear, fmtScore, h } from './dom.js';
import { projectPath } from './state.js';

const THUMB = 128;

function thumbnail(item, alt) {
  const img = h('img', { alt, width: THUMB, height: THUMB, decoding: 'async' });
  imageURL(projectPath(`/images/${item.image_id}/thumbnail?size=${THUMB}`)).then(
    (src) => (img.src = src),
    () => img.classList.add('broken'),
  );
  return img;
}

export function openImage(item) {
  const dialog = $('#image-dialog');
  // small images are scaled up with crisp pixels; large photos are scaled down smoothly
  const img = h('img', {
    alt: item.file_name,
    onload: () => img.classList.toggle('tiny', img.naturalWidth < 256),
  });
  imageURL(projectPath(`/images/${item.image_id}`)).then((src) => (img.src = src));
  clear(
    dialog,
    h(
      'form',
      { method: 'dialog' },
      h(
        'div',
        { class: 'image-head' },
        h('strong', {}, item.file_name),
        h(
          'span',
          { class: 'muted' },
          ` · ${item.dataset} · rank #${item.rank} · score ${fmtScore(item.score)}`,
        ),
        h('button', { class: 'link close', 'aria-label': 'Close' }, '×'),
      ),
      img,
    ),
  );
  dialog.showModal();
}

// ranked: show each image's rank (alphabetical order has none worth showing: its dataset instead)
export function grid(items, { scored = true, ranked = true } = {}) {
  if (!items.length) return h('p', { class: 'muted empty-grid' }, 'No unlabeled images here.');
  return h(
    'ol',
    { class: 'grid' },
    items.map((it) =>
      h(
        'li',
        {
          class: 'card',
          dataset: { file: it.file_name, rank: it.rank, imageId: it.image_id },
        },
        h(
          'button',
          {
            type: 'button',
            class: 'thumb',
            title: `Open ${it.file_name}`,
            onclick: () => openImage(it),
          },
          thumbnail(it, it.file_name),
        ),
        h(
          'div',
          { class: 'caption' },
          ranked
            ? h('span', { class: 'rank' }, `#${it.rank}`)
            : h('span', { class: 'ds muted' }, it.dataset),
          scored
            ? h('span', { class: 'score', title: 'Informativeness score' }, fmtScore(it.score))
            : null,
        ),
        h('div', { class: 'file', title: `${it.file_name} (${it.dataset})` }, it.file_name),
      ),
    ),
  );
}

export function pager({ total, offset, limit }, onPage) {
  const last = Math.min(offset + limit, total);
  return h(
    'div',
    { class: 'pager' },
    h(
      'button',
      { type: 'button', disabled: offset <= 0, onclick: () => onPage(Math.max(0, offset - limit)) },
      '‹ Previous',
    ),
    h(
      'span',
      { class: 'page-info' },
      total ? `${offset + 1}–${last} of ${total.toLocaleString()}` : '0 images',
    ),
    h(
      'button',
      { type: 'button', disabled: last >= total, onclick: () => onPage(offset + limit) },
      'Next ›',
    ),
  );
}
