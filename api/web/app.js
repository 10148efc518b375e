// The dashboard: panels loaded from the REST API and refreshed when the change stream says their
// view changed. `live` events carry the whole live answer and are drawn directly; the other
// events only say "this view moved", and the panel re-reads its REST endpoint (coalesced, so ten
// publishes a second cost one request per panel per interval), because the panel's query carries
// the range and filter that the stream's headline numbers do not.
'use strict';

const $ = (id) => document.getElementById(id);
const fmt = (n) => (n === null || n === undefined || Number.isNaN(n) ? '–' : Number(n).toLocaleString('en-US'));
const pct = (x) => (x === null || x === undefined ? '–' : (x * 100).toFixed(1) + '%');
const secs = (s) => (s === null || s === undefined ? '–' : s < 90 ? Math.round(s) + ' s' : (s / 60).toFixed(1) + ' min');
const span = (minutes) => (minutes % 1440 === 0 ? minutes / 1440 + ' d' : minutes % 60 === 0 ? minutes / 60 + ' h' : minutes + ' min');
const clock = (ms) => (ms ? new Date(ms).toISOString().replace('T', ' ').slice(0, 19) + 'Z' : '–');
const DIMS = ['utm_source', 'device', 'country'];
const LIMIT_ROWS = 15; // keys shown per rate-limit rule, most events first

const state = {
  rangeMinutes: 60,
  filterDim: '',
  filterValue: '',
  headMs: null,
  admin: false,
  live: null,
  pathPage: '(entry)',
  retentionMode: 'on',
  stream: null, // AbortController of the running stream
  authNeeded: false,
  lastEventAt: 0,
};

// ---------------------------------------------------------------- DOM helpers

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') node.className = v;
    else if (k === 'text') node.textContent = v;
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else if (k.startsWith('data')) node.setAttribute(k.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase()), v);
    else node.setAttribute(k, v);
  }
  for (const c of children.flat()) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

// Fills a table: columns [{title, value: row => text | Node, num?: bool}]; an empty list says so.
function table(target, columns, rows, empty) {
  const t = typeof target === 'string' ? $(target) : target;
  t.replaceChildren();
  if (!rows.length) {
    t.append(el('tr', {}, el('td', { class: 'empty', text: empty || 'nothing yet' })));
    return t;
  }
  t.append(el('thead', {}, el('tr', {}, columns.map((c) => el('th', { class: c.num ? 'num' : '', text: c.title })))));
  const body = el('tbody');
  for (const row of rows) {
    body.append(el('tr', {}, columns.map((c) => {
      const v = c.value(row);
      return el('td', { class: c.num ? 'num' : '', title: typeof v === 'string' ? v : undefined }, v instanceof Node ? v : String(v));
    })));
  }
  t.append(body);
  return t;
}

// A share of the largest value as a bar behind the number (tables stay readable without charts).
function barCell(value, max) {
  const width = max > 0 ? Math.max(1, Math.round((100 * value) / max)) : 0;
  return el('span', { class: 'bar' }, el('span', { class: 'fill', style: 'width:' + width + '%' }), el('span', { class: 'n', text: fmt(value) }));
}

function showChart(id) {
  const node = $(id);
  if (node && Charts.available) node.hidden = false;
  return node;
}

function query(path, params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') q.set(k, v);
  const s = q.toString();
  return s ? path + '?' + s : path;
}

function setError(message) {
  const node = $('error');
  node.textContent = message || '';
  node.hidden = !message;
}

// ---------------------------------------------------------------- range and filter

// `from` for endpoints that take one: the range back from the newest event time (`head`), so a
// replayed or delayed stream shows its own last hour rather than an empty wall-clock hour.
function rangeFrom() {
  return state.headMs ? state.headMs - state.rangeMinutes * 60000 : undefined;
}

function rangeLabel() {
  return { 15: 'last 15 min', 60: 'last hour', 360: 'last 6 h', 1440: 'last 24 h' }[state.rangeMinutes] || state.rangeMinutes + ' min';
}

function filterLabel() {
  return state.filterDim && state.filterValue ? state.filterDim + ' = ' + state.filterValue : '';
}

