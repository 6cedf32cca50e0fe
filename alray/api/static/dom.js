// Small DOM helpers. Text always goes in as text: file names, run names and API messages are
// data, never markup.

const PROPS = new Set(['value', 'checked', 'disabled', 'selected', 'hidden', 'open']);

function build(el, attrs, children) {
  for (const [k, v] of Object.entries(attrs ?? {})) {
    if (v == null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (PROPS.has(k)) el[k] = v;
    else el.setAttribute(k === 'className' ? 'class' : k, v === true ? '' : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c == null || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

export const h = (tag, attrs, ...children) => build(document.createElement(tag), attrs, children);

export const svg = (tag, attrs, ...children) =>
  build(document.createElementNS('http://www.w3.org/2000/svg', tag), attrs, children);

export const $ = (sel, root = document) => root.querySelector(sel);

export function clear(el, ...children) {
  el.replaceChildren(...children.flat(Infinity).filter((c) => c != null && c !== false));
  return el;
}

export const FAMILY_LABELS = {
  classifier: 'Classifier',
  tagger: 'Tagger',
  detector: 'Detector',
  instance_segmentor: 'Instance segmentor',
  semantic_segmentor: 'Semantic segmentor',
  attributor: 'Attributor',
};

export const familyLabel = (f) => FAMILY_LABELS[f] ?? f;

export function heuristicLabel(name) {
  if (name === 'none') return 'None (alphabetical)';
  return name ? name.replaceAll('_', ' ') : '—';
}

export function fmtScore(s, digits = 4) {
  if (s == null) return '—';
  return Math.abs(s) >= 100 ? s.toFixed(0) : s.toFixed(digits);
}

export function fmtTime(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  const secs = (Date.now() - d.getTime()) / 1000;
  if (secs < 60) return 'just now';
  if (secs < 3600) return `${Math.floor(secs / 60)} min ago`;
  if (secs < 86400) return `${Math.floor(secs / 3600)} h ago`;
  return d.toLocaleString();
}

export const plural = (n, one, many = `${one}s`) => `${n.toLocaleString()} ${n === 1 ? one : many}`;
