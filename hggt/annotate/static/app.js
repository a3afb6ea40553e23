// HGGT annotation page (ANNOTATION.md §6.5): plain ES module, no build step, no CDN.
//
// Every action becomes an event with a client-made id. Events wait in a localStorage outbox
// and are POSTed until the server acknowledges them; the server ignores replays, so retrying
// is always safe. The page never learns which model made which candidate: it sees an opaque
// assignment id and display positions 0..3 (shown as A..D).

const KEY_LABELS = { p: 'Positive', 1: 'Positive', s: 'Similar', 2: 'Similar', n: 'Negative', 3: 'Negative' };
const CODE_LABELS = {
  Digit1: 'Positive', Numpad1: 'Positive',
  Digit2: 'Similar', Numpad2: 'Similar',
  Digit3: 'Negative', Numpad3: 'Negative',
};
const LABELS = ['Positive', 'Similar', 'Negative'];
const ZOOM_MIN = 0.05;
const ZOOM_MAX = 64;
const ZOOM_STEP = 1.25;
const RETRY_MAX_MS = 3000;

const $ = (sel, root = document) => root.querySelector(sel);
const cells = [...document.querySelectorAll('.cand')];
const refImg = $('#vp-ref img');
const candImgs = cells.map((c) => $('img', c));
const allImgs = [refImg, ...candImgs];
const viewports = [...document.querySelectorAll('.vp')];

class AuthError extends Error {}
class HttpError extends Error {
  constructor(status, what) { super(`${what}: HTTP ${status}`); this.status = status; }
}