// The filter values offered: the keys the live view has seen for the chosen dimension.
function fillFilterValues() {
  const select = $('filter-value');
  select.disabled = !state.filterDim;
  const keys = state.filterDim && state.live ? (state.live.breakdowns[state.filterDim] || []).map((k) => k.key) : [];
  if (state.filterValue && !keys.includes(state.filterValue)) keys.push(state.filterValue);
  const current = Array.from(select.options).map((o) => o.value).join('\n');
  if (current === ['', ...keys].join('\n')) return;
  select.replaceChildren(el('option', { value: '', text: state.filterDim ? 'any' : '–' }), ...keys.map((k) => el('option', { value: k, text: k })));
  select.value = state.filterValue;
}

// ---------------------------------------------------------------- panels

const panels = {
  // Live numbers, from the stream's `live` events (and the first REST read).
  live: {
    async load() {
      drawLive(await Client.get('api/v1/live'));
    },
  },

  // Events per minute and active users over the range (filtered to one value when set).
  traffic: {
    async load() {
      const from = rangeFrom();
      const dim = state.filterDim && state.filterValue ? state.filterDim : 'none';
      const eventsUrl = query('api/v1/timeseries', { metric: 'events', breakdown: dim, from, limit: dim === 'none' ? undefined : 1000 });
      const usersUrl = query('api/v1/timeseries', { metric: 'active_users', from });
      const [events, users] = await Promise.all([Client.get(eventsUrl), Client.get(usersUrl)]);
      const series = dim === 'none' ? events.series[0] : events.series.find((s) => s.key === state.filterValue);
      const points = series ? series.points : [];
      $('panel-traffic').dataset.source = eventsUrl;
      $('events-in-range').textContent = fmt(series ? series.total : 0);
      $('events-in-range-label').textContent = '(' + rangeLabel() + (filterLabel() ? ', ' + filterLabel() : '') + ')';
      $('traffic-filter').textContent = filterLabel() ? 'chart: ' + filterLabel() : '';
      const userPoints = users.series.length ? users.series[0].points : [];
      if (!Charts.available) {
        // The chart's numbers as a table: the last ten minutes, newest first.
        const byMinute = new Map(userPoints.map((p) => [p.minute_ms, p.value]));
        const node = $('table-traffic-minutes');
        node.hidden = false;
        table(node, [
          { title: 'minute', value: (p) => clock(p.minute_ms).slice(11, 16) },
          { title: 'events', num: true, value: (p) => fmt(p.value) },
          { title: 'active users', num: true, value: (p) => fmt(byMinute.get(p.minute_ms)) },
        ], points.slice(-10).reverse(), 'no events in range');
      }
      Charts.lines(showChart('chart-traffic'), [
        { name: 'events per minute' + (filterLabel() ? ' (' + filterLabel() + ')' : ''), points, axis: 0 },
        { name: 'active users', points: userPoints, axis: 1 },
      ], ['events', 'users']);
    },
  },

  // Totals per utm_source, device and country over the range.
  breakdowns: {
    async load() {
      const from = rangeFrom();
      const answers = await Promise.all(DIMS.map((d) => Client.get(query('api/v1/timeseries', { metric: 'events', breakdown: d, from, limit: 10 }))));
      $('breakdowns-range').textContent = '(' + rangeLabel() + ')';
      answers.forEach((answer, i) => {
        const dim = DIMS[i];
        const rows = answer.series.map((s) => ({ key: s.key, value: s.total }));
        const max = rows.reduce((m, r) => Math.max(m, r.value), 0);
        const highlight = state.filterDim === dim ? state.filterValue : '';
        table('table-' + dim, [
          { title: dim, value: (r) => (r.key === highlight ? el('strong', { text: r.key }) : r.key) },
          { title: 'events', num: true, value: (r) => barCell(r.value, max) },
        ], rows, 'no events in range');
        Charts.bars(showChart('chart-' + dim), rows, highlight);
      });
    },
  },

  sessions: {
    async load() {
      const params = { from: rangeFrom() };
      if (state.filterDim && state.filterValue) params[state.filterDim] = state.filterValue;
      const url = query('api/v1/sessions', params);
      const s = await Client.get(url);
      $('panel-sessions').dataset.source = url;
      const sum = s.summary;
      $('sessions-count').textContent = fmt(sum.sessions);
      $('sessions-in-progress').textContent = fmt(sum.in_progress);
      $('sessions-bounce-rate').textContent = pct(sum.bounce_rate);
      $('sessions-duration').textContent = secs(sum.avg_duration_s) + ' (' + secs(sum.median_duration_s) + ')';
      $('sessions-pages').textContent = sum.pages_per_session.toFixed(2);
      $('sessions-scope').textContent = '(started ' + clock(s.from_ms).slice(0, 16) + ' to ' + clock(s.to_ms).slice(11, 16) + (filterLabel() ? ', first event ' + filterLabel() : '') + ')';
      const hourly = s.hourly.filter((h) => h.sessions > 0 || h.start_ms >= (rangeFrom() || 0));
      table('table-sessions-hourly', [
        { title: 'hour', value: (h) => clock(h.start_ms).slice(5, 16) },
        { title: 'sessions', num: true, value: (h) => fmt(h.sessions) },
      ], hourly.slice(-4).reverse(), 'no sessions');
      Charts.columns(showChart('chart-sessions'), hourly.map((h) => clock(h.start_ms).slice(11, 16)), hourly.map((h) => h.sessions), 'sessions started');
      const pageTable = (id, rows) => {
        const max = rows.reduce((m, r) => Math.max(m, r.count), 0);
        table(id, [{ title: 'page', value: (r) => r.key }, { title: 'sessions', num: true, value: (r) => barCell(r.count, max) }], rows.slice(0, 10), 'no sessions');
      };
      pageTable('table-entry-pages', s.top_entry_pages);
      pageTable('table-exit-pages', s.top_exit_pages);
    },
  },

  funnels: {
    async load() {
      const list = await Client.get('api/v1/funnels');
      const reports = await Promise.all(list.funnels.map((f) => Client.get('api/v1/funnels/' + encodeURIComponent(f.name))));
      const root = $('funnels');
      if (!reports.length) {
        root.replaceChildren(el('p', { class: 'empty', text: 'No funnels defined.' }));
        return;
      }
      syncCards(root, reports.map((r) => r.definition.name), (name) => funnelCard(name));
      reports.forEach((r) => drawFunnel(r));
    },
  },

  retention: {
    async load() {
      const list = await Client.get('api/v1/retention');
      const reports = await Promise.all(list.retention.map((d) => {
        const params = { mode: state.retentionMode };
        return Client.get(query('api/v1/retention/' + encodeURIComponent(d.name), params)).then(async (r) => {
          // The breakdown filter applies where the definition breaks down by that dimension.
          if (state.filterDim && state.filterValue && r.definition.breakdown === state.filterDim) {
            params.breakdown_value = state.filterValue;
            const url = query('api/v1/retention/' + encodeURIComponent(d.name), params);
            return Object.assign(await Client.get(url), { source: url, filtered: true });
          }
          return Object.assign(r, { source: query('api/v1/retention/' + encodeURIComponent(d.name), params), filtered: false });
        });
      }));
      const root = $('retention');
      if (!reports.length) {
        root.replaceChildren(el('p', { class: 'empty', text: 'No retention definitions.' }));
        return;
      }
      syncCards(root, reports.map((r) => r.definition.name), (name) => retentionCard(name));
      reports.forEach((r) => drawRetention(r));
    },
  },

  paths: {
    async load() {
      const graph = await Client.get(query('api/v1/paths/graph', { max_edges: 50 }));
      const pages = graph.nodes.map((n) => n.name).filter((n) => n !== '(exit)');
      if (!pages.includes(state.pathPage)) pages.unshift(state.pathPage);
      const select = $('path-page');
      if (Array.from(select.options).map((o) => o.value).join('\n') !== pages.join('\n')) {
        select.replaceChildren(...pages.map((p) => el('option', { value: p, text: p })));
      }
      select.value = state.pathPage;
      $('paths-from').textContent = state.pathPage;
      const [top, next] = await Promise.all([
        Client.get(query('api/v1/paths/top', { from: state.pathPage, steps: 4, limit: 12 })),
        state.pathPage === '(entry)' ? Promise.resolve(null) : Client.get(query('api/v1/paths/next', { page: state.pathPage, limit: 10 })).catch(() => null),
      ]);
      table('table-top-paths', [
        { title: 'path', value: (p) => p.pages.join(' → ') },
        { title: 'sessions (est.)', num: true, value: (p) => fmt(Math.round(p.sessions)) },
      ], top.paths, 'no paths yet');
      drawSankey(top.paths);
      const nextRows = next ? next.next : graph.edges.filter((e) => e.from === state.pathPage).map((e) => ({ page: e.to, count: e.weight }));
      const prevRows = next ? next.previous : [];
      const shareOf = (rows) => rows.reduce((s, r) => s + r.count, 0);
      const pageTable = (id, rows, empty) => {
        const total = shareOf(rows);
        const max = rows.reduce((m, r) => Math.max(m, r.count), 0);
        table(id, [
          { title: 'page', value: (r) => r.page },
          { title: 'sessions', num: true, value: (r) => barCell(r.count, max) },
          { title: 'share', num: true, value: (r) => pct(r.share !== undefined ? r.share : total ? r.count / total : 0) },
        ], rows, empty);
      };
      pageTable('table-next', nextRows, 'nothing follows');
      pageTable('table-previous', prevRows, state.pathPage === '(entry)' ? 'sessions start here' : 'nothing before');
      Charts.bars(showChart('chart-next'), nextRows.map((r) => ({ key: r.page, value: r.count })));
    },
  },

  alerts: {
    async load() {
      const [firing, history, rules, silences] = await Promise.all([
        Client.get(query('api/v1/alerts', { limit: 100 })),
        Client.get(query('api/v1/alerts/history', { limit: 50 })),
        Client.get('api/v1/alerts/rules'),
        Client.get('api/v1/alerts/silences'),
      ]);
      const silenceButton = (matcher) => (state.admin
        ? el('button', { type: 'button', class: 'small', dataTestid: 'silence', dataMatcher: matcher, onclick: () => silence(matcher) }, 'Silence 1 h')
        : '');
      // An incident lists the other rules that fired on its series, and how often it reopened.
      const also = (a) => [
        (a.rules || []).length > 1 ? 'also ' + a.rules.slice(1).join(', ') : '',
        a.reopened ? 'reopened ' + a.reopened + '×' : '',
      ].filter(Boolean).join('; ');
      table('table-alerts', [
        { title: 'alert', value: (a) => el('span', { class: 'sev ' + a.severity, text: a.id }) },
        { title: 'summary', value: (a) => a.summary },
        { title: 'incident', value: also },
        { title: 'since', value: (a) => clock(a.started_ms).slice(5, 16) },
        { title: '', value: (a) => (a.silenced ? el('span', { class: 'tag', text: 'silenced' }) : silenceButton(a.id)) },
      ], firing.alerts, 'nothing firing');
      table('table-history', [
        { title: 'alert', value: (a) => el('span', { class: 'sev ' + a.severity, text: a.id }) },
        { title: 'state', value: (a) => a.state },
        { title: 'fired', value: (a) => clock(a.fired_ms).slice(5, 16) },
        { title: 'resolved', value: (a) => (a.resolved_ms ? clock(a.resolved_ms).slice(5, 16) : '–') },
        { title: 'summary', value: (a) => a.summary },
        { title: 'incident', value: also },
      ], history.alerts, 'no alert has fired');
      const silencedRules = new Set(silences.silences.map((s) => s.matcher));
      table('table-rules', [
        { title: 'rule', value: (r) => el('span', { class: 'sev ' + (r.severity || 'warning'), text: r.name }) },
        { title: 'kind', value: (r) => r.when.kind },
        { title: '', value: (r) => (silencedRules.has(r.name) ? el('span', { class: 'tag', text: 'silenced' }) : silenceButton(r.name)) },
      ], rules.rules, 'no rules');
      table('table-silences', [
        { title: 'matcher', value: (s) => s.matcher },
        { title: 'until', value: (s) => clock(s.until_ms) },
        { title: 'comment', value: (s) => s.comment || '' },
        { title: '', value: (s) => (state.admin ? el('button', { type: 'button', class: 'small', dataTestid: 'unsilence', dataMatcher: s.matcher, onclick: () => unsilence(s.id) }, 'Unsilence') : '') },
      ], silences.silences, 'no silences');
      $('alerts-admin').textContent = state.admin ? '(admin: silence and unsilence)' : '(read only: the admin token silences)';
      state.rateLimitRules = rules.rules.filter((r) => r.when.kind === 'rate_limit').map((r) => r.name);
    },
  },

  limits: {
    async load() {
      if (!state.rateLimitRules) await panels.alerts.load();
      const answers = await Promise.all(state.rateLimitRules.map((r) => Client.get('api/v1/limits/' + encodeURIComponent(r))));
      const root = $('limits');
      if (!answers.length) {
        root.replaceChildren(el('p', { class: 'empty', text: 'No rate-limit rules.' }));
        return;
      }
      root.replaceChildren(...answers.map((a) => el('div', { class: 'limit' },
        el('h3', {}, a.rule + ' ', el('small', { text: a.limit + ' per ' + a.window_minutes + ' min' })),
        table(el('table', { dataTestid: 'limit-' + a.rule }), [
          { title: 'key', value: (k) => k.key },
          { title: 'count', num: true, value: (k) => fmt(k.count) },
          { title: 'under again', value: (k) => (k.until_ms ? clock(k.until_ms).slice(11, 19) : '–') },
        ], a.over.slice(0, LIMIT_ROWS), 'no key over the limit'),
        a.over.length > LIMIT_ROWS ? el('p', { class: 'note-line', text: (a.over.length - LIMIT_ROWS) + ' more keys over the limit (GET api/v1/limits/' + a.rule + ')' }) : '')));
    },
  },
};

