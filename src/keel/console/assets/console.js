// The Keel console: follows /console/events (Server-Sent Events, one JSON sample a second) and
// draws the views of the process that serves it. No library, nothing fetched from elsewhere:
// the charts are a few SVG polylines. Actions call the process's existing admin API.
'use strict';
(() => {
  const main = document.getElementById('console');
  if (!main) return;
  const kind = main.dataset.kind;
  const live = document.getElementById('live');
  const maxSamples = 300;
  let samples = [];
  const inputs = new Map();  // values typed into re-rendered forms, by input name

  // ---- helpers ------------------------------------------------------------------------------
  const esc = (v) => String(v ?? '').replace(/[&<>"']/g,
    (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
  const num = (v, digits = 1) => (v === null || v === undefined || Number.isNaN(v)) ? '–'
    : Math.abs(v) >= 1000 ? Math.round(v).toLocaleString('en-US') : Number(v).toFixed(digits)
      .replace(/\.0+$/, '');
  const time = (ms) => new Date(ms).toLocaleTimeString();
  const ago = (ms) => {
    const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
    return s < 60 ? `${s} s ago` : s < 3600 ? `${Math.round(s / 60)} min ago`
      : `${(s / 3600).toFixed(1)} h ago`;
  };
  const badge = (text, tone) => `<span class="badge ${tone}">${esc(text)}</span>`;
  const breakerTone = (state) => state === 'OPEN' || state === 'FORCED_OPEN' ? 'bad'
    : state === 'HALF_OPEN' ? 'warn' : state === 'none' ? '' : 'ok';
  const token = () => sessionStorage.getItem('keel-admin-token') || '';

  // A sparkline of `values` (nulls are gaps) with the last value beside it.
  function spark(values, unit = '', digits = 1) {
    const w = 110, h = 24;
    const present = values.filter((v) => v !== null && v !== undefined && !Number.isNaN(v));
    const last = values.length ? values[values.length - 1] : null;
    let svg = `<svg class=spark width=${w} height=${h} viewBox="0 0 ${w} ${h}" aria-hidden=true>`;
    if (present.length > 1) {
      const max = Math.max(...present, 1e-9), min = Math.min(0, ...present);
      const step = w / Math.max(1, values.length - 1);
      let points = [];
      const lines = [];
      values.forEach((v, i) => {
        if (v === null || v === undefined || Number.isNaN(v)) {
          if (points.length) lines.push(points);
          points = [];
          return;
        }
        const y = h - 2 - ((v - min) / (max - min || 1)) * (h - 4);
        points.push(`${(i * step).toFixed(1)},${y.toFixed(1)}`);
      });
      if (points.length) lines.push(points);
      for (const line of lines) svg += `<polyline points="${line.join(' ')}"/>`;
    }
    svg += '</svg>';
    return `<span class=metric>${svg}<span class=value>${num(last, digits)}${last === null ||
      last === undefined ? '' : esc(unit)}</span></span>`;
  }
  // The values of `pick(sample)` over the samples kept (null where it has none).
  const series = (pick) => samples.map((s) => {
    try { const v = pick(s); return v === undefined ? null : v; } catch { return null; }
  });

  async function call(method, url, body) {
    const headers = {};
    if (token()) headers.Authorization = `Bearer ${token()}`;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const response = await fetch(url, { method, headers, body });
    const text = await response.text();
    if (!response.ok) throw new Error(`${response.status}: ${text.trim()}`);
    return text;
  }

  // Re-renders one section by id unless the user is typing in it.
  function put(id, html, parent = views) {
    let el = document.getElementById(id);
    if (!el) {
      el = document.createElement('section');
      el.id = id;
      parent.appendChild(el);
    }
    if (el.contains(document.activeElement) && document.activeElement.tagName === 'INPUT') return;
    el.innerHTML = html;
    el.querySelectorAll('input[name]').forEach((input) => {
      if (inputs.has(input.name)) input.value = inputs.get(input.name);
    });
  }

  // ---- proxy --------------------------------------------------------------------------------
  function proxyViews(s) {
    const cards = [];
    for (const c of s.clusters || []) {
      const at = (pick) => series((x) => pick((x.clusters || []).find((y) => y.name === c.name)));
      let rows = '';
      for (const e of c.endpoints) {
        const ep = (pick) => at((y) => pick(y.endpoints.find((z) => z.address === e.address)));
        const health = e.health === 'ejected'
          ? badge(`ejected ${Math.ceil(e.ejected_ms / 1000)} s more`, 'bad')
          : badge(e.health, e.health === 'healthy' ? 'ok' : 'bad');
        rows += `<tr data-endpoint="${esc(e.address)}" data-health="${esc(e.health)}">` +
          `<td>${esc(e.address)}</td><td>${health}</td><td>${e.in_flight}</td>` +
          `<td>${e.latency_cost_ms > 0 ? num(e.latency_cost_ms, 2) + ' ms' : '–'}</td>` +
          `<td>${spark(ep((z) => z.rps), '/s')}</td>` +
          `<td>${spark(ep((z) => z.failures_per_s), '/s')}</td>` +
          `<td>${spark(ep((z) => z.p99_ms), ' ms', 2)}</td></tr>`;
      }
      const transitions = (c.breaker_transitions || []).slice(-6).reverse()
        .map((t) => `<div>${time(t.t)} ${esc(t.from)} → <b>${esc(t.to)}</b> ` +
          `<span class=muted>${esc(t.reason)}</span></div>`).join('') ||
        '<div class=muted>no transitions yet</div>';
      cards.push(`<section id="cluster-${esc(c.name)}" data-cluster="${esc(c.name)}" ` +
        `data-breaker="${esc(c.breaker)}"><h2>cluster ${esc(c.name)} ` +
        `<span class=muted>${esc(c.policy)}</span></h2><div class=kv>` +
        `<span>breaker ${badge(c.breaker, breakerTone(c.breaker))}</span>` +
        `<span>in flight ${c.active} / ${c.limits.max_requests}` +
        `${c.limit !== null ? ' (adaptive limit ' + c.limit + ')' : ''}</span>` +
        `<span>connections ${c.connections} / ${c.limits.max_connections}</span>` +
        `<span>waiting for a connection ${c.limits.pending} / ${c.limits.max_pending}</span>` +
        `<span>retries in flight ${c.limits.retries} / ${c.limits.max_retries}</span>` +
        `<span>retry budget ${c.retry_budget === null ? 'none' : num(c.retry_budget)}</span>` +
        '</div><div class=kv>' +
        `<span>requests ${spark(at((y) => y.rps), '/s')}</span>` +
        `<span>errors ${spark(at((y) => y.error_pct), ' %')}</span>` +
        `<span>p99 ${spark(at((y) => y.p99_ms), ' ms', 2)}</span></div><div class=kv>` +
        `<span>retries ${spark(at((y) => y.retries_per_s), '/s')}</span>` +
        `<span>hedges ${spark(at((y) => y.hedges_per_s), '/s')}</span>` +
        `<span>overflow ${spark(at((y) => y.overflow_per_s), '/s')}</span>` +
        `<span>breaker rejections ${spark(at((y) => y.rejected_per_s), '/s')}</span></div>` +
        '<table><tr><th>endpoint</th><th>health</th><th>in flight</th><th>latency cost</th>' +
        `<th>requests</th><th>failures</th><th>p99</th></tr>${rows}</table>` +
        `<h3>breaker transitions</h3><div class=log>${transitions}</div></section>`);
    }
    put('clusters', `<h2>clusters</h2><div class=cards>${cards.join('')}</div>`);

    let routes = '';
    for (const r of s.routes || []) {
      const at = (pick) => series((x) => pick((x.routes || []).find((y) => y.name === r.name &&
        y.listener === r.listener)));
      routes += `<tr data-route="${esc(r.name)}"><td>${esc(r.listener)}</td><td>${esc(r.name)}</td>` +
        `<td>${spark(at((y) => y.rps), '/s')}</td><td>${spark(at((y) => y.error_pct), ' %')}</td>` +
        `<td>${spark(at((y) => y.p99_ms), ' ms', 2)}</td></tr>`;
    }
    put('routes', '<h2>routes</h2><table><tr><th>listener</th><th>route</th><th>requests</th>' +
      `<th>errors</th><th>p99</th></tr>${routes}</table>`);

    if ((s.migrations || []).length) migrationView(s);
    const events = (s.events || []).slice().reverse()
      .map((e) => `<div>${time(e.t)} <b>${esc(e.what)}</b> ${esc(e.text)}</div>`).join('');
    put('events', `<h2>events</h2><div class=log>${events || '<div class=muted>none yet</div>'}</div>`);
  }

  const stages = ['legacy', 'shadow', 'canary', 'modern', 'retired'];
  let reports = new Map();  // route → the full /migration report (example pairs), every 5 s
  function migrationView(s) {
    let cards = '';
    for (const m of s.migrations) {
      const at = (pick) => series((x) => pick((x.migrations || []).find((y) => y.route === m.route)));
      const buttons = stages.map((stage) => `<button data-action=stage data-route="${esc(m.route)}" ` +
        `data-stage=${stage} class="${m.stage === stage ? 'current' : ''}">${stage}</button>`).join(' ');
      const fields = (m.top_differing_fields || []).map((f) => `${esc(f.field)} (${f.count})`)
        .join(', ') || '<span class=muted>none</span>';
      const noise = Object.entries(m.noise_fields || {}).map(([f, n]) => `${esc(f)} (${n})`)
        .join(', ') || '<span class=muted>none</span>';
      const pairs = ((reports.get(m.route) || {}).samples || []).slice(0, 3).map((p) =>
        `<details><summary>${esc(p.request)} — ${esc((p.fields || []).join(', '))}</summary>` +
        `<div class=cards><div>legacy ${p.legacy_status}<pre>${esc(p.legacy_body)}</pre></div>` +
        `<div>modern ${p.modern_status}<pre>${esc(p.modern_body)}</pre></div></div></details>`).join('');
      cards += `<section data-migration="${esc(m.route)}" data-stage="${esc(m.stage)}">` +
        `<h2>route ${esc(m.route)} ${badge(m.stage + (m.stage === 'canary' ? ' ' + num(m.percent) +
          ' %' : ''), m.stage === 'legacy' ? 'warn' : 'ok')}</h2>` +
        `<div>${buttons} <input type=number min=0 max=100 step=1 name="percent-${esc(m.route)}" ` +
        `value="${num(m.percent, 0)}" aria-label="canary percent"> % ` +
        `<span class=message id="message-${esc(m.route)}"></span></div><div class=kv>` +
        `<span>modern share ${spark(at((y) => 100 * y.modern_share), ' %')}</span>` +
        `<span>diff rate ${spark(at((y) => 100 * y.diff_rate), ' %', 2)}</span>` +
        `<span>legacy 5xx ${m.legacy_5xx} · modern 5xx ${m.modern_5xx}</span>` +
        `<span>copies ${m.mirrored} (dropped ${m.mirror_dropped}, failed ${m.mirror_failed})</span>` +
        `</div><div class=kv><span>differing fields: ${fields}</span><span>noise fields: ${noise}` +
        '</span></div><div class=kv>' +
        `<span>guard-rail rollbacks ${m.rollbacks}${m.last_rollback ? ': ' + esc(m.last_rollback) : ''}` +
        `</span></div>${pairs}</section>`;
    }
    put('migrations', `<h2>migrations</h2><div class=kv><label>admin token ` +
      `<input type=password id=token value="${esc(token())}" autocomplete=off></label>` +
      '<span class=muted>needed for changes when the console is not on loopback</span></div>' +
      cards);
  }
  async function refreshReports() {
    if (kind !== 'proxy' || !samples.length || !(samples[samples.length - 1].migrations || []).length) return;
    try {
      const all = JSON.parse(await call('GET', '/migration'));
      reports = new Map(all.map((r) => [r.route, r]));
    } catch { /* shown again at the next try */ }
  }

  // ---- node ---------------------------------------------------------------------------------
  function nodeViews(s) {
    const st = s.store || {};
    put('store', `<h2>store <span class=muted>${esc(st.data_dir || '')}</span></h2><div class=kv>` +
      `<span>head position ${num(st.head, 0)}</span><span>durability ${esc(st.durability)}</span>` +
      `<span>subscribers ${st.subscribers}</span></div><div class=kv>` +
      `<span>events appended ${spark(series((x) => x.store.events_per_s), '/s')}</span>` +
      `<span>append requests ${spark(series((x) => x.store.appends_per_s), '/s')}</span>` +
      `<span>syncs ${spark(series((x) => x.store.syncs_per_s), '/s')}</span></div>`);
    let groups = '';
    for (const g of s.groups || []) {
      const at = (pick) => series((x) => pick((x.groups || []).find((y) => y.name === g.name)));
      groups += `<tr data-group="${esc(g.name)}" data-lag="${g.lag}"><td>${esc(g.name)}</td>` +
        `<td class=wrap>${(g.members || []).map(esc).join(', ') || '<span class=muted>none</span>'}` +
        `</td><td>${spark(at((y) => y.lag), '', 0)}</td><td>${g.in_flight}</td><td>${g.parked}</td>` +
        `<td>${spark(at((y) => y.acked_per_s), '/s')}</td><td><button data-action=replay ` +
        `data-group="${esc(g.name)}" ${g.parked ? '' : 'disabled'}>replay parked</button></td></tr>`;
    }
    put('groups', '<h2>consumer groups</h2><table><tr><th>group</th><th>members</th><th>lag</th>' +
      `<th>in flight</th><th>parked</th><th>acked</th><th></th></tr>${groups}</table>` +
      '<span class=message id=message-groups></span>');
    if (s.projections) projectionView(s);
    // Each sample carries the events new since the one before: the latest 50 of them all.
    const tail = samples.flatMap((x) => x.tail || []).slice(-50).reverse().map((e) =>
      `<tr data-position="${e.position}"><td>${num(e.position, 0)}</td><td>${esc(e.stream)}</td>` +
      `<td>${num(e.version, 0)}</td><td>${esc(e.type)}</td><td class=wrap><code>${esc(e.data)}` +
      '</code></td></tr>').join('');
    put('tail', '<h2>$all, latest events</h2><table id=tail-table><tr><th>position</th>' +
      `<th>stream</th><th>version</th><th>type</th><th>data</th></tr>${tail}</table>`);
    if (!document.getElementById('browser')) {
      put('browser', '<h2>streams</h2><form id=stream-search><input name=prefix ' +
        'placeholder="stream name prefix" aria-label="stream prefix"> <button>search</button></form>' +
        '<div id=stream-list></div><div id=stream-events></div>');
    }
    if (s.cluster) clusterView(s.cluster);
  }

  // Projections in processes of their own that report to the node (PUT /v1/projections/NAME).
  function projectionView(s) {
    let rows = '';
    for (const p of s.projections) {
      const status = p.error ? `<span class="badge bad" title="${esc(p.error)}">stopped</span>`
        : p.stale ? `<span class="badge warn">silent ${num(p.age_ms / 1000, 0)} s</span>`
          : p.paused ? '<span class="badge warn">paused</span>'
            : p.live ? '<span class="badge ok">live</span>' : '<span class="badge warn">catching up</span>';
      rows += `<tr data-projection="${esc(p.name)}" data-lag="${p.lag}" data-position="${p.position}">` +
        `<td>${esc(p.name)}</td><td>${status}</td><td>${num(p.position, 0)}</td><td>${spark(series((x) =>
          ((x.projections || []).find((y) => y.name === p.name) || {}).lag), '', 0)}</td>` +
        `<td>${num(p.applied, 0)}</td><td>${num(p.skipped + p.parked, 0)}</td>` +
        `<td class=wrap><code>${esc(JSON.stringify(p.state ?? null))}</code></td></tr>`;
    }
    put('projections', '<h2>projections</h2><table><tr><th>projection</th><th>status</th>' +
      '<th>position</th><th>lag</th><th>applied</th><th>skipped, parked</th><th>state</th></tr>' +
      (rows || '<tr><td colspan=7 class=muted>no projection reports to this node</td></tr>') + '</table>');
  }

  function clusterView(c) {
    const palette = ['#1f5fbf', '#2e8b57', '#c77700', '#8e44ad', '#c62828', '#00838f', '#6d4c41'];
    const color = new Map((c.members || []).map((m, i) => [m.id, palette[i % palette.length]]));
    const total = (c.ranges || []).reduce((n, r) => n + (r.last - r.first + 1), 0) || 1;
    const bar = (c.ranges || []).map((r) => `<span title="slots ${r.first}–${r.last}: ${esc(r.owner)}" ` +
      `style="width:${(100 * (r.last - r.first + 1) / total).toFixed(3)}%;background:` +
      `${color.get(r.owner) || '#999'}"></span>`).join('');
    const members = (c.members || []).map((m) => `<tr><td><span class=badge style="background:` +
      `${color.get(m.id)};color:#fff">${esc(m.id)}</span></td><td>${esc(m.api)}</td>` +
      `<td>${m.slots}</td></tr>`).join('');
    const moves = (c.moves || []).map((m) => `<div>slots ${esc(m.slots)} ${esc(m.from)} → ${esc(m.to)}: ` +
      `${esc(m.step)}</div>`).join('') || '<div class=muted>none</div>';
    put('cluster', `<h2>cluster <span class=muted>map epoch ${c.epoch}, controller ` +
      `${esc(c.controller || 'none')}</span></h2><div class=slots>${bar}</div><table><tr>` +
      `<th>member</th><th>API</th><th>slots</th></tr>${members}</table><h3>moves</h3>` +
      `<div class=log>${moves}</div>`);
  }

  async function searchStreams(prefix) {
    const list = document.getElementById('stream-list');
    try {
      const found = JSON.parse(await call('GET', `/console/streams?prefix=${encodeURIComponent(prefix)}`));
      list.innerHTML = (found.streams || []).map((st) => `<button data-action=open ` +
        `data-stream="${esc(st.name)}">${esc(st.name)}</button> <span class=muted>` +
        `${st.events} events</span>`).join('<br>') || '<span class=muted>no stream has that prefix</span>';
      if (found.more) list.innerHTML += '<div class=muted>more streams match: narrow the prefix</div>';
    } catch (error) {
      list.textContent = error.message;
    }
  }
  async function openStream(name) {
    const out = document.getElementById('stream-events');
    try {
      const read = JSON.parse(await call('GET', `/v1/streams/${encodeURIComponent(name)}?limit=50`));
      out.innerHTML = `<h3>${esc(name)}</h3>` + (read.events || []).map((e) =>
        `<details><summary>${e.version}: ${esc(e.type)} <span class=muted>${esc(e.id)}</span></summary>` +
        `<pre>${esc(JSON.stringify({ data: e.data, metadata: e.metadata }, null, 2))}</pre></details>`)
        .join('') + (read.next ? '<div class=muted>first 50 events shown</div>' : '');
    } catch (error) {
      out.textContent = error.message;
    }
  }

  // ---- election -----------------------------------------------------------------------------
  function electionView(e) {
    put('election', `<h2>election <span class=muted>${esc(e.name)}</span></h2>` +
      `<table><tr><th>leader</th><td data-leader="${esc(e.leader || '')}">${esc(e.leader || 'none')}` +
      `</td></tr><tr><th>fencing token</th><td>${esc(e.token ?? '–')}</td></tr>` +
      `<tr><th>since</th><td>${e.since ? time(e.since) + ' (' + ago(e.since) + ')' : '–'}</td></tr>` +
      `<tr><th>this process</th><td>${esc(e.me)} ${badge(e.role, e.role === 'leader' ? 'ok' : '')}` +
      '</td></tr></table>');
  }

  // ---- wiring -------------------------------------------------------------------------------
  const views = document.createElement('div');
  function render() {
    const s = samples[samples.length - 1];
    if (!s) return;
    if (!views.isConnected) {
      main.innerHTML = '';
      main.appendChild(views);
    }
    if (kind === 'proxy') proxyViews(s);
    if (kind === 'node') nodeViews(s);
    if (s.election) electionView(s.election);
  }

  main.addEventListener('click', async (event) => {
    const target = event.target.closest('[data-action]');
    if (!target) return;
    event.preventDefault();
    const action = target.dataset.action;
    if (action === 'stage') {
      const route = target.dataset.route;
      const message = document.getElementById(`message-${route}`);
      const percent = inputs.get(`percent-${route}`) ?? '10';
      try {
        await call('POST', `/migration?route=${encodeURIComponent(route)}&stage=${target.dataset.stage}` +
          `&percent=${encodeURIComponent(percent)}`);
        if (message) message.textContent = `now ${target.dataset.stage}`;
      } catch (error) {
        if (message) message.textContent = error.message;
      }
    } else if (action === 'replay') {
      const message = document.getElementById('message-groups');
      try {
        const r = JSON.parse(await call('POST',
          `/v1/groups/${encodeURIComponent(target.dataset.group)}/parked/replay`, '{}'));
        message.textContent = `${target.dataset.group}: ${r.replayed} replayed`;
      } catch (error) {
        message.textContent = error.message;
      }
    } else if (action === 'open') {
      openStream(target.dataset.stream);
    }
  });
  main.addEventListener('submit', (event) => {
    if (event.target.id !== 'stream-search') return;
    event.preventDefault();
    searchStreams(event.target.elements.prefix.value);
  });
  main.addEventListener('input', (event) => {
    if (event.target.id === 'token') sessionStorage.setItem('keel-admin-token', event.target.value);
    else if (event.target.name) inputs.set(event.target.name, event.target.value);
  });

  function connect() {
    const source = new EventSource('/console/events');
    source.addEventListener('history', (event) => {
      samples = JSON.parse(event.data).slice(-maxSamples);
      render();
    });
    source.addEventListener('sample', (event) => {
      samples.push(JSON.parse(event.data));
      if (samples.length > maxSamples) samples.shift();
      render();
      live.textContent = `live · ${time(Date.now())}`;
      live.className = 'on';
    });
    source.onerror = () => {
      live.textContent = 'disconnected, retrying…';
      live.className = 'stale';
    };
  }
  live.textContent = 'connecting…';
  connect();
  setInterval(refreshReports, 5000);
  refreshReports();
})();
