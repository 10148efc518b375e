// The dashboard in headless Chromium, driven by tests/dashboard_e2e.rs against an engine it fed
// with known events. Checks that the numbers shown are the API's, that a new event moves them
// without a reload, the token prompt, the filter and the admin buttons; saves a screenshot per
// panel. Configured by the environment:
//   DASHBOARD_URL     the engine's address, ending in /
//   READ_TOKEN        the read token (the page must ask for a token and work with this one)
//   ADMIN_TOKEN       the admin token (silence and unsilence)
//   SCREENSHOT_DIR    where the PNGs go
//   CHROMIUM          the browser (default /usr/bin/chromium)
//   REQUIRE_CHARTS=1  fail if the binary was built without ECharts
//   FUNNEL, RETENTION the funnel and retention definition whose numbers are compared
// Exits non-zero with the failed check on stderr.
import { createRequire } from 'node:module';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const require = createRequire(new URL('../../api/web/package.json', import.meta.url));
const { chromium } = require('playwright-core');

const BASE = process.env.DASHBOARD_URL;
const READ_TOKEN = process.env.READ_TOKEN;
const ADMIN_TOKEN = process.env.ADMIN_TOKEN;
const SHOTS = process.env.SCREENSHOT_DIR;
const FUNNEL = process.env.FUNNEL || 'checkout';
const RETENTION = process.env.RETENTION || 'returning_visitors';
const TIMEOUT = 30000;

const log = (...a) => console.error('[dashboard.mjs]', ...a);
const fmt = (n) => Number(n).toLocaleString('en-US');

async function api(path, token = READ_TOKEN) {
  const response = await fetch(new URL(path, BASE), { headers: token ? { Authorization: 'Bearer ' + token } : {} });
  if (!response.ok) throw new Error(`GET ${path}: ${response.status} ${await response.text()}`);
  return response.json();
}