function drawLive(live) {
  state.live = live;
  if (live.head_ms) state.headMs = live.head_ms;
  $('active-users').textContent = fmt(live.active_users);
  $('active-window').textContent = '(last ' + live.active_window_minutes + ' min)';
  $('events-per-minute').textContent = fmt(live.events_per_minute);
  $('events-this-minute').textContent = fmt(live.events_this_minute);
  $('pages-window').textContent = '(last ' + live.top_window_minutes + ' min)';
  const maxEvents = live.events_by_name.reduce((m, r) => Math.max(m, r.count), 0);
  table('table-events-by-name', [
    { title: 'event', value: (r) => r.key },
    { title: 'events (top window)', num: true, value: (r) => barCell(r.count, maxEvents) },
  ], live.events_by_name, 'no events');
  const maxViews = live.top_pages.reduce((m, r) => Math.max(m, r.views), 0);
  table('table-top-pages', [
    { title: 'page', value: (p) => p.page },
    { title: 'views', num: true, value: (p) => barCell(p.views, maxViews) },
  ], live.top_pages, 'no page views');
  table('table-trending', [
    { title: 'page', value: (p) => p.page },
    { title: 'views', num: true, value: (p) => fmt(p.views) },
    { title: 'before', num: true, value: (p) => fmt(p.baseline_views) },
    { title: 'growth', num: true, value: (p) => '×' + p.growth.toFixed(1) },
  ], live.trending_pages, 'nothing trending');
  drawClock(live);
  fillFilterValues();
}

