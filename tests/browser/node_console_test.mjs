// The node's console in headless Chromium: `keel node` with an admin listener; events appended
// through the API appear in the $all tail, a consumer group's lag rises with appends and falls
// with acks, a projection's report shows its position, lag and state, and the stream browser
// finds a stream by prefix and shows its events' JSON.
// Screenshots go to --out. Also: the first paint works without JavaScript.
//
//   node tests/browser/node_console_test.mjs --keel build/keel --out build/console-screens
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { args, browser, freePort, get, livePage, scenario, SKIP, start, waitFor } from './lib.mjs';

const options = args();
const chromium = await browser();
if (!chromium) process.exit(SKIP);

const api = await freePort();
const admin = await freePort();
const data = fs.mkdtempSync(path.join(options.out, 'node_console_test-'));
const log = path.join(options.out, 'node_console_test.log');
const node = start(options.keel, ['node', '--data-dir', data, '--listen', `127.0.0.1:${api}`,
  '--admin', `127.0.0.1:${admin}`], log);
const json = { 'content-type': 'application/json' };
const call = async (method, url, body) => {
  const answer = await get(api, url, { method, body: body && JSON.stringify(body), headers: json });
  assert.ok(answer.status >= 200 && answer.status < 300, `${method} ${url}: ${answer.status} ${answer.body}`);
  return answer.body ? JSON.parse(answer.body) : null;
};
const append = (stream, type, payload) => call('POST', `/v1/streams/${stream}`, { type, data: payload });

await scenario({ chromium, out: options.out, name: 'node', server: node, log,
  cleanup: async () => fs.rmSync(data, { recursive: true, force: true }) }, async (state) => {
  await waitFor('the node', async () => (await get(api, '/ready')).status === 200);
  await call('PUT', '/v1/groups/shipping', { categories: ['order'] });
  await append('order-1', 'OrderPlaced', { total: 5 });
  // A projection reports that it has everything so far (the node's head, in the answer).
  const report = (position, revenue) => call('PUT', '/v1/projections/order-totals',
    { position, applied: 1, live: true, state: { revenue }, interval_ms: 60000 });
  const { head } = await report(0, 0);
  await report(head, 5);

  const plain = await chromium.newContext({ javaScriptEnabled: false });
  const still = await plain.newPage();
  await still.goto(`http://127.0.0.1:${admin}/`);
  assert.equal(await still.locator('tr[data-group="shipping"]').count(), 1, 'the group without JavaScript');
  assert.equal(await still.locator('#tail tr', { hasText: 'order-1' }).count(), 1, 'the event without JavaScript');
  assert.match(await still.locator('tr[data-projection="order-totals"]').innerText(), /revenue/,
    'the projection without JavaScript');
  await plain.close();

  const { page, errors } = await livePage(chromium, `http://127.0.0.1:${admin}/`, state);

  // Appends show up in the tail and raise the group's lag.
  for (let i = 2; i <= 6; ++i) await append(`order-${i}`, 'OrderPlaced', { total: i, note: `<b>${i}</b>` });
  const latest = page.locator('#tail tr', { hasText: 'order-6' });
  await latest.waitFor({ timeout: 10000 });
  assert.match(await latest.innerText(), /order-6\s+0\s+OrderPlaced\s+.*<b>6<\/b>/s,
    'the event, its data shown as text');
  const lag = () => page.locator('tr[data-group="shipping"]').getAttribute('data-lag');
  await waitFor('the lag at 6', async () => (await lag()) === '6', 10000);
  // The projection has not reported since: it lags by the five new events; its next report
  // catches it up and its state is shown.
  const projection = page.locator('tr[data-projection="order-totals"]');
  await waitFor('the projection lag at 5', async () => (await projection.getAttribute('data-lag')) === '5', 10000);
  await report(head + 5, 25);
  await waitFor('the projection caught up', async () => (await projection.getAttribute('data-lag')) === '0', 10000);
  assert.match(await projection.innerText(), /live.*"revenue":25/s);
  await page.screenshot({ path: path.join(options.out, 'node-lag.png'), fullPage: true });

  // A member takes and acks everything: the lag falls to 0 and the member is listed.
  let acked = 0;
  while (acked < 6) {
    const polled = await call('POST', '/v1/groups/shipping/poll', { member: 'worker-1', max: 10, wait_ms: 1000 });
    const ids = polled.deliveries.map((d) => d.id);
    if (ids.length) await call('POST', '/v1/groups/shipping/ack', { member: 'worker-1', ids });
    acked += ids.length;
  }
  await waitFor('the lag at 0', async () => (await lag()) === '0', 15000);
  assert.match(await page.locator('tr[data-group="shipping"]').innerText(), /worker-1/);

  // The stream browser: search by prefix, open a stream, see its event's JSON.
  await page.fill('#stream-search input[name=prefix]', 'order-');
  await page.click('#stream-search button');
  await page.locator('#stream-list [data-stream="order-3"]').waitFor({ timeout: 5000 });
  assert.equal(await page.locator('#stream-list [data-stream]').count(), 6);
  await page.click('#stream-list [data-stream="order-3"]');
  await page.locator('#stream-events details').first().waitFor({ timeout: 5000 });
  await page.locator('#stream-events summary').first().click();
  assert.match(await page.locator('#stream-events pre').first().innerText(), /"total": 3/);
  const width = await page.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth]);
  assert.ok(width[0] <= width[1], `no horizontal scrolling on a laptop screen (${width[0]} > ${width[1]})`);
  await page.screenshot({ path: path.join(options.out, 'node-streams.png'), fullPage: true });
  assert.deepEqual(errors, [], 'no script errors');
});
