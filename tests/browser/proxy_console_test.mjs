// The proxy's console in headless Chromium: `keel proxy` with three upstreams under a steady
// load; one upstream starts failing (the page must show it ejected), then all do (the breaker
// must show OPEN), then they recover (the breaker must close again). Screenshots go to --out.
// Also: the first paint works without JavaScript, and the page fits a laptop screen.
//
//   node tests/browser/proxy_console_test.mjs --keel build/keel --out build/console-screens
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { args, browser, freePort, get, livePage, scenario, SKIP, sleep, start, upstream, waitFor } from './lib.mjs';

const options = args();
const chromium = await browser();
if (!chromium) process.exit(SKIP);

const upstreams = [await upstream('a'), await upstream('b'), await upstream('c')];
const modern = await upstream('modern');
const listen = await freePort();
const admin = await freePort();
const config = path.join(options.out, 'proxy_console_test.yaml');
fs.writeFileSync(config, `admin:
  address: 127.0.0.1:${admin}
migration_state_file: ${path.join(options.out, 'proxy_console_test.state.json')}
listeners:
  - name: web
    address: 127.0.0.1:${listen}
    routes:
      - name: price
        match: {prefix: /price}
        migration: {legacy: app, modern: modern, stage: legacy}
      - name: all
        match: {prefix: /}
        cluster: app
clusters:
  - name: app
    endpoints:
${upstreams.map((u) => `      - {address: ${u.address}}`).join('\n')}
    load_balancer: {policy: round_robin}
    retry: {num_retries: 0}
    outlier_detection: {consecutive_5xx: 3, interval_ms: 500, base_ejection_time_ms: 30000,
                        max_ejection_percent: 34}
    circuit_breaker: {window_size: 20, minimum_calls: 10, failure_rate_threshold: 50,
                      open_duration_ms: 2000}
  - name: modern
    endpoints:
      - {address: ${modern.address}}
`);
fs.rmSync(path.join(options.out, 'proxy_console_test.state.json'), { force: true });
const log = path.join(options.out, 'proxy_console_test.log');
const proxy = start(options.keel, ['proxy', '-c', config], log);
let loading = true;
const load = (async () => {
  while (loading) {
    await Promise.all([get(listen, '/a'), get(listen, '/b')]);
    await sleep(10);
  }
})();
await scenario({ chromium, out: options.out, name: 'proxy', server: proxy, log,
  cleanup: async () => {
    loading = false;
    await load;
    for (const u of [...upstreams, modern]) await u.close();
  } }, async (state) => {
  await waitFor('the admin listener', async () => (await get(admin, '/ready')).status === 200);

  // Without JavaScript: the first paint already has the clusters and their endpoints.
  const plain = await chromium.newContext({ javaScriptEnabled: false });
  const still = await plain.newPage();
  await still.goto(`http://127.0.0.1:${admin}/`);
  assert.equal(await still.locator('tr[data-cluster="app"] [data-endpoint]').count(), 3, 'three endpoints without JavaScript');
  assert.equal(await still.locator('tr[data-cluster="app"]').getAttribute('data-breaker'), 'CLOSED');
  await plain.close();

  const { page, errors } = await livePage(chromium, `http://127.0.0.1:${admin}/`, state);
  const endpoint = (u) => page.locator(`section[data-cluster="app"] tr[data-endpoint="${u.address}"]`);
  for (const u of upstreams) assert.equal(await endpoint(u).getAttribute('data-health'), 'healthy');
  // The request rate chart has a number once two samples are in.
  await waitFor('a request rate', async () => /\d/.test(await page.locator('tr[data-route="all"] td').nth(2).innerText()));
  const width = await page.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth]);
  assert.ok(width[0] <= width[1], `no horizontal scrolling on a laptop screen (${width[0]} > ${width[1]})`);
  await page.screenshot({ path: path.join(options.out, 'proxy-healthy.png'), fullPage: true });

  // The migration view: a canary at 25 % from the page's buttons (the admin API underneath).
  const migration = page.locator('section[data-migration="price"]');
  assert.equal(await migration.getAttribute('data-stage'), 'legacy');
  await page.fill('input[name="percent-price"]', '25');
  await migration.locator('button[data-stage="canary"]').click();
  await page.locator('section[data-migration="price"][data-stage="canary"]').waitFor({ timeout: 5000 });
  assert.match(await migration.locator('h2').innerText(), /canary 25 %/);
  assert.match(await page.locator('#events').innerText(), /price -> canary 25%/);
  assert.equal(JSON.parse((await get(admin, '/migration')).body)[0].percent, 25);

  upstreams[1].failing = true;
  await endpoint(upstreams[1]).and(page.locator('[data-health="ejected"]')).waitFor({ timeout: 10000 });
  assert.match(await endpoint(upstreams[1]).innerText(), /ejected \d+ s more/);
  assert.match(await page.locator('#events').innerText(), /ejected by outlier detection/);
  await page.screenshot({ path: path.join(options.out, 'proxy-ejected.png'), fullPage: true });

  for (const u of upstreams) u.failing = true;
  await page.locator('section[data-cluster="app"][data-breaker="OPEN"]').waitFor({ timeout: 10000 });
  assert.match(await page.locator('section[data-cluster="app"] .log').innerText(), /CLOSED → OPEN/);
  await page.screenshot({ path: path.join(options.out, 'proxy-breaker-open.png'), fullPage: true });

  for (const u of upstreams) u.failing = false;
  await page.locator('section[data-cluster="app"][data-breaker="CLOSED"]').waitFor({ timeout: 15000 });
  assert.match(await page.locator('section[data-cluster="app"] .log').innerText(), /HALF_OPEN → CLOSED/);
  await page.screenshot({ path: path.join(options.out, 'proxy-recovered.png'), fullPage: true });
  assert.deepEqual(errors, [], 'no script errors');
});