// Polls until `probe` returns { ok: true }; fails with its last `detail`. The DOM and the API are
// read in the same round, so a number that moves between two reads only delays the check.
async function until(what, probe, timeout = TIMEOUT) {
  const deadline = Date.now() + timeout;
  let last = '';
  for (;;) {
    try {
      const r = await probe();
      if (r.ok) return r;
      last = r.detail;
    } catch (e) {
      last = e.message;
    }
    if (Date.now() > deadline) throw new Error(`${what}: not true within ${timeout} ms; last: ${last}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function text(page, selector) {
  return (await page.locator(selector).first().textContent({ timeout: 2000 })).trim();
}

const checks = [];
function passed(name, detail) {
  checks.push(name);
  log('ok:', name, detail === undefined ? '' : JSON.stringify(detail));
}

async function main() {
  mkdirSync(SHOTS, { recursive: true });
  const profile = mkdtempSync(join(tmpdir(), 'clickflow-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    // Without the background-networking flags Chromium's own connections are refused on a closed
    // network and slow everything down.
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
    viewport: { width: 1400, height: 1000 },
    deviceScaleFactor: 1,
  });
  const problems = [];
  try {
    const page = context.pages()[0] || (await context.newPage());
    page.on('pageerror', (e) => problems.push('page error: ' + e.message));
    page.on('console', (m) => {
      // Refused requests (the 401 before the token, the 400 of the admin probe) are logged by
      // Chromium as "Failed to load resource"; they are expected. Anything else is not.
      if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) problems.push('console: ' + m.text());
    });
    let navigations = 0;
    page.on('framenavigated', (f) => { if (f === page.mainFrame()) navigations += 1; });

    // The static page needs no token; the API does, so the page asks for one.
    await page.goto(BASE, { waitUntil: 'domcontentloaded' });
    if (READ_TOKEN) {
      await page.getByTestId('token-form').waitFor({ state: 'visible', timeout: TIMEOUT });
      await page.getByTestId('token-form').screenshot({ path: join(SHOTS, 'token-form.png') });
      passed('asks for a token after a 401');
      await page.getByTestId('token-input').fill(READ_TOKEN);
      await page.getByTestId('token-submit').click();
      await page.getByTestId('token-form').waitFor({ state: 'hidden', timeout: TIMEOUT });
      const stored = await page.evaluate(() => localStorage.getItem('clickflow.token'));
      if (stored !== READ_TOKEN) throw new Error('the token was not kept in localStorage');
      passed('works after the token is entered and keeps it');
    }
    await until('the stream is open', async () => {
      const s = await page.locator('#stream-state').getAttribute('data-state');
      return { ok: s === 'open', detail: s };
    });
    const panelsLoaded = ['live', 'traffic', 'breakdowns', 'sessions', 'funnels', 'retention', 'paths', 'alerts', 'limits'];
    await until('every panel loaded', async () => {
      const missing = await page.evaluate((names) => names.filter((n) => !document.body.hasAttribute('data-loaded-' + n)), panelsLoaded);
      return { ok: missing.length === 0, detail: 'not loaded: ' + missing.join(', ') };
    });
    passed('every panel loaded');
    const charts = await page.evaluate(() => document.body.dataset.charts);
    if (charts !== 'on') {
      if (process.env.REQUIRE_CHARTS === '1') throw new Error('the binary was built without ECharts (run scripts/install-web before cargo)');
      log('note: charts were not embedded in this build; checking the tables only');
      await page.getByTestId('charts-note').waitFor({ state: 'visible' });
    } else {
      await until('charts drawn', async () => {
        const n = await page.locator('#chart-traffic canvas, #chart-sankey canvas').count();
        return { ok: n >= 2, detail: n + ' canvases' };
      });
      passed('charts drawn with the embedded ECharts');
    }
    const readOnly = await page.evaluate(() => document.body.dataset.admin);
    if (READ_TOKEN && readOnly !== 'false') throw new Error('the read token shows admin buttons: data-admin=' + readOnly);
    if (READ_TOKEN && (await page.getByTestId('silence').count()) !== 0) throw new Error('silence buttons shown for the read token');

    // The numbers shown are the API's.
    const live = await until('active users and events per minute equal /api/v1/live', async () => {
      const l = await api('api/v1/live');
      const shown = { active: await text(page, '[data-testid=active-users]'), epm: await text(page, '[data-testid=events-per-minute]') };
      const ok = shown.active === fmt(l.active_users) && shown.epm === fmt(l.events_per_minute) && l.active_users > 0;
      return { ok, detail: JSON.stringify({ shown, api: [l.active_users, l.events_per_minute] }), live: l };
    });
    passed('active users and events per minute', { active_users: live.live.active_users, events_per_minute: live.live.events_per_minute });

    await until('the top page equals /api/v1/live', async () => {
      const l = await api('api/v1/live');
      const row = page.locator('[data-testid=top-pages] tbody tr').first();
      const shown = [(await row.locator('td').nth(0).textContent()).trim(), (await row.locator('td').nth(1).textContent()).trim()];
      const top = l.top_pages[0];
      return { ok: !!top && shown[0] === top.page && shown[1] === fmt(top.views), detail: JSON.stringify({ shown, top }) };
    });
    passed('top page');

    const sessionsBefore = await until('the sessions count equals /api/v1/sessions (the panel\'s query)', async () => {
      const source = await page.getByTestId('panel-sessions').getAttribute('data-source');
      const s = await api(source);
      const shown = await text(page, '[data-testid=sessions-count]');
      return { ok: shown === fmt(s.summary.sessions) && s.summary.sessions > 0, detail: JSON.stringify({ shown, source, api: s.summary.sessions }), n: s.summary.sessions };
    });
    passed('sessions count', sessionsBefore.n);

    await until(`funnel ${FUNNEL}'s step counts equal /api/v1/funnels/${FUNNEL}`, async () => {
      const f = await api('api/v1/funnels/' + FUNNEL);
      const shown = await page.locator(`[data-testid=funnel-${FUNNEL}] [data-testid=step-users]`).allTextContents();
      const expected = f.steps.map((s) => fmt(s.users));
      return { ok: JSON.stringify(shown) === JSON.stringify(expected) && f.steps[0].users > 0, detail: JSON.stringify({ shown, expected }) };
    });
    passed(`funnel ${FUNNEL} step counts`);

    await until(`a cell of retention ${RETENTION} equals the API's`, async () => {
      const card = page.getByTestId('retention-' + RETENTION);
      const r = await api(await card.getAttribute('data-source'));
      const cohort = r.cohorts.filter((c) => c.size > 0).pop();
      if (!cohort) return { ok: false, detail: 'no cohort with users yet' };
      const cell = card.getByTestId(`cell-${cohort.cohort}-0`);
      const shown = [(await cell.textContent()).trim(), await cell.getAttribute('data-returned')];
      const expected = [cohort.percent[0].toFixed(1) + '%', String(cohort.returned[0])];
      return { ok: JSON.stringify(shown) === JSON.stringify(expected), detail: JSON.stringify({ shown, expected }) };
    });
    passed(`retention ${RETENTION} cell`);

    // A new event through the collector moves the numbers without a reload.
    await page.evaluate(() => { window.__sameDocument = true; });
    const navigationsBefore = navigations;
    const liveBefore = await api('api/v1/live');
    const activeBefore = liveBefore.active_users;
    // At the newest event time, so the active window does not slide: one more user, exactly.
    const event = { user_id: 'browser-new-user', event: 'page_view', page: '/', ts: liveBefore.head_ms + 1, device: 'mobile', utm_source: 'google', country: 'DE' };
    const sent = await fetch(new URL('v1/collect', BASE), { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(event) });
    const sentBody = await sent.text();
    if (!sent.ok || !sentBody.includes('"accepted":1')) throw new Error('the collector did not take the event: ' + sent.status + ' ' + sentBody);
    await until('active users moved to the API\'s new value', async () => {
      const l = await api('api/v1/live');
      const shown = await text(page, '[data-testid=active-users]');
      return { ok: l.active_users === activeBefore + 1 && shown === fmt(l.active_users), detail: JSON.stringify({ shown, before: activeBefore, api: l.active_users }) };
    });
    await until('the sessions count moved to the API\'s new value', async () => {
      const source = await page.getByTestId('panel-sessions').getAttribute('data-source');
      const s = await api(source);
      const shown = await text(page, '[data-testid=sessions-count]');
      return { ok: s.summary.sessions > sessionsBefore.n && shown === fmt(s.summary.sessions), detail: JSON.stringify({ shown, before: sessionsBefore.n, api: s.summary.sessions }) };
    });
    const same = await page.evaluate(() => window.__sameDocument === true);
    if (!same || navigations !== navigationsBefore) throw new Error('the page reloaded to show the new event');
    passed('a new event moved active users and sessions without a reload', { before: activeBefore });

    // The breakdown filter reaches the sessions query, and its numbers are that query's.
    await page.getByTestId('filter-dim').selectOption('device');
    await until('mobile is offered as a device', async () => {
      const values = await page.locator('[data-testid=filter-value] option').allTextContents();
      return { ok: values.includes('mobile'), detail: values.join(',') };
    });
    await page.getByTestId('filter-value').selectOption('mobile');
    await until('the filtered sessions count equals the API\'s', async () => {
      const source = await page.getByTestId('panel-sessions').getAttribute('data-source');
      if (!source.includes('device=mobile')) return { ok: false, detail: source };
      const s = await api(source);
      const shown = await text(page, '[data-testid=sessions-count]');
      return { ok: shown === fmt(s.summary.sessions), detail: JSON.stringify({ shown, source, api: s.summary.sessions }) };
    });
    await page.getByTestId('range').selectOption('15');
    await until('the range reaches the sessions query', async () => {
      const source = await page.getByTestId('panel-sessions').getAttribute('data-source');
      const s = await api(source);
      const shown = await text(page, '[data-testid=sessions-count]');
      const live = await api('api/v1/live');
      const from = Number(new URL(source, BASE).searchParams.get('from'));
      return { ok: Math.abs(live.head_ms - 15 * 60000 - from) < 120000 && shown === fmt(s.summary.sessions), detail: JSON.stringify({ source, shown, api: s.summary.sessions }) };
    });
    passed('filter and range reach the queries');
    await shoot(page, 'filtered-');
    await page.getByTestId('filter-dim').selectOption('');
    await page.getByTestId('range').selectOption('60');

    // The admin token shows silence buttons that work.
    if (ADMIN_TOKEN) {
      await page.locator('#token-button').click();
      await page.getByTestId('token-input').fill(ADMIN_TOKEN);
      await page.getByTestId('token-submit').click();
      await until('admin buttons shown', async () => {
        const admin = await page.evaluate(() => document.body.dataset.admin);
        const n = await page.getByTestId('silence').count();
        return { ok: admin === 'true' && n > 0, detail: `data-admin=${admin}, ${n} buttons` };
      });
      const rule = 'user_burst';
      await page.locator(`[data-testid=silence][data-matcher="${rule}"]`).click();
      const silenced = await until('the silence is listed by the API and the page', async () => {
        const list = (await api('api/v1/alerts/silences')).silences.filter((s) => s.matcher === rule);
        const shown = await page.locator(`[data-testid=unsilence][data-matcher="${rule}"]`).count();
        return { ok: list.length === 1 && shown === 1, detail: JSON.stringify({ list, shown }) };
      });
      await page.getByTestId('panel-alerts').screenshot({ path: join(SHOTS, 'alerts-admin.png') });
      await page.locator(`[data-testid=unsilence][data-matcher="${rule}"]`).click();
      await until('the silence is gone', async () => {
        const list = (await api('api/v1/alerts/silences')).silences.filter((s) => s.matcher === rule);
        const shown = await page.locator(`[data-testid=unsilence][data-matcher="${rule}"]`).count();
        return { ok: list.length === 0 && shown === 0, detail: JSON.stringify({ list, shown }) };
      });
      passed('silence and unsilence with the admin token', silenced.detail);
    }

    await shoot(page, '');
    if (problems.length) throw new Error('the page reported errors:\n' + problems.join('\n'));
    console.log(JSON.stringify({ passed: checks.length, checks }));
  } finally {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
  }
}

// One PNG per panel and one of the whole page, once the charts' update animation has ended.
async function shoot(page, prefix) {
  await page.evaluate(() => new Promise((r) => setTimeout(r, 800)));
  for (const id of ['traffic', 'pages', 'breakdowns', 'sessions', 'funnels', 'retention', 'paths', 'alerts', 'limits']) {
    await page.getByTestId('panel-' + id).screenshot({ path: join(SHOTS, `${prefix}${id}.png`) });
  }
  // From the top, so the sticky header is drawn once, where it belongs.
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: join(SHOTS, `${prefix}page.png`), fullPage: true });
}

main().catch((e) => {
  console.error('[dashboard.mjs] FAILED:', e.message);
  process.exit(1);
});
