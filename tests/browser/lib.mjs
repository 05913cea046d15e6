// Shared by the console's browser tests: upstreams whose behaviour can be switched, a process
// started and stopped, free ports, waiting, and Chromium through playwright-core.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';

export const SKIP = 77;  // ctest's SKIP_RETURN_CODE for these tests

export function args() {
  const out = {};
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i += 2) out[argv[i].replace(/^--/, '')] = argv[i + 1];
  if (!out.keel || !out.out) {
    console.error('usage: node TEST.mjs --keel PATH/TO/keel --out DIR');
    process.exit(2);
  }
  fs.mkdirSync(out.out, { recursive: true });
  return out;
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export async function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

// An HTTP server on a free loopback port answering 200 with its name, or 503 once failing.
export async function upstream(name) {
  const state = { failing: false, name };
  const server = http.createServer((request, response) => {
    request.resume();
    request.on('end', () => {
      const status = state.failing ? 503 : 200;
      response.writeHead(status, { 'content-type': 'text/plain' });
      response.end(state.failing ? 'failing\n' : `${name}\n`);
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  state.address = `127.0.0.1:${server.address().port}`;
  state.close = () => new Promise((resolve) => { server.closeAllConnections(); server.close(resolve); });
  return state;
}

// GET http://127.0.0.1:port/path; resolves to {status, body}, or {status: 0} on a failure.
export function get(port, urlPath, { method = 'GET', body, headers = {} } = {}) {
  return new Promise((resolve) => {
    const request = http.request({ host: '127.0.0.1', port, path: urlPath, method, headers,
      agent: false, timeout: 5000 }, (response) => {
      let text = '';
      response.setEncoding('utf8');
      response.on('data', (chunk) => { text += chunk; });
      response.on('end', () => resolve({ status: response.statusCode, body: text }));
    });
    request.on('error', () => resolve({ status: 0, body: '' }));
    request.on('timeout', () => request.destroy());
    request.end(body);
  });
}

// Starts `command` with its output in `log`; stop() sends SIGTERM and waits (SIGKILL after 10 s).
export function start(command, argv, log) {
  const out = fs.openSync(log, 'w');
  const child = spawn(command, argv, { stdio: ['ignore', out, out] });
  let exited = null;
  const done = new Promise((resolve) => child.on('exit', (code, signal) => {
    exited = { code, signal };
    resolve(exited);
  }));
  return {
    child,
    exited: () => exited,
    async stop() {
      if (exited) return exited;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 10000);
      const result = await done;
      clearTimeout(timer);
      return result;
    },
  };
}

export async function waitFor(what, check, timeoutMs = 15000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(100);
  }
}

// Chromium headless through playwright-core, or null (with the reason printed) when the driver
// is missing or the browser cannot start: the caller then skips.
export async function browser() {
  const here = path.dirname(new URL(import.meta.url).pathname);
  let playwright;
  try {
    playwright = await import(path.join(here, 'node_modules/playwright-core/index.mjs'));
  } catch (error) {
    console.log(`SKIP: playwright-core is not installed (scripts/install-deps test): ${error.message}`);
    return null;
  }
  const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
  try {
    return await playwright.chromium.launch({
      executablePath,
      headless: true,
      // No network beyond loopback on a test machine: Chromium's own background connections
      // are turned off so that they neither fail nor wait.
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync',
        '--disable-dev-shm-usage'],
    });
  } catch (error) {
    console.log(`SKIP: Chromium (${executablePath}) cannot start: ${error.message.split('\n')[0]}`);
    return null;
  }
}

// Runs `body(state)` (which sets state.page once it has one), then `cleanup()`, closes the
// browser and stops `server`, and exits: 0 when the body passed and the server exited 0. On a
// failure, a screenshot of the page (NAME-failure.png in `out`) and where the server's log is.
// `killedOk`: a server that ends on SIGTERM without an exit code of its own (etcd) passes too.
export async function scenario({ chromium, out, name, server, log, killedOk = false,
  cleanup = async () => {} }, body) {
  let failed = false;
  const state = {};
  try {
    await body(state);
    console.log(`PASS: screenshots in ${out}`);
  } catch (error) {
    failed = true;
    console.error(`FAIL: ${error.stack || error.message}`);
    if (state.page) {
      await state.page.screenshot({ path: path.join(out, `${name}-failure.png`), fullPage: true })
        .catch(() => {});
    }
    console.error(`the server's log: ${log}`);
  } finally {
    await cleanup();
    await chromium.close();
    const exit = await server.stop();
    if (exit.code !== 0 && !(killedOk && exit.signal === 'SIGTERM')) {
      failed = true;
      console.error(`the server exited with ${JSON.stringify(exit)}`);
    }
  }
  process.exit(failed ? 1 : 0);
}

// A laptop-sized page on `url` once its console is live (its feed connected), with the script
// errors it raises collected in `errors`; kept in state.page for the failure screenshot.
export async function livePage(chromium, url, state) {
  const context = await chromium.newContext({ viewport: { width: 1366, height: 768 } });
  const page = state.page = await context.newPage();
  const errors = [];
  page.on('pageerror', (error) => errors.push(error.message));
  await page.goto(url);
  await page.locator('#live.on').waitFor({ timeout: 10000 });
  return { page, errors };
}