function drawClock(c) {
  $('as-of').textContent = clock(c.as_of_ms);
  $('as-of').dateTime = c.as_of || '';
  $('head').textContent = clock(c.head_ms);
  $('lag').textContent = c.as_of_ms && c.head_ms ? 'final up to ' + secs((c.head_ms - c.as_of_ms) / 1000) + ' behind head' : '';
  state.lastEventAt = Date.now();
}

// Keeps one card per name in `root`, in order, creating missing ones and dropping stale ones.
function syncCards(root, names, make) {
  const existing = new Map(Array.from(root.children).filter((c) => c.dataset.name).map((c) => [c.dataset.name, c]));
  const cards = names.map((n) => existing.get(n) || make(n));
  root.replaceChildren(...cards);
}

function funnelCard(name) {
  return el('article', { class: 'card', dataName: name, dataTestid: 'funnel-' + name },
    el('h3', {}, name, ' ', el('small', { class: 'meta' })),
    el('div', { class: 'chart short', hidden: true }),
    el('table', { class: 'compact steps' }),
    el('p', { class: 'note-line' }));
}

function drawFunnel(report) {
  const card = $('funnels').querySelector('[data-name="' + CSS.escape(report.definition.name) + '"]');
  const def = report.definition;
  let steps = report.steps;
  let scope = '';
  if (state.filterDim && state.filterValue) {
    if (def.breakdown === state.filterDim) {
      const b = report.breakdowns.find((x) => x.key === state.filterValue);
      steps = b ? b.steps : steps.map((s) => Object.assign({}, s, { users: 0, drop_off: 0, conversion_from_previous: 0, conversion_from_start: 0, median_time_s: null, p90_time_s: null }));
      scope = 'filtered: ' + filterLabel();
    } else {
      scope = 'not filtered: this funnel breaks down by ' + (def.breakdown || 'nothing');
    }
  }
  card.dataset.source = 'api/v1/funnels/' + encodeURIComponent(def.name);
  card.querySelector('.meta').textContent = def.order + ', over ' + def.over + ', window ' + span(def.window_minutes) + (scope ? ' · ' + scope : '');
  const label = (s) => {
    const d = def.steps[s.step - 1] || {};
    return s.event + (d.page ? ' ' + d.page : d.page_prefix ? ' ' + d.page_prefix + '*' : d.page_regex ? ' ~' + d.page_regex : '');
  };
  const rows = steps.map((s, i) => Object.assign({ label: label(s), stuck: report.open_now[i] }, s));
  table(card.querySelector('table'), [
    { title: 'step', value: (s) => s.step + '. ' + s.label },
    { title: 'users', num: true, value: (s) => el('span', { dataTestid: 'step-users', text: fmt(s.users) }) },
    { title: 'from previous', num: true, value: (s) => pct(s.conversion_from_previous) },
    { title: 'from start', num: true, value: (s) => pct(s.conversion_from_start) },
    { title: 'drop-off', num: true, value: (s) => fmt(s.drop_off) },
    { title: 'time (median / p90)', num: true, value: (s) => (s.step === 1 ? '' : secs(s.median_time_s) + ' / ' + secs(s.p90_time_s)) },
    { title: 'stuck now', num: true, value: (s) => (s.stuck === undefined ? '–' : fmt(s.stuck)) },
  ], rows, 'no steps');
  const chartNode = card.querySelector('.chart');
  if (Charts.available) chartNode.hidden = false;
  Charts.funnel(chartNode, rows);
  const entered = steps.length ? steps[0].users : 0;
  const converted = steps.length ? steps[steps.length - 1].users : 0;
  card.querySelector('.note-line').textContent = fmt(converted) + ' of ' + fmt(entered) + ' converted (' + pct(entered ? converted / entered : 0) + ')' +
    (report.by_day && report.by_day.length ? ' · entries on ' + report.by_day.length + (report.by_day.length === 1 ? ' day' : ' days') : '');
}

