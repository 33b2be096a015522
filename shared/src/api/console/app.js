// Baton console: plain DOM, no framework. API data is only ever put into the page with
// textContent / setAttribute (never innerHTML), so a run's output cannot inject markup.
'use strict';
(() => {
  const KEY = 'baton.apiKey';
  const SVGNS = 'http://www.w3.org/2000/svg';
  const TERMINAL = ['completed', 'failed', 'cancelled'];
  const main = document.getElementById('main');
  let gen = 0; // bumped on every navigation: stale loads and timers stop
  let timer = null;

  // ---- DOM helpers -------------------------------------------------------------------
  function build(e, props, kids) {
    for (const [k, v] of Object.entries(props || {})) {
      if (v == null || v === false) continue;
      if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of kids.flat(4)) if (c != null && c !== false) e.append(c instanceof Node ? c : String(c));
    return e;
  }
  const h = (tag, props, ...kids) => build(document.createElement(tag), props, kids);
  const s = (tag, props, ...kids) => build(document.createElementNS(SVGNS, tag), props, kids);
  const badge = (st) => h('span', { class: 'badge s-' + (st || 'none') }, st || '—');
  const json = (v) => h('pre', {}, v == null ? '—' : typeof v === 'string' ? v : JSON.stringify(v, null, 2));
  const time = (t) => (t ? new Date(t).toLocaleString() : '—');
  const enc = encodeURIComponent;
  const link = (href, text) => h('a', { href }, text);
  const runLink = (id) => link('#/runs/' + enc(id), id);

  function flash(msg, ok) {
    const f = document.getElementById('flash');
    f.replaceChildren(h('div', { class: ok ? 'ok' : '' }, msg));
    setTimeout(() => { if (f.firstChild && f.firstChild.textContent === msg) f.replaceChildren(); }, ok ? 3000 : 8000);
  }

  // ---- API -----------------------------------------------------------------------------
  async function api(method, path, body) {
    const opts = { method, headers: { 'X-API-Key': sessionStorage.getItem(KEY) || '' } };
    if (body !== undefined) {
      opts.headers['Content-Type'] = 'application/json';
      opts.body = JSON.stringify(body);
    }
    const res = await fetch('/api/v1' + path, opts);
    const text = await res.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
    if (res.status === 401) {
      sessionStorage.removeItem(KEY);
      if (location.hash !== '#/signin') location.hash = '#/signin';
      throw new Error('Signed out: the API key was not accepted');
    }
    if (!res.ok) {
      const e = data && data.error;
      throw new Error(e ? e.code + ': ' + e.message : 'HTTP ' + res.status);
    }
    return data;
  }

  // Runs an action from a button: disables it meanwhile, reports the outcome, reloads.
  function action(label, fn, opts) {
    const b = h('button', { type: 'button', class: (opts && opts.cls) || '' }, label);
    b.addEventListener('click', async () => {
      if (opts && opts.confirm && !window.confirm(opts.confirm)) return;
      b.disabled = true;
      try {
        await fn();
        if (opts && opts.done) flash(opts.done, true);
        if (!opts || opts.reload !== false) render();
      } catch (e) { flash(e.message); } finally { b.disabled = false; }
    });
    return b;
  }

  function live(fn, ms) {
    const g = gen;
    const tick = async () => {
      if (g !== gen) return;
      try { await fn(); } catch (e) { if (g === gen) flash(e.message); }
      if (g === gen) timer = setTimeout(tick, ms);
    };
    timer = setTimeout(tick, ms);
  }

  function show(...nodes) {
    main.replaceChildren(...nodes.flat(4).filter((n) => n != null && n !== false));
  }

  // ---- Sign in ---------------------------------------------------------------------------
  function signin() {
    const key = h('input', { type: 'password', id: 'api-key', autocomplete: 'off', placeholder: 'bk_…' });
    const err = h('p', { class: 'err' });
    const form = h('form', { class: 'card signin', id: 'signin-form' },
      h('h1', {}, 'Sign in'),
      h('label', { for: 'api-key' }, 'API key'), key,
      h('button', { type: 'submit', class: 'primary' }, 'Sign in'), err,
      h('p', { class: 'muted' }, 'The key is kept in this tab only (sessionStorage) and sent as X-API-Key. ',
        'Get one with POST /api/v1/auth/register.'));
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      sessionStorage.setItem(KEY, key.value.trim());
      try {
        await api('GET', '/runs?limit=1');
        location.hash = '#/runs';
      } catch (e) {
        sessionStorage.removeItem(KEY);
        err.textContent = e.message.startsWith('Signed out') ? 'That key was not accepted.' : e.message;
      }
    });
    show(form);
    key.focus();
  }

  // ---- Runs ------------------------------------------------------------------------------
  const RUN_STATUSES = ['', 'pending', 'running', 'waiting_human', 'completed', 'failed', 'cancelled'];

  function runsTable(rows, withWorkflow) {
    return h('table', { class: 'runs' },
      h('thead', {}, h('tr', {}, h('th', {}, 'Run'), withWorkflow && h('th', {}, 'Workflow'), h('th', {}, 'Status'),
        h('th', {}, 'Created'), h('th', {}, 'Updated'))),
      h('tbody', {}, rows.length ? rows.map((r) => {
        const tr = h('tr', { class: 'click', 'data-run': r.run_id, 'data-status': r.status },
          h('td', { class: 'mono' }, runLink(r.run_id)), withWorkflow && h('td', {}, r.workflow_id),
          h('td', {}, badge(r.status)), h('td', {}, time(r.created_at)), h('td', {}, time(r.updated_at)));
        tr.addEventListener('click', (ev) => { if (ev.target.tagName !== 'A') location.hash = '#/runs/' + enc(r.run_id); });
        return tr;
      }) : h('tr', {}, h('td', { colspan: 5, class: 'muted' }, 'No runs.'))));
  }

  function runsPage(_, q) {
    const status = h('select', { id: 'f-status' }, RUN_STATUSES.map((x) => h('option', { value: x, selected: q.get('status') === x }, x || 'any status')));
    const wf = h('input', { id: 'f-workflow', placeholder: 'workflow id', value: q.get('workflow_id') || '' });
    const auto = h('input', { type: 'checkbox', id: 'f-live', checked: true });
    const filters = h('form', { class: 'row' }, status, wf, h('button', { type: 'submit' }, 'Filter'),
      h('label', {}, auto, ' live refresh'));
    filters.addEventListener('submit', (ev) => {
      ev.preventDefault();
      const p = new URLSearchParams();
      if (status.value) p.set('status', status.value);
      if (wf.value.trim()) p.set('workflow_id', wf.value.trim());
      location.hash = '#/runs' + (p.toString() ? '?' + p : '');
    });
    const box = h('div', {}, h('p', { class: 'muted' }, 'Loading…'));
    const more = h('div', { class: 'row' });
    let rows = [];
    const path = (cursor) => {
      const p = new URLSearchParams(q);
      p.set('limit', '50');
      if (cursor) p.set('cursor', cursor);
      return '/runs?' + p;
    };
    const draw = (page) => {
      box.replaceChildren(runsTable(rows, true));
      more.replaceChildren(page.next_cursor ? action('Load more', async () => {
        const next = await api('GET', path(page.next_cursor));
        rows = rows.concat(next.data);
        draw(next);
      }, { reload: false }) : '');
    };
    const load = async () => {
      const page = await api('GET', path());
      rows = page.data;
      draw(page);
    };
    show(h('h1', {}, 'Runs'), filters, box, more);
    load().catch((e) => flash(e.message));
    live(() => (auto.checked && rows.length <= 50 ? load() : null), 3000);
  }

  // ---- A run's graph ----------------------------------------------------------------------
  const FILL = { pending: '#ffffff', running: '#bcd3ff', waiting_human: '#ffd97a', sleeping: '#ffd97a', completed: '#9fe0b0',
    failed: '#f4a59c', skipped: '#e3e5e9', cancelled: '#c9ccd2' };

  // Levels by longest path from the entry blocks (Kahn's order); blocks on a cycle, which
  // the order never reaches, go one level past the rest.
  function levels(blocks, edges) {
    const ids = blocks.map((b) => b.id);
    const indeg = new Map(ids.map((i) => [i, 0]));
    const out = new Map(ids.map((i) => [i, []]));
    for (const e of edges) if (indeg.has(e.from) && indeg.has(e.to)) { indeg.set(e.to, indeg.get(e.to) + 1); out.get(e.from).push(e.to); }
    const level = new Map();
    const queue = ids.filter((i) => indeg.get(i) === 0);
    queue.forEach((i) => level.set(i, 0));
    while (queue.length) {
      const n = queue.shift();
      for (const m of out.get(n)) {
        level.set(m, Math.max(level.get(m) || 0, level.get(n) + 1));
        indeg.set(m, indeg.get(m) - 1);
        if (indeg.get(m) === 0) queue.push(m);
      }
    }
    const max = Math.max(0, ...level.values());
    ids.forEach((i) => { if (!level.has(i)) level.set(i, max + 1); });
    return level;
  }

  function graph(blocks, edges, statusOf) {
    const W = 136, H = 46, GX = 96, GY = 26, PAD = 16;
    const level = levels(blocks, edges);
    const cols = [];
    for (const b of blocks) (cols[level.get(b.id)] = cols[level.get(b.id)] || []).push(b);
    const pos = new Map();
    let rowsMax = 1;
    cols.forEach((col, x) => { rowsMax = Math.max(rowsMax, col.length); col.forEach((b, y) => pos.set(b.id, { x: PAD + x * (W + GX), y: PAD + y * (H + GY) })); });
    // Edges between neighbouring levels are S-curves; the others (skipping levels, or going
    // back on a loop) arc under the blocks, each a little deeper, so none runs through a block.
    const arcs = edges.filter((e) => pos.has(e.from) && pos.has(e.to) && level.get(e.to) - level.get(e.from) !== 1);
    const rowsBottom = PAD + rowsMax * (H + GY) - GY;
    const width = PAD * 2 + cols.length * (W + GX) - GX, height = rowsBottom + PAD + (arcs.length ? 30 + 16 * arcs.length : 0);
    const svg = s('svg', { class: 'graph', width, height, viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': 'workflow graph' },
      s('defs', {}, s('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto' },
        s('path', { d: 'M0,0L10,5L0,10z', fill: '#7a8394' }))));
    for (const e of edges) {
      const a = pos.get(e.from), b = pos.get(e.to);
      if (!a || !b) continue;
      const k = arcs.indexOf(e);
      let d, lx, ly;
      if (k < 0) {
        const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x, y2 = b.y + H / 2, mx = (x1 + x2) / 2;
        d = `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}`;
        [lx, ly] = [mx, (y1 + y2) / 2 - 6];
      } else {
        const x1 = a.x + W / 2 + 12, x2 = b.x + W / 2 - 12, y1 = a.y + H, y2 = b.y + H;
        const low = rowsBottom + 24 + 16 * k;
        d = `M${x1},${y1} C${x1},${low} ${x2},${low} ${x2},${y2}`;
        [lx, ly] = [(x1 + x2) / 2, 0.25 * (y1 + y2) + 0.75 * low - 3];
      }
      svg.append(s('path', { d, fill: 'none', stroke: e.on === 'error' ? '#c0392b' : '#7a8394', 'stroke-width': 1.4,
        'stroke-dasharray': e.on === 'error' ? '4 3' : null, 'marker-end': 'url(#arrow)' }));
      const label = e.on === 'error' ? 'on error' : e.when == null ? '' : String(e.when);
      if (label) {
        svg.append(s('text', { x: lx, y: ly, 'text-anchor': 'middle', fill: '#5b6473', 'font-size': 9 },
          s('title', {}, label), label.length > 14 ? label.slice(0, 13) + '…' : label));
      }
    }
    for (const b of blocks) {
      const p = pos.get(b.id), st = statusOf(b.id);
      svg.append(s('g', { class: 'blk', 'data-block': b.id, 'data-status': st || 'none', transform: `translate(${p.x},${p.y})` },
        s('title', {}, `${b.id} (${b.type})${st ? ': ' + st : ''}`),
        s('rect', { width: W, height: H, rx: 6, fill: (st && FILL[st]) || '#f7f8fa', stroke: st === 'failed' ? '#a11a0f' : '#8a93a3',
          'stroke-width': st ? 1.6 : 1, 'stroke-dasharray': st ? null : '3 3' }),
        s('text', { x: 10, y: 19 }, b.id.length > 18 ? b.id.slice(0, 17) + '…' : b.id),
        s('text', { x: 10, y: 35, class: 't' }, b.type + (st ? ' · ' + st : ''))));
    }
    const legend = h('div', { class: 'legend' }, ['pending', 'running', 'waiting_human', 'completed', 'failed', 'skipped', 'cancelled']
      .map((k) => h('span', { class: 'lg-' + k }, k)), h('span', { class: 'muted' }, 'dashed: not reached'));
    return h('div', { class: 'gwrap' }, svg, legend);
  }

  // ---- Tasks (run page and inbox) --------------------------------------------------------
  function taskForm(t, onDone) {
    const url = `/runs/${enc(t.run_id)}/tasks/${enc(t.task_id)}/complete`;
    const box = h('div', { class: 'card task', 'data-task': t.task_id },
      h('div', { class: 'row' }, badge(t.status), h('strong', {}, t.title || t.prompt || t.step_key),
        h('span', { class: 'muted' }, t.kind + ' · step ' + t.step_key)),
      t.title && t.prompt && h('p', {}, typeof t.prompt === 'string' ? t.prompt : JSON.stringify(t.prompt)),
      t.assignee && h('p', { class: 'muted' }, 'Assignee: ' + JSON.stringify(t.assignee)),
      t.timeout_at && h('p', { class: 'muted' }, 'Times out ' + time(t.timeout_at)));
    if (t.status !== 'open') { box.append(h('h3', {}, 'Answer'), json(t.output)); return box; }
    const send = async (body) => { await api('POST', url, body); flash('Answer sent', true); onDone(); };
    if (t.kind === 'approval') {
      const fb = h('textarea', { class: 'feedback', placeholder: 'Feedback (optional)' });
      const body = (approved) => (fb.value.trim() ? { approved, feedback: fb.value.trim() } : { approved });
      box.append(fb, h('div', { class: 'row' },
        action('Approve', () => send(body(true)), { cls: 'primary approve', reload: false }),
        action('Reject', () => send(body(false)), { cls: 'danger reject', reload: false })));
    } else {
      let input;
      if (Array.isArray(t.options) && t.options.length) {
        input = h('select', { class: 'answer' }, t.options.map((o) => h('option', { value: JSON.stringify(o) }, typeof o === 'string' ? o : JSON.stringify(o))));
      } else {
        input = h('textarea', { class: 'answer', placeholder: t.schema ? 'JSON matching: ' + JSON.stringify(t.schema) : 'Your answer (text or JSON)' });
      }
      // A JSON answer keeps its type; anything else is sent as text.
      const value = () => { try { return JSON.parse(input.value); } catch (_) { return input.value; } };
      box.append(input, h('div', { class: 'row' }, action('Send answer', () => send({ output: value() }), { cls: 'primary answer-send', reload: false })));
    }
    return box;
  }

  // ---- A run -----------------------------------------------------------------------------
  const wfCache = new Map();

  async function runPage([id]) {
    const g = gen;
    let seen = '';
    const load = async () => {
      const run = await api('GET', '/runs/' + enc(id));
      const [events, callbacks] = await Promise.all([
        api('GET', `/runs/${enc(id)}/events?limit=100`),
        api('GET', `/runs/${enc(id)}/callbacks`).catch(() => ({ data: [] })),
      ]);
      const sig = JSON.stringify([run.status, run.updated_at, events.data.length, callbacks.data.map((c) => [c.status, c.attempt_count])]);
      if (sig === seen || g !== gen) return;
      seen = sig;
      let wf = wfCache.get(run.workflow_id);
      if (!wf || wf.version !== run.workflow_version) {
        wf = await api('GET', '/workflows/' + enc(run.workflow_id)).catch(() => null);
        if (wf) wfCache.set(run.workflow_id, wf);
      }
      if (g === gen) drawRun(run, events.data, callbacks.data, wf, () => { seen = ''; load().catch((e) => flash(e.message)); });
    };
    show(h('p', { class: 'muted' }, 'Loading…'));
    await load();
    live(load, 2000);
  }

  function drawRun(run, events, callbacks, wf, reload) {
    const planned = !!(run.metadata && run.metadata.plan);
    const people = (planned ? run.human_tasks : run.tasks) || [];
    const steps = run.steps || [];
    const byBlock = new Map();
    for (const st of steps) byBlock.set(st.block_id, st.status); // the latest step of a block wins
    const terminal = TERMINAL.includes(run.status);
    const head = h('div', { class: 'card' },
      h('h1', {}, 'Run ', h('span', { class: 'mono' }, run.run_id), ' ', h('span', { id: 'run-status', 'data-status': run.status }, badge(run.status))),
      h('dl', { class: 'kv' },
        h('dt', {}, 'Workflow'), h('dd', {}, link('#/workflows/' + enc(run.workflow_id), run.workflow_id), ' v' + run.workflow_version),
        h('dt', {}, 'Created'), h('dd', {}, time(run.created_at)),
        h('dt', {}, 'Finished'), h('dd', {}, time(run.finished_at)),
        run.parent_run_id && [h('dt', {}, 'Parent run'), h('dd', {}, runLink(run.parent_run_id))],
        run.usage && run.usage.calls ? [h('dt', {}, 'Usage'), h('dd', {}, usageText(run.usage))] : null),
      h('div', { class: 'row' },
        !terminal && action('Cancel run', () => api('DELETE', '/runs/' + enc(run.run_id)), { cls: 'danger', confirm: 'Cancel this run?', done: 'Cancelled', reload: false }),
        (run.status === 'failed' || run.status === 'cancelled') && action('Redrive', () => api('POST', `/runs/${enc(run.run_id)}/redrive`), { done: 'Redriven', reload: false })));
    head.querySelectorAll('button').forEach((b) => b.addEventListener('click', () => setTimeout(reload, 300)));
    const parts = [head];
    if (wf && Array.isArray(wf.blocks)) {
      parts.push(h('h2', {}, 'Graph'), wf.version !== run.workflow_version
        ? h('p', { class: 'muted' }, `Drawn from the workflow's current version ${wf.version}; this run is pinned to version ${run.workflow_version}.`) : null,
      graph(wf.blocks, wf.edges || [], (b) => byBlock.get(b)));
    }
    if (people.length) parts.push(h('h2', {}, 'Tasks'), people.map((t) => taskForm(t, reload)));
    if (planned) parts.push(h('h2', {}, 'Subtasks'), subtasks(run.tasks || []));
    parts.push(h('div', { class: 'grid2' },
      h('div', {}, h('h2', {}, 'Input'), json(run.input)),
      h('div', {}, h('h2', {}, run.error ? 'Error' : 'Output'), json(run.error || run.output))));
    // A block reads the run's context; what reached a step is its predecessors' outputs (the
    // run's input for an entry block).
    const outputOf = new Map(steps.map((st) => [st.step_key, st.output]));
    const inputOf = (st) => {
      const from = ((wf && wf.edges) || []).filter((e) => e.to === st.block_id && outputOf.has(e.from));
      return from.length ? Object.fromEntries(from.map((e) => [e.from, outputOf.get(e.from)])) : run.input;
    };
    parts.push(h('h2', {}, 'Steps'), h('table', { class: 'steps' },
      h('thead', {}, h('tr', {}, ['Step', 'Status', 'Attempt', 'Started', 'Finished', 'Input', 'Output / error', 'Usage'].map((x) => h('th', {}, x)))),
      h('tbody', {}, steps.map((st) => h('tr', { 'data-step': st.step_key },
        h('td', { class: 'mono' }, st.step_key, st.block_id !== st.step_key ? h('div', { class: 'muted' }, st.block_id) : null),
        h('td', {}, badge(st.status)), h('td', {}, String(st.attempt)), h('td', {}, time(st.started_at)), h('td', {}, time(st.finished_at)),
        h('td', { class: 'input' }, json(inputOf(st))),
        h('td', {}, st.error ? h('div', { class: 'err' }, json(st.error)) : json(st.output), st.items ? h('div', { class: 'muted' }, `items ${st.items.completed}/${st.items.expected}`) : null),
        h('td', {}, st.usage ? usageText(st.usage) : '—'))))));
    parts.push(h('div', { class: 'grid2' },
      h('div', {}, h('h2', {}, 'Timeline'), h('table', { class: 'events' }, h('tbody', {}, events.map((e) => h('tr', {},
        h('td', { class: 'muted' }, time(e.at)), h('td', {}, h('strong', {}, e.type), e.step_key ? ' ' + e.step_key : ''),
        h('td', {}, e.data ? h('code', {}, JSON.stringify(e.data)) : '')))))),
      h('div', {}, h('h2', {}, 'Callbacks'), callbacks.length ? callbacks.map((c) => h('div', { class: 'card' },
        h('div', { class: 'row' }, badge(c.status), h('strong', {}, c.event), h('span', { class: 'mono muted' }, c.url)),
        h('p', { class: 'muted' }, `${c.attempt_count} attempt(s)` + (c.next_attempt_at ? ', next ' + time(c.next_attempt_at) : '')),
        (c.attempts || []).map((a) => h('div', { class: 'mono' }, `#${a.attempt} ${time(a.at)} → ${a.response_status == null ? (a.error || 'no answer') : a.response_status}`)),
        h('div', { class: 'row' }, action('Redeliver', () => api('POST', `/runs/${enc(run.run_id)}/callbacks/${enc(c.delivery_id)}/redeliver`), { done: 'Redelivery queued', reload: false }))))
        : h('p', { class: 'muted' }, 'No callback deliveries (the run has no callback URL, or nothing was sent yet).'))));
    show(parts);
  }

  function usageText(u) {
    const bits = [];
    if (u.model) bits.push(u.model);
    if (u.input_tokens != null) bits.push(`${u.input_tokens} in / ${u.output_tokens} out tokens`);
    if (u.calls != null) bits.push(`${u.calls} call(s)`);
    if (u.cost_usd != null) bits.push('$' + Number(u.cost_usd).toFixed(4));
    return bits.join(' · ') || JSON.stringify(u);
  }

  // A planned run's subtasks as a tree: each under the first subtask it depends on.
  function subtasks(nodes) {
    const kids = new Map();
    const ids = new Set(nodes.map((n) => n.id));
    for (const n of nodes) {
      const parent = (n.depends_on || []).find((d) => ids.has(d)) || '';
      (kids.get(parent) || kids.set(parent, []).get(parent)).push(n);
    }
    const list = (parent) => h('ul', { class: 'tree' }, (kids.get(parent) || []).map((n) => h('li', { 'data-subtask': n.id },
      badge(n.status), ' ', h('strong', {}, n.id), ' ', n.title || '', n.agent ? h('span', { class: 'muted' }, ' · agent ' + n.agent) : '',
      (n.depends_on || []).length > 1 ? h('span', { class: 'muted' }, ' · after ' + n.depends_on.join(', ')) : '',
      n.usage ? h('div', { class: 'muted' }, usageText(n.usage)) : null, kids.has(n.id) ? list(n.id) : null)));
    return nodes.length ? list('') : h('p', { class: 'muted' }, 'Still planning.');
  }

  // ---- Inbox -----------------------------------------------------------------------------
  async function inbox() {
    const g = gen;
    const page = await api('GET', '/tasks?status=open&limit=100');
    if (g !== gen) return;
    const list = page.data.map((t) => h('div', {},
      h('div', { class: 'row muted' }, 'Run ', runLink(t.run_id), ' · workflow ', link('#/workflows/' + enc(t.workflow_id), t.workflow_id), ' · ', time(t.created_at)),
      taskForm(t, render)));
    show(h('h1', {}, 'Inbox'), h('div', { class: 'row' }, action('Refresh', async () => {}), h('span', { class: 'muted' }, `${page.data.length} open task(s)`)),
      list.length ? list : h('p', { class: 'muted', id: 'inbox-empty' }, 'Nothing waits for a person.'),
      page.next_cursor ? h('p', { class: 'muted' }, 'More waiting runs exist; answer these first.') : null);
  }

  // ---- Workflows -------------------------------------------------------------------------
  async function workflowsPage() {
    const page = await api('GET', '/workflows?limit=100');
    show(h('h1', {}, 'Workflows'), h('table', {},
      h('thead', {}, h('tr', {}, ['Workflow', 'Name', 'Status', 'Version', 'Webhook', 'Updated'].map((x) => h('th', {}, x)))),
      h('tbody', {}, page.data.length ? page.data.map((w) => h('tr', { 'data-workflow': w.id },
        h('td', { class: 'mono' }, link('#/workflows/' + enc(w.id), w.id)), h('td', {}, w.name), h('td', {}, badge(w.status)),
        h('td', {}, String(w.version)), h('td', {}, w.deploy_state || '—'), h('td', {}, time(w.updated_at))))
        : h('tr', {}, h('td', { colspan: 6, class: 'muted' }, 'No workflows yet (POST /api/v1/workflows).')))));
  }

  async function workflowPage([id, tab]) {
    const w = await api('GET', '/workflows/' + enc(id));
    const base = '#/workflows/' + enc(id);
    const tabs = h('div', { class: 'tabs' }, h('a', { href: base, class: tab ? '' : 'on' }, 'Overview'),
      h('a', { href: base + '/runs', class: tab === 'runs' ? 'on' : '' }, 'Runs & Triggers'));
    const header = [h('h1', {}, w.name || w.id, ' ', badge(w.status)), tabs];
    if (tab === 'runs') return show(header, await runsAndTriggers(w));
    const versions = await api('GET', `/workflows/${enc(id)}/versions?limit=20`);
    show(header, h('div', { class: 'card' }, h('dl', { class: 'kv' },
      h('dt', {}, 'Id'), h('dd', { class: 'mono' }, w.id), h('dt', {}, 'Description'), h('dd', {}, w.description || '—'),
      h('dt', {}, 'Version'), h('dd', {}, String(w.version)), h('dt', {}, 'Callback URL'), h('dd', { class: 'mono' }, w.callback_url || '—'),
      h('dt', {}, 'Updated'), h('dd', {}, time(w.updated_at))),
    h('div', { class: 'row' }, w.status === 'active'
      ? action('Deactivate', () => api('POST', `/workflows/${enc(id)}/deactivate`), { done: 'Deactivated' })
      : action('Activate', () => api('POST', `/workflows/${enc(id)}/activate`), { cls: 'primary', done: 'Activated' }))),
    h('h2', {}, 'Graph (version ' + w.version + ')'), graph(w.blocks || [], w.edges || [], () => null),
    h('h2', {}, 'Versions'), h('table', {}, h('tbody', {}, versions.data.map((v) => h('tr', {}, h('td', {}, 'v' + v.version), h('td', {}, time(v.created_at)))))),
    w.input_schema ? [h('h2', {}, 'Input schema'), json(w.input_schema)] : null);
  }

  async function runsAndTriggers(w) {
    const id = enc(w.id);
    const [runs, triggers, apps] = await Promise.all([
      api('GET', `/runs?workflow_id=${id}&limit=20`), api('GET', `/workflows/${id}/triggers?limit=100`),
      api('GET', '/apps?limit=100').catch(() => ({ data: [] })),
    ]);
    const name = h('input', { placeholder: 'trigger name (optional)', id: 'trigger-name' });
    const create = h('form', { class: 'row' }, name, h('button', { type: 'submit', class: 'primary' }, 'Create trigger URL'));
    create.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      try {
        const t = await api('POST', `/workflows/${id}/triggers`, name.value.trim() ? { name: name.value.trim() } : {});
        // The token is in the answer once and never again: show it before anything reloads.
        await render();
        const box = document.getElementById('new-token');
        if (box) box.replaceChildren(h('div', { class: 'token' }, h('strong', {}, 'Copy it now, it is shown once: '), h('code', {}, t.url)));
      } catch (e) { flash(e.message); }
    });
    const hasWebhook = (w.blocks || []).some((b) => b.type === 'webhook');
    const mine = apps.data.filter((a) => a.workflow_id === w.id);
    return [
      h('h2', {}, 'Runs'), runsTable(runs.data, false),
      h('p', {}, link('#/runs?workflow_id=' + id, 'All runs of this workflow')),
      h('h2', {}, 'Trigger URLs'), h('p', { class: 'muted' }, 'POST to a trigger URL starts a run; the body is its input.'),
      create, h('div', { id: 'new-token' }),
      h('table', { class: 'triggers' }, h('tbody', {}, triggers.data.length ? triggers.data.map((t) => h('tr', { 'data-trigger': t.trigger_id },
        h('td', { class: 'mono' }, t.trigger_id), h('td', {}, t.name || ''), h('td', { class: 'mono' }, t.token_prefix ? t.token_prefix + '…' : ''),
        h('td', {}, badge(t.enabled ? 'enabled' : 'disabled')),
        h('td', {}, h('div', { class: 'row' },
          t.enabled ? action('Disable', () => api('POST', `/workflows/${id}/triggers/${enc(t.trigger_id)}/disable`))
            : action('Enable', () => api('POST', `/workflows/${id}/triggers/${enc(t.trigger_id)}/enable`)),
          action('Delete', () => api('DELETE', `/workflows/${id}/triggers/${enc(t.trigger_id)}`), { cls: 'danger', confirm: 'Delete this trigger URL?' })))))
        : h('tr', {}, h('td', { class: 'muted' }, 'No trigger URLs.')))),
      h('h2', {}, 'Webhook block'),
      h('div', { class: 'card' }, h('p', {}, 'State: ', h('strong', { id: 'deploy-state' }, w.deploy_state || 'internal'),
        w.armed_until ? ' · armed until ' + time(w.armed_until) : ''),
      hasWebhook ? h('div', { class: 'row' },
        action('Deploy', () => api('POST', `/workflows/${id}/deploy`), { done: 'Deployed' }),
        action('Undeploy', () => api('POST', `/workflows/${id}/undeploy`), { done: 'Undeployed' }),
        action('Arm for one call', () => api('POST', `/workflows/${id}/arm`), { done: 'Armed for 10 minutes' }))
        : h('p', { class: 'muted' }, 'This workflow has no webhook block.')),
      h('h2', {}, 'Apps'), mine.length ? h('table', {}, h('tbody', {}, mine.map((a) => h('tr', {},
        h('td', { class: 'mono' }, a.app_id), h('td', {}, a.name), h('td', { class: 'mono' }, a.webhook_url),
        h('td', {}, a.has_signing_secret ? 'signed' : 'unsigned'), h('td', {}, (a.capabilities || []).join(', '))))))
        : h('p', { class: 'muted' }, 'No app sends to this workflow (POST /api/v1/apps with its workflow_id).'),
    ];
  }

  // ---- Router ------------------------------------------------------------------------------
  const ROUTES = [
    [/^\/signin$/, signin, ''],
    [/^\/runs$/, runsPage, 'runs'],
    [/^\/runs\/([^/]+)$/, runPage, 'runs'],
    [/^\/inbox$/, inbox, 'inbox'],
    [/^\/workflows$/, workflowsPage, 'workflows'],
    [/^\/workflows\/([^/]+)(?:\/(runs))?$/, workflowPage, 'workflows'],
  ];

  async function render() {
    gen++;
    clearTimeout(timer);
    const raw = location.hash.replace(/^#/, '') || '/runs';
    const [path, query] = raw.split('?');
    const signedIn = !!sessionStorage.getItem(KEY);
    if (!signedIn && path !== '/signin') { location.hash = '#/signin'; return; }
    document.body.classList.toggle('out', !signedIn);
    const route = ROUTES.find(([re]) => re.test(path));
    if (!route) { show(h('h1', {}, 'Not found'), h('p', {}, link('#/runs', 'Back to runs'))); return; }
    document.querySelectorAll('#nav a').forEach((a) => a.classList.toggle('on', a.dataset.nav === route[2]));
    const params = path.match(route[0]).slice(1).filter((x) => x !== undefined).map(decodeURIComponent);
    try {
      await route[1](params, new URLSearchParams(query || ''));
    } catch (e) {
      if (sessionStorage.getItem(KEY)) show(h('h1', {}, 'Could not load this page'), h('p', { class: 'err' }, e.message));
    }
  }

  document.getElementById('signout').addEventListener('click', () => {
    sessionStorage.removeItem(KEY);
    location.hash = '#/signin';
  });
  window.addEventListener('hashchange', render);
  render();
})();
