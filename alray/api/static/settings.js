// The Active Learning settings panel (lower left): per family heuristic (None turns ranking
// off), reduction, auto-generated ranks and retrain-every-N. Saved with PUT; the coordinator
// re-ranks when the heuristic or reduction changes.

import { ApiError, put } from './api.js';
import { $, clear, familyLabel, h, heuristicLabel } from './dom.js';
import { ctx, emit, loadDetail, on, projectPath } from './state.js';
import { describe } from './ui.js';

const HINTS = {
  none: 'No ranking: images in alphabetical order.',
  random: 'Random order (a baseline; needs no model).',
  margin: 'Small gap between the top two classes = informative.',
  least_confidence: 'Low top probability = informative.',
  ratio: 'Second-best close to the best = informative.',
  entropy: 'Spread-out probabilities = informative.',
  variance: 'Flat probabilities = informative.',
  bald: 'Disagreement between MC-dropout passes.',
};

export function renderSettings(el) {
  let family =
    ctx.enums.families.find((f) => ctx.detail?.families?.[f]?.rank_version) ??
    ctx.enums.families[0];
  let note = ''; // the last save's outcome, kept across redraws

  function draw() {
    const s = ctx.settings?.[family];
    if (!s) return clear(el, h('p', { class: 'muted' }, 'Loading settings…'));
    const status = h(
      'p',
      { class: 'small save-status', role: 'status', id: 'settings-status' },
      note,
    );
    const err = (f) => h('p', { class: 'field-error', id: `settings-err-${f}` });
    const form = h(
      'form',
      { id: 'settings-form', novalidate: true },
      h('label', { for: 'settings-family' }, 'Family'),
      h(
        'select',
        {
          id: 'settings-family',
          onchange: (e) => {
            family = e.target.value;
            note = '';
            draw();
          },
        },
        ctx.enums.families.map((f) =>
          h('option', { value: f, selected: f === family }, familyLabel(f)),
        ),
      ),
      h('label', { for: 'settings-heuristic' }, 'Heuristic'),
      h(
        'select',
        {
          id: 'settings-heuristic',
          name: 'heuristic',
          onchange: (e) => ($('#settings-hint', el).textContent = HINTS[e.target.value] ?? ''),
        },
        ctx.enums.heuristics.map((x) =>
          h('option', { value: x, selected: x === s.heuristic }, heuristicLabel(x)),
        ),
      ),
      h('p', { class: 'hint', id: 'settings-hint' }, HINTS[s.heuristic] ?? ''),
      err('heuristic'),
      h(
        'label',
        { for: 'settings-reduction' },
        'Reduction ',
        h('span', { class: 'muted' }, '(objects, pixels, tags)'),
      ),
      h(
        'select',
        { id: 'settings-reduction', name: 'reduction' },
        ctx.enums.reductions.map((x) => h('option', { value: x, selected: x === s.reduction }, x)),
      ),
      err('reduction'),
      h(
        'label',
        { class: 'check switch' },
        h('input', { type: 'checkbox', id: 'settings-auto', name: 'auto', checked: s.auto }),
        ' Auto-generated ranks',
      ),
      err('auto'),
      h('label', { for: 'settings-retrain' }, 'Retrain every'),
      h(
        'div',
        { class: 'inline' },
        h('input', {
          id: 'settings-retrain',
          name: 'retrain_every',
          type: 'number',
          min: 0,
          step: 1,
          value: s.retrain_every ?? 0,
          inputmode: 'numeric',
        }),
        h('span', { class: 'muted small' }, 'new labels (0: only when asked)'),
      ),
      err('retrain_every'),
      err('form'),
      h(
        'div',
        { class: 'actions' },
        h('button', { type: 'submit', class: 'primary', id: 'settings-save' }, 'Save'),
      ),
      status,
    );
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      save(form, status);
    });
    clear(
      el,
      h('h2', { class: 'panel-title', id: 'settings-title' }, 'Active Learning settings'),
      form,
    );
  }

  async function save(form, status) {
    form.querySelectorAll('.field-error').forEach((p) => (p.textContent = ''));
    const retrain = form.retrain_every.value.trim();
    const body = {
      heuristic: form.heuristic.value,
      reduction: form.reduction.value,
      auto: form.auto.checked,
      retrain_every: retrain === '' ? 0 : /^\d+$/.test(retrain) ? Number(retrain) : retrain,
    };
    const button = $('#settings-save', form);
    button.disabled = true;
    status.textContent = 'Saving…';
    try {
      const out = await put(projectPath(`/settings/${family}`), body);
      ctx.settings = { ...ctx.settings, [family]: out.settings };
      const doing = [out.reranking && 're-ranking', out.training && 'training']
        .filter(Boolean)
        .join(', ');
      note = `Saved ${familyLabel(family)}${doing ? ` · ${doing}…` : ''}`;
      draw(); // settled values (retrain 0 reads back as off)
      emit('settings', ctx.settings);
      loadDetail().catch(() => {});
    } catch (e) {
      status.textContent = '';
      const errors = e instanceof ApiError ? e.errors : [];
      if (!errors.length) $('#settings-err-form', form).textContent = describe(e).text;
      for (const x of errors) {
        const field = x.field?.split('.').pop();
        const target = $(`#settings-err-${field}`, form) ?? $('#settings-err-form', form);
        target.textContent = x.message;
      }
    } finally {
      button.disabled = false;
    }
  }

  draw();
  // saved elsewhere (another tab, the CLI) is not pushed; a project switch re-renders the panel
  return on('settings', () => {
    if (!el.contains(document.activeElement)) draw();
  });
}