function retentionCard(name) {
  return el('article', { class: 'card', dataName: name, dataTestid: 'retention-' + name },
    el('h3', {}, name, ' ', el('small', { class: 'meta' })),
    el('div', { class: 'chart heat', hidden: true }),
    el('table', { class: 'compact matrix' }));
}

function drawRetention(report) {
  const card = $('retention').querySelector('[data-name="' + CSS.escape(report.definition.name) + '"]');
  const def = report.definition;
  card.dataset.source = report.source;
  const scope = state.filterDim && state.filterValue
    ? (report.filtered ? ' · filtered: ' + filterLabel() : ' · not filtered: breaks down by ' + (def.breakdown || 'nothing'))
    : '';
  card.querySelector('.meta').textContent = def.cohort.replace('_', ' ') + ' cohorts by ' + def.period + ', ' + report.mode.replace(/_/g, ' ') + scope;
  // Newest cohort first: what a reader looks for.
  const cohorts = report.cohorts.slice().reverse();
  const periods = cohorts.reduce((n, c) => Math.max(n, c.percent.length), 0);
  const columns = [
    { title: 'cohort', value: (c) => c.cohort },
    { title: 'users', num: true, value: (c) => fmt(c.size) },
  ];
  for (let p = 0; p < periods; p++) {
    columns.push({
      title: String(p),
      num: true,
      value: (c) => (p < c.percent.length
        ? el('span', { class: 'cell', dataTestid: 'cell-' + c.cohort + '-' + p, dataReturned: c.returned[p], style: 'background:' + heat(c.percent[p]), text: c.size ? c.percent[p].toFixed(1) + '%' : '–' })
        : ''),
    });
  }
  table(card.querySelector('table'), columns, cohorts, 'no cohorts yet');
  const chartNode = card.querySelector('.chart');
  if (Charts.available) chartNode.hidden = false;
  Charts.heatmap(chartNode, report.cohorts);
}

