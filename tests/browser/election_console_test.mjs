// The election view in headless Chromium: a local etcd and two `keel ctl elect --admin`
// processes. The first one's console shows it leading with its fencing token; it is killed
// (SIGKILL), and the second one's console shows it leading with a larger token once the lease
// runs out. Screenshots go to --out.
//
//   node tests/browser/election_console_test.mjs --keel build/keel --out build/console-screens
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { args, browser, freePort, get, livePage, scenario, SKIP, start, waitFor } from './lib.mjs';

const options = args();
const etcdBinary = process.env.ETCD || '/usr/bin/etcd';
if (!fs.existsSync(etcdBinary)) {
  console.log(`SKIP: no etcd at ${etcdBinary} (scripts/install-deps test installs etcd-server)`);
  process.exit(SKIP);
}
const chromium = await browser();
if (!chromium) process.exit(SKIP);

const dir = fs.mkdtempSync(path.join(options.out, 'election_console_test-'));
const client = `http://127.0.0.1:${await freePort()}`;
const peer = `http://127.0.0.1:${await freePort()}`;
const etcd = start(etcdBinary, ['--name=keel', `--data-dir=${dir}/etcd`, `--listen-client-urls=${client}`,
  `--advertise-client-urls=${client}`, `--listen-peer-urls=${peer}`,
  `--initial-advertise-peer-urls=${peer}`, `--initial-cluster=keel=${peer}`,
  '--initial-cluster-state=new', '--log-level=warn'], path.join(dir, 'etcd.log'));
const candidates = [];
const elect = async (name) => {
  const admin = await freePort();
  const log = path.join(options.out, `election_console_test-${name}.log`);
  const candidate = start(options.keel, ['ctl', '--endpoints', client, 'elect', 'console-test', name,
    '--ttl-ms', '2000', '--admin', `127.0.0.1:${admin}`], log);
  candidates.push(candidate);
  await waitFor(`${name}'s admin listener`, async () => (await get(admin, '/healthz')).status === 200);
  return { admin, process: candidate, log };
};

await scenario({ chromium, out: options.out, name: 'election', server: etcd, killedOk: true,
  log: path.join(dir, 'etcd.log'),
  cleanup: async () => {
    for (const c of candidates) await c.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  } }, async (state) => {
  await waitFor('etcd', async () => (await get(Number(new URL(client).port), '/health')).status === 200);
  const first = await elect('first');
  const { page, errors } = await livePage(chromium, `http://127.0.0.1:${first.admin}/`, state);
  await page.locator('td[data-leader="first"]').waitFor({ timeout: 10000 });
  assert.match(await page.locator('#election').innerText(), /this process\s+first\s+leader/);
  const firstToken = Number((await page.locator('#election tr', { hasText: 'fencing token' }).innerText()).match(/\d+/)[0]);

  const second = await elect('second');
  await page.goto(`http://127.0.0.1:${second.admin}/`);
  await page.locator('td[data-leader="first"]').waitFor({ timeout: 10000 });
  assert.match(await page.locator('#election').innerText(), /this process\s+second\s+candidate/);
  await page.screenshot({ path: path.join(options.out, 'election-candidate.png'), fullPage: true });

  first.process.child.kill('SIGKILL');
  await page.locator('td[data-leader="second"]').waitFor({ timeout: 15000 });
  assert.match(await page.locator('#election').innerText(), /this process\s+second\s+leader/);
  const secondToken = Number((await page.locator('#election tr', { hasText: 'fencing token' }).innerText()).match(/\d+/)[0]);
  assert.ok(secondToken > firstToken, `the new leader's token ${secondToken} > ${firstToken}`);
  await page.screenshot({ path: path.join(options.out, 'election-leader.png'), fullPage: true });
  assert.deepEqual(errors, [], 'no script errors');
});
