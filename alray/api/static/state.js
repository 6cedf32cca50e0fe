// What the views share: the open project, its detail and settings, the API's enums, and an
// event bus (notifications from the stream, settings saved) so views refresh themselves.

import { get } from './api.js';

export const ctx = {
  project: null, // name of the open project
  detail: null, // GET /api/projects/{p}: datasets, per family counts, model and rank versions
  settings: null, // per family settings
  enums: {
    families: [
      'classifier',
      'tagger',
      'detector',
      'instance_segmentor',
      'semantic_segmentor',
      'attributor',
    ],
    heuristics: [
      'margin',
      'least_confidence',
      'ratio',
      'entropy',
      'variance',
      'bald',
      'random',
      'none',
    ],
    reductions: ['mean', 'max', 'sum'],
  },
  focus: null, // {family, notification}: what an opened notification points at
};

export const projectPath = (suffix = '') =>
  `/api/projects/${encodeURIComponent(ctx.project)}${suffix}`;

const bus = new EventTarget();
export const emit = (type, detail) => bus.dispatchEvent(new CustomEvent(type, { detail }));
export function on(type, fn) {
  const handler = (e) => fn(e.detail);
  bus.addEventListener(type, handler);
  return () => bus.removeEventListener(type, handler);
}

export async function loadDetail() {
  ctx.detail = await get(projectPath());
  emit('detail', ctx.detail);
  return ctx.detail;
}

export async function loadSettings() {
  ctx.settings = (await get(projectPath('/settings'))).families;
  emit('settings', ctx.settings);
  return ctx.settings;
}

// The enums the server accepts, from its OpenAPI spec: new heuristics show up without a page
// change. The built-in lists above stay when the spec cannot be read.
export async function loadEnums() {
  try {
    const spec = await get('/openapi.json');
    const props = spec.components.schemas.RunCreate.properties;
    for (const [key, prop] of [
      ['families', props.family],
      ['heuristics', props.heuristic],
      ['reductions', props.reduction],
    ]) {
      const values = prop?.enum ?? prop?.anyOf?.find((s) => s.enum)?.enum;
      if (values?.length) ctx.enums[key] = values;
    }
  } catch (e) {
    console.warn('alray: using the built-in enums', e);
  }
}