function heat(percent) {
  const a = Math.max(0, Math.min(1, percent / 100));
  return 'rgba(59, 111, 216, ' + (0.08 + 0.6 * a).toFixed(2) + ')';
}

// Top paths as a layered Sankey: a node is (step, page), so the graph is acyclic however often a
// path revisits a page (ECharts refuses cycles).
function drawSankey(paths) {
  const nodes = new Map();
  const links = new Map();
  for (const p of paths) {
    p.pages.forEach((page, i) => {
      const id = i + ': ' + page;
      if (!nodes.has(id)) nodes.set(id, { name: id, label: page });
      if (i > 0) {
        const key = (i - 1) + ': ' + p.pages[i - 1] + '\u0000' + id;
        const link = links.get(key) || { source: (i - 1) + ': ' + p.pages[i - 1], target: id, value: 0 };
        link.value += p.sessions;
        links.set(key, link);
      }
    });
  }
  const node = showChart('chart-sankey');
  if (!links.size) {
    Charts.clear(node);
    return;
  }
  Charts.sankey(node, Array.from(nodes.values()), Array.from(links.values()).map((l) => Object.assign(l, { value: Math.round(l.value * 10) / 10 })));
}

// ---------------------------------------------------------------- admin actions

async function silence(matcher) {
  try {
    await Client.request('POST', 'api/v1/alerts/silences', { matcher, minutes: 60, comment: 'from the dashboard' });
    setError('');
  } catch (e) {
    handleError(e, 'silence ' + matcher);
  }
  schedule('alerts', 0);
}