// ---------------------------------------------------------------- token
function takeToken() {
  // The link carries the token in the fragment (never sent to servers or logs); keep it in
  // localStorage and clean the address bar.
  const m = location.hash.match(/[#&]t=([A-Za-z0-9_-]+)/);
  if (m) {
    localStorage.setItem('hggt.token', m[1]);
    history.replaceState(null, '', location.pathname + location.search);
  }
  return localStorage.getItem('hggt.token');
}
const token = takeToken();
const tag = token ? token.slice(0, 12) : 'none';
const K = {
  outbox: `hggt.outbox.${tag}`,
  dead: `hggt.refused.${tag}`,
  view: `hggt.view.${tag}`,
  focus: `hggt.focus.${tag}`,
  active: (aid) => `hggt.active.${tag}.${aid}`,
};

// ---------------------------------------------------------------- state
const S = {
  group: null, // the /api/next payload being shown
  labels: [null, null, null, null], // by display position
  stack: [], // label events not undone: {id, pos, prev}
  focus: 0,
  refUrl: null,
  candUrls: [],
  natural: { w: 0, h: 0 },
  view: loadJson(K.view, { s: 1, tx: 0, ty: 0, fit: true }),
  flicker: null, // position showing the original, or null
  busy: true,
  maxZoom: 0,
  activeMs: 0,
  visibleSince: null,
};
const net = { inflight: false, failures: 0, down: false, refused: 0, auth: false, timer: null };

function loadJson(key, fallback) {
  try { return JSON.parse(localStorage.getItem(key)) ?? fallback; } catch { return fallback; }
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function uuid() {
  // crypto.randomUUID needs a secure context; getRandomValues works on a LAN address too.
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

async function api(path, opts = {}) {
  const headers = { Authorization: `Bearer ${token}`, ...(opts.headers || {}) };
  const r = await fetch(path, { ...opts, headers, cache: 'no-store' });
  if (r.status === 401) {
    net.auth = true;
    showStatus();
    throw new AuthError('token not accepted');
  }
  return r;
}

// ---------------------------------------------------------------- outbox
const readOutbox = () => loadJson(K.outbox, []);
const writeOutbox = (q) => localStorage.setItem(K.outbox, JSON.stringify(q));

function record(ev) {
  const full = { id: uuid(), aid: S.group.aid, client_ts: Date.now(), ...ev };
  const q = readOutbox();
  q.push(full);
  writeOutbox(q);
  showStatus();
  flush();
  return full;
}

async function flush() {
  if (net.inflight || net.auth) return;
  const q = readOutbox();
  if (!q.length) { showStatus(); return; }
  net.inflight = true;
  const batch = q.slice(0, 200);
  let progressed = false;
  try {
    const r = await api('/api/events', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ events: batch }),
    });
    if (r.ok) {
      const data = await r.json();
      const gone = new Set([...data.acked, ...Object.keys(data.rejected)]);
      for (const [id, why] of Object.entries(data.rejected)) console.warn('event refused', id, why);
      writeOutbox(readOutbox().filter((e) => !gone.has(e.id)));
      net.failures = 0; net.down = false; net.refused = 0;
      progressed = true;
    } else if (r.status >= 500 || r.status === 408 || r.status === 429) {
      throw new HttpError(r.status, 'events');
    } else {
      // Refused as a whole (e.g. the study was reset): keep the events aside, never drop them.
      const ids = new Set(batch.map((e) => e.id));
      localStorage.setItem(K.dead, JSON.stringify([...loadJson(K.dead, []), ...batch]));
      writeOutbox(readOutbox().filter((e) => !ids.has(e.id)));
      net.refused += batch.length;
      console.error('events refused by the server', r.status, await r.text());
    }
  } catch (e) {
    if (!(e instanceof AuthError)) { net.failures += 1; net.down = true; }
  } finally {
    net.inflight = false;
  }
  showStatus();
  if (readOutbox().length && !net.auth) {
    clearTimeout(net.timer);
    const wait = progressed ? 0 : Math.min(RETRY_MAX_MS, 250 * 2 ** Math.min(net.failures, 4));
    net.timer = setTimeout(flush, wait);
  }
}

function showStatus() {
  const n = readOutbox().length;
  let state, text;
  if (net.auth) [state, text] = ['error', 'token not accepted — use your link again'];
  else if (net.refused) [state, text] = ['error', `${net.refused} refused (kept locally)`];
  else if (n === 0) [state, text] = ['saved', 'saved ✓'];
  else if (net.down) [state, text] = ['offline', `offline · ${n} pending`];
  else [state, text] = ['pending', `pending ${n}`];
  const el = $('#save-status');
  el.dataset.state = state;
  el.textContent = text;
}

async function drained(aid = null) {
  // Resolves once the outbox holds no event (of this assignment, if given). flush() keeps
  // retrying with backoff on its own; this only watches.
  flush();
  while (readOutbox().some((e) => aid === null || e.aid === aid)) await sleep(100);
}

// ---------------------------------------------------------------- groups
function message(text) {
  const m = $('#message');
  m.hidden = !text;
  m.textContent = text || '';
}

async function fetchBlob(url) {
  const r = await api(url);
  if (!r.ok) throw new HttpError(r.status, url);
  return URL.createObjectURL(await r.blob());
}

async function loadNext() {
  S.busy = true;
  document.body.dataset.ready = '0';
  render();
  for (;;) {
    try {
      const r = await api('/api/next');
      if (!r.ok) throw new HttpError(r.status, 'next group');
      await show(await r.json());
      return;
    } catch (e) {
      if (e instanceof AuthError) { message('Your link is not valid for this study.'); return; }
      if (e instanceof HttpError && e.status < 500) { message(`Error: ${e.message}`); return; }
      net.down = true;
      showStatus();
      message('Server unreachable — retrying…');
      await sleep(1500);
    }
  }
}

function applyEvent(e) {
  if (e.kind === 'label') {
    S.stack.push({ id: e.id, pos: e.pos, prev: S.labels[e.pos] });
    S.labels[e.pos] = e.label;
  } else if (e.kind === 'undo') {
    const i = S.stack.findIndex((x) => x.id === e.undoes);
    if (i >= 0) S.stack.splice(i, 1);
    S.labels[e.pos] = e.label ?? null;
  }
}

async function show(g) {
  if (g.finished) {
    S.group = null;
    S.busy = false;
    progress(g.done, g.total);
    $('#group-info').textContent = `${g.done}/${g.total} done`;
    document.body.dataset.finished = '1';
    document.body.dataset.ready = '1';
    message(g.total ? `All ${g.total} groups done — thank you!` : 'No groups are assigned to you yet.');
    render();
    return;
  }
  const urls = await Promise.all([g.ref, ...g.slots.map((s) => s.img)].map(fetchBlob));
  for (const u of [S.refUrl, ...S.candUrls]) if (u) URL.revokeObjectURL(u);
  stopFlicker();
  S.group = g;
  [S.refUrl, ...S.candUrls] = urls;
  refImg.src = S.refUrl;
  candImgs.forEach((im, i) => { im.src = S.candUrls[i]; });
  await Promise.all(allImgs.map((im) => im.decode().catch(() => {})));
  S.natural = { w: refImg.naturalWidth, h: refImg.naturalHeight };
  for (const im of allImgs) {
    im.style.width = `${S.natural.w}px`;
    im.style.height = `${S.natural.h}px`;
  }
  // Server history first, then whatever of ours it has not acknowledged yet.
  S.labels = [null, null, null, null];
  S.stack = [];
  const known = new Set(g.history.map((e) => e.id));
  g.history.forEach(applyEvent);
  readOutbox().filter((e) => e.aid === g.aid && !known.has(e.id)).forEach(applyEvent);
  const saved = loadJson(K.focus, {});
  const firstOpen = S.labels.findIndex((l) => !l);
  S.focus = saved.aid === g.aid ? saved.focus : Math.max(0, firstOpen);
  S.maxZoom = 0;
  S.activeMs = Number(localStorage.getItem(K.active(g.aid)) || 0);
  S.visibleSince = document.visibilityState === 'visible' ? performance.now() : null;
  if (!g.viewed && !readOutbox().some((e) => e.aid === g.aid && e.kind === 'view')) {
    record({ kind: 'view', payload: { dpr: devicePixelRatio, viewport: [innerWidth, innerHeight] } });
  }
  if (S.view.fit) fit(); else applyView();
  S.busy = false;
  message('');
  document.body.dataset.aid = g.aid;
  document.body.dataset.ready = '1';
  render();
}

function progress(done, total) {
  $('#progress-fill').style.width = total ? `${(100 * done) / total}%` : '0';
}

function render() {
  cells.forEach((c, i) => {
    c.classList.toggle('focused', i === S.focus);
    for (const l of LABELS) c.classList.toggle(`lab-${l}`, S.labels[i] === l);
    c.dataset.label = S.labels[i] || '';
    c.querySelectorAll('button[data-label]').forEach((b) => {
      b.classList.toggle('active', b.dataset.label === S.labels[i]);
    });
  });
  const n = S.labels.filter(Boolean).length;
  $('#labelled-info').textContent = `${n}/4 labelled`;
  $('#submit').disabled = !S.group || S.busy || n < 4;
  $('#undo').disabled = !S.group || S.busy || !S.stack.length;
  if (S.group) {
    $('#group-info').textContent = `group ${S.group.seq}/${S.group.total}`;
    progress(S.group.done, S.group.total);
    localStorage.setItem(K.focus, JSON.stringify({ aid: S.group.aid, focus: S.focus }));
  }
}

// ---------------------------------------------------------------- actions
function setFocus(pos) {
  if (pos !== S.focus) stopFlicker();
  S.focus = ((pos % 4) + 4) % 4;
  render();
}

function setLabel(label) {
  if (!S.group || S.busy) return;
  stopFlicker();
  const pos = S.focus;
  applyEvent(record({ kind: 'label', pos, label }));
  // Advance to the next unlabelled candidate, if any.
  for (let k = 1; k <= 4; k += 1) {
    if (!S.labels[(pos + k) % 4]) { S.focus = (pos + k) % 4; break; }
  }
  render();
}

function undo() {
  if (!S.group || S.busy || !S.stack.length) return;
  stopFlicker();
  const top = S.stack[S.stack.length - 1];
  applyEvent(record({ kind: 'undo', pos: top.pos, label: top.prev, undoes: top.id }));
  S.focus = top.pos;
  render();
}

async function submit() {
  if (!S.group || S.busy || S.labels.some((l) => !l)) return;
  S.busy = true;
  stopFlicker();
  tickActive();
  const aid = S.group.aid;
  record({
    kind: 'submit',
    payload: {
      active_s: Math.round(S.activeMs) / 1000,
      max_zoom: S.maxZoom,
      dpr: devicePixelRatio,
      viewport: [innerWidth, innerHeight],
    },
  });
  render();
  message('Saving…');
  await drained(aid);
  localStorage.removeItem(K.active(aid));
  await loadNext();
}

function startFlicker() {
  if (!S.group || S.busy || S.flicker !== null) return;
  S.flicker = S.focus;
  candImgs[S.flicker].src = S.refUrl;
  cells[S.flicker].classList.add('flicker');
}

function stopFlicker() {
  if (S.flicker === null) return;
  candImgs[S.flicker].src = S.candUrls[S.flicker];
  cells[S.flicker].classList.remove('flicker');
  S.flicker = null;
}

// ---------------------------------------------------------------- zoom and pan
const vpSize = () => viewports[0].clientWidth; // all viewports share one CSS size

function applyView() {
  const { s, tx, ty } = S.view;
  const t = `translate(${tx}px, ${ty}px) scale(${s})`;
  // Blocky pixels once an image pixel covers a device pixel or more: smoothing would hide
  // (or invent) the very artifacts being judged.
  const pixelated = s * devicePixelRatio >= 1;
  for (const im of allImgs) {
    im.style.transform = t;
    im.classList.toggle('pixelated', pixelated);
  }
  S.maxZoom = Math.max(S.maxZoom, s * devicePixelRatio);
  $('#zoom-level').textContent = S.view.fit ? 'fit' : `${Math.round(s * devicePixelRatio * 100)}%`;
  localStorage.setItem(K.view, JSON.stringify(S.view));
}

function fit() {
  const { w, h } = S.natural;
  if (!w || !h) return;
  const vp = vpSize();
  const s = Math.min(vp / w, vp / h);
  S.view = { s, tx: (vp - w * s) / 2, ty: (vp - h * s) / 2, fit: true };
  applyView();
}

function zoomAt(factor, cx, cy) {
  const v = S.view;
  const s = Math.min(ZOOM_MAX, Math.max(ZOOM_MIN, v.s * factor));
  const k = s / v.s;
  S.view = { s, tx: cx - (cx - v.tx) * k, ty: cy - (cy - v.ty) * k, fit: false };
  applyView();
}

const zoomCenter = (factor) => zoomAt(factor, vpSize() / 2, vpSize() / 2);
const oneToOne = () => zoomCenter(1 / devicePixelRatio / S.view.s);

function layout() {
  const bar = 40;
  const caption = 30;
  const gap = 10;
  const w = (innerWidth - 4 * gap) / 3;
  const h = (innerHeight - bar - 3 * gap - 2 * caption) / 2;
  const size = Math.max(120, Math.floor(Math.min(w, h)));
  document.documentElement.style.setProperty('--vp', `${size}px`);
  if (S.view.fit) fit();
}

viewports.forEach((vp) => {
  const cell = vp.closest('.cand');
  const pos = cell ? Number(cell.dataset.pos) : null;
  vp.addEventListener('wheel', (e) => {
    e.preventDefault();
    const r = vp.getBoundingClientRect();
    zoomAt(Math.exp(-e.deltaY * 0.002), e.clientX - r.left - vp.clientLeft, e.clientY - r.top - vp.clientTop);
  }, { passive: false });
  let drag = null;
  vp.addEventListener('pointerdown', (e) => {
    if (e.button !== 0) return;
    drag = { x: e.clientX, y: e.clientY, tx: S.view.tx, ty: S.view.ty, moved: false };
    vp.setPointerCapture(e.pointerId);
    vp.classList.add('dragging');
  });
  vp.addEventListener('pointermove', (e) => {
    if (!drag) return;
    const dx = e.clientX - drag.x;
    const dy = e.clientY - drag.y;
    if (Math.abs(dx) + Math.abs(dy) > 3) drag.moved = true;
    if (drag.moved) {
      S.view = { ...S.view, tx: drag.tx + dx, ty: drag.ty + dy, fit: false };
      applyView();
    }
  });
  const end = (e) => {
    if (!drag) return;
    if (!drag.moved && pos !== null) setFocus(pos);
    drag = null;
    vp.classList.remove('dragging');
    if (vp.hasPointerCapture(e.pointerId)) vp.releasePointerCapture(e.pointerId);
  };
  vp.addEventListener('pointerup', end);
  vp.addEventListener('pointercancel', end);
});

// ---------------------------------------------------------------- activity time
function tickActive() {
  const now = performance.now();
  if (S.group && S.visibleSince !== null) {
    S.activeMs += now - S.visibleSince;
    localStorage.setItem(K.active(S.group.aid), String(Math.round(S.activeMs)));
  }
  S.visibleSince = document.visibilityState === 'visible' ? now : null;
}

// ---------------------------------------------------------------- input
function toggleHelp(show) {
  const h = $('#help');
  h.hidden = show === undefined ? !h.hidden : !show;
}

window.addEventListener('keydown', (e) => {
  if (e.target.closest && e.target.closest('input, textarea, select')) return;
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  const key = e.key.length === 1 ? e.key.toLowerCase() : e.key;
  if (key === '?') { e.preventDefault(); toggleHelp(); return; }
  if (key === 'Escape') { toggleHelp(false); return; }
  if (e.code === 'Space' || key === ' ') {
    e.preventDefault();
    if (!e.repeat) startFlicker();
    return;
  }
  const label = CODE_LABELS[e.code] || KEY_LABELS[key];
  if (label) {
    e.preventDefault();
    if (!e.repeat) setLabel(label);
    return;
  }
  let handled = true;
  if (key === 'ArrowRight' || (key === 'Tab' && !e.shiftKey)) setFocus(S.focus + 1);
  else if (key === 'ArrowLeft' || (key === 'Tab' && e.shiftKey)) setFocus(S.focus - 1);
  else if (key === 'z' || key === 'Backspace') { if (!e.repeat) undo(); }
  else if (key === 'Enter') { if (!e.repeat) submit(); }
  else if (key === '+' || key === '=') zoomCenter(ZOOM_STEP);
  else if (key === '-' || key === '_') zoomCenter(1 / ZOOM_STEP);
  else if (key === '0') fit();
  else if (key === 'f') oneToOne();
  else handled = false;
  if (handled) e.preventDefault();
});
window.addEventListener('keyup', (e) => {
  if (e.code === 'Space' || e.key === ' ') { e.preventDefault(); stopFlicker(); }
});
window.addEventListener('blur', stopFlicker);
window.addEventListener('resize', layout);
window.addEventListener('online', flush);
document.addEventListener('visibilitychange', () => {
  tickActive();
  if (document.visibilityState === 'visible') flush();
});
setInterval(tickActive, 5000);
setInterval(() => { if (readOutbox().length && !net.inflight) flush(); }, 5000);

cells.forEach((c, pos) => {
  c.querySelectorAll('button[data-label]').forEach((b) => {
    b.addEventListener('mousedown', (e) => e.preventDefault()); // keep keys on the page
    b.addEventListener('click', () => { setFocus(pos); setLabel(b.dataset.label); });
  });
});
document.querySelectorAll('#bar button').forEach((b) => b.addEventListener('mousedown', (e) => e.preventDefault()));
$('#zoom-in').addEventListener('click', () => zoomCenter(ZOOM_STEP));
$('#zoom-out').addEventListener('click', () => zoomCenter(1 / ZOOM_STEP));
$('#zoom-fit').addEventListener('click', fit);
$('#zoom-1to1').addEventListener('click', oneToOne);
$('#undo').addEventListener('click', undo);
$('#submit').addEventListener('click', submit);
$('#help-btn').addEventListener('click', () => toggleHelp());

// ---------------------------------------------------------------- start
async function start() {
  layout();
  showStatus();
  if (!token) {
    message('Open the personal link you were given to start.');
    return;
  }
  // Deliver what an earlier visit left unsent before asking where to resume.
  if (readOutbox().length) {
    message('Sending saved labels…');
    await drained();
  }
  await loadNext();
}

start();