async function unsilence(id) {
  try {
    await Client.request('DELETE', 'api/v1/alerts/silences/' + id);
    setError('');
  } catch (e) {
    handleError(e, 'unsilence');
  }
  schedule('alerts', 0);
}

// ---------------------------------------------------------------- scheduling

// The least time between two reads of a panel (the stream says "changed" about once a second).
const INTERVAL_MS = { live: 250, traffic: 1000, breakdowns: 2000, sessions: 1000, funnels: 2000, retention: 3000, paths: 2000, alerts: 2000, limits: 2000 };
const runs = {};

// Loads `name` at most once per INTERVAL_MS, never two loads of one panel at once, and always
// once more after the last request for it.
function schedule(name, delay) {
  const r = runs[name] || (runs[name] = { running: false, pending: false, timer: null, last: 0 });
  if (r.running) {
    r.pending = true;
    return;
  }
  if (r.timer) return;
  const wait = Math.max(delay === undefined ? 0 : delay, r.last + INTERVAL_MS[name] - Date.now(), 0);
  r.timer = setTimeout(async () => {
    r.timer = null;
    r.running = true;
    r.last = Date.now();
    try {
      await panels[name].load();
      // For readers (and the browser test): when each panel last loaded.
      document.body.setAttribute('data-loaded-' + name, String(Date.now()));
      if (!state.authNeeded) setError('');
    } catch (e) {
      handleError(e, name);
    } finally {
      r.running = false;
      if (r.pending) {
        r.pending = false;
        schedule(name);
      }
    }
  }, wait);
}

function loadAll() {
  for (const name of Object.keys(panels)) schedule(name, 0);
}

// What each stream event invalidates.
const STREAM_PANELS = {
  // Each batch of the stream has a `live` event: the per-minute counts moved.
  live: ['traffic', 'breakdowns', 'limits'],
  sessions: ['sessions'],
  funnels: ['funnels'],
  retention: ['retention'],
  paths: ['paths'],
  alert: ['alerts', 'limits'],
  lagged: Object.keys(panels),
  // Reconnected after changes the server no longer keeps: everything is re-read.
  reset: Object.keys(panels),
};

let pendingLive = null;
function onStreamEvent(name, data) {
  state.lastEventAt = Date.now();
  if (name === 'live') {
    // Drawn at most every 250 ms (with `coalesce_ms=0` the engine may publish ten times a second).
    const first = !pendingLive;
    pendingLive = data;
    if (first) setTimeout(() => { const l = pendingLive; pendingLive = null; drawLive(l); }, 250);
  }
  for (const p of STREAM_PANELS[name] || []) schedule(p);
}

function onStreamState(s, detail) {
  const node = $('stream-state');
  node.dataset.state = s;
  node.textContent = { open: 'live', retrying: 'reconnecting', auth: 'needs a token' }[s] || s;
  node.title = detail || '';
  if (s === 'open') loadAll(); // catch up on what changed while disconnected
  if (s === 'auth') askForToken(detail);
}

function startStream() {
  if (state.stream) state.stream.abort();
  state.stream = new AbortController();
  Client.stream(state.stream.signal, onStreamEvent, onStreamState);
}

// ---------------------------------------------------------------- tokens

function handleError(e, what) {
  if (e instanceof AuthError) {
    askForToken(e.message);
    return;
  }
  setError((what ? what + ': ' : '') + e.message);
}

function askForToken(reason) {
  if (state.authNeeded) return;
  state.authNeeded = true;
  if (state.stream) state.stream.abort();
  $('token-reason').textContent = reason || '';
  $('token-form').hidden = false;
  $('token-input').focus();
}

async function useToken(token) {
  Client.setToken(token);
  state.authNeeded = false;
  $('token-form').hidden = true;
  setError('');
  await start();
}

async function start() {
  try {
    state.admin = await Client.canWrite();
  } catch (e) {
    handleError(e);
    return;
  }
  document.body.dataset.admin = String(state.admin);
  loadAll();
  startStream();
}

// ---------------------------------------------------------------- wiring

function wire() {
  document.body.dataset.charts = Charts.available ? 'on' : 'off';
  $('charts-note').hidden = Charts.available;
  $('range').addEventListener('change', (e) => {
    state.rangeMinutes = Number(e.target.value);
    ['traffic', 'breakdowns', 'sessions'].forEach((p) => schedule(p, 0));
  });
  $('filter-dim').addEventListener('change', (e) => {
    state.filterDim = e.target.value;
    state.filterValue = '';
    fillFilterValues();
    ['traffic', 'breakdowns', 'sessions', 'funnels', 'retention'].forEach((p) => schedule(p, 0));
  });
  $('filter-value').addEventListener('change', (e) => {
    state.filterValue = e.target.value;
    ['traffic', 'breakdowns', 'sessions', 'funnels', 'retention'].forEach((p) => schedule(p, 0));
  });
  $('retention-mode').addEventListener('change', (e) => {
    state.retentionMode = e.target.value;
    schedule('retention', 0);
  });
  $('path-page').addEventListener('change', (e) => {
    state.pathPage = e.target.value;
    schedule('paths', 0);
  });
  $('token-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const token = $('token-input').value.trim();
    $('token-input').value = '';
    useToken(token); // empty: forget the stored token
  });
  $('token-cancel').addEventListener('click', () => { $('token-form').hidden = true; });
  $('token-button').addEventListener('click', () => {
    state.authNeeded = false;
    askForToken('Enter another token (the admin token shows the silence buttons); an empty one forgets the stored token.');
  });
  // Freshness: how long since the stream last said anything (keep-alives excluded).
  setInterval(() => {
    if (state.lastEventAt) $('updated').textContent = 'updated ' + Math.round((Date.now() - state.lastEventAt) / 1000) + ' s ago';
  }, 1000);
  // A slow safety net in case an event was missed (a proxy that buffers the stream).
  setInterval(loadAll, 60000);
}

wire();
start();
