// faultline js driver: speaks faultline's driver protocol (docs/driver-protocol.md, version 2)
// on stdin/stdout for the LiveKit JavaScript SDK, livekit-client, which runs in a page of
// headless Chromium driven through playwright-core.
//
//   FAULTLINE_JS_MODULES=<prefix>/node_modules CHROMIUM_BIN=/usr/bin/chromium node driver.mjs
//
// The page (page.html + page.js + livekit-client's UMD bundle) is served by this process
// from 127.0.0.1 (a secure context). page.js owns the Room; this file launches the browser,
// relays commands to the page and writes the page's events and replies, in the page's order,
// as protocol lines. stderr is the log; the token is never written to it.
// Exit status: 0 after stdin ends, 3 when Chromium is missing, 1 on any other fatal error.
//
// FAULTLINE_JS_WEBRTC_DUMP=<path> also opens chrome://webrtc-internals (with
// ?keepRemovedConnections, so a full reconnect's closed peer connections stay in it) in a
// second page of the same browser before the room connects, and at shutdown saves that page's
// own "Download the webrtc-internals dump" (Chrome gzips it; it is written here as plain JSON)
// to <path>; in the path `{identity}` is replaced by the participant's identity (the token's
// `sub`) and `{pid}` by this driver's process id, for rooms with several js participants. The
// dump holds IP addresses and SDP, as a field dump does.

import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import zlib from 'node:zlib';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const PROTOCOL = 2;
const SDK_NAME = 'js';
const CONNECT_TIMEOUT_MS = 20_000;
const EXIT_AFTER_EOF_MS = 4_500;
const ORDER_GAP_MS = 2_000;

const here = path.dirname(fileURLToPath(import.meta.url));

// ---------------------------------------------------------------- logging and redaction

const secrets = new Set();

/** Removes every token this driver has seen, and anything token-shaped, from `text`. */
function redact(text) {
  let s = String(text);
  for (const secret of secrets) s = s.split(secret).join('<token>');
  s = s.replace(/access_token=[^&\s'"]+/g, 'access_token=<redacted>');
  s = s.replace(/eyJ[\w-]+\.[\w-]+\.[\w-]+/g, '<jwt>');
  return s;
}

function log(...parts) {
  const line = parts.map((p) => (p instanceof Error ? p.stack || p.message : String(p))).join(' ');
  process.stderr.write(`${new Date().toISOString()} js-driver: ${redact(line)}\n`);
}

function writeLine(obj) {
  process.stdout.write(`${redact(JSON.stringify(obj))}\n`);
}

// Playwright's debug output (DEBUG=pw:*) would include evaluate arguments, the token among them.
delete process.env.DEBUG;

// ---------------------------------------------------------------- locating what we run

function findExecutable(name) {
  if (name.includes('/')) {
    try {
      fs.accessSync(name, fs.constants.X_OK);
      return fs.statSync(name).isFile() ? path.resolve(name) : null;
    } catch {
      return null;
    }
  }
  for (const dir of (process.env.PATH || '').split(':')) {
    if (!dir) continue;
    const candidate = path.join(dir, name);
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      if (fs.statSync(candidate).isFile()) return candidate;
    } catch {
      // not here
    }
  }
  return null;
}

const chromiumName = process.env.CHROMIUM_BIN || 'chromium';
const chromiumPath = findExecutable(chromiumName);
if (!chromiumPath) {
  process.stderr.write(
    `js-driver: Chromium not found: CHROMIUM_BIN=${chromiumName} is not an executable ` +
      `(set CHROMIUM_BIN to a Chromium binary, or install Debian's: apt-get install chromium)\n`,
  );
  process.exit(3);
}

const modulesDir = path.resolve(process.env.FAULTLINE_JS_MODULES || path.join(here, 'node_modules'));
const requireFromModules = createRequire(path.join(modulesDir, '_faultline_resolver.cjs'));

function packageVersion(name) {
  return JSON.parse(fs.readFileSync(path.join(modulesDir, name, 'package.json'), 'utf8')).version;
}

// A developer's own livekit-client build (the harness resolves and checks the path), else the
// pinned package's bundle.
const localBundle = process.env.FAULTLINE_JS_BUNDLE || '';
const bundleFile = localBundle ||
  path.join(modulesDir, 'livekit-client', 'dist', 'livekit-client.umd.js');

/** Which build ran, for the hello: the local bundle's path and the start of its SHA-256. */
function bundleIdentity() {
  if (!localBundle) return 'pinned npm package';
  const sha = crypto.createHash('sha256').update(fs.readFileSync(bundleFile)).digest('hex');
  return `local bundle ${bundleFile} sha256:${sha.slice(0, 12)}`;
}

let playwright;
let files;
try {
  playwright = requireFromModules('playwright-core');
  files = {
    '/': { file: path.join(here, 'page.html'), type: 'text/html; charset=utf-8' },
    '/page.js': { file: path.join(here, 'page.js'), type: 'text/javascript; charset=utf-8' },
    '/livekit-client.umd.js': { file: bundleFile, type: 'text/javascript; charset=utf-8' },
  };
  for (const { file } of Object.values(files)) fs.accessSync(file, fs.constants.R_OK);
} catch (e) {
  log(`cannot load the npm packages from FAULTLINE_JS_MODULES=${modulesDir}:`, e);
  process.exit(1);
}

/**
 * Chromium dies with this driver two ways. playwright talks to it over a pipe
 * (--remote-debugging-pipe) and Chromium quits when that pipe closes; and, where util-linux's
 * setpriv exists, Chromium is started through it with PR_SET_PDEATHSIG=SIGKILL, so even a
 * hung browser is killed the moment this process dies (its zygote and renderers follow their
 * browser within about a second). playwright starts Chromium in a process group of its own,
 * so a kill of the driver's process group alone would not reach it. Returns the executable
 * to give playwright: a small wrapper script, named after its content, kept in the temporary
 * directory and shared by every driver that runs the same Chromium.
 */
function chromiumExecutable() {
  const setpriv = findExecutable('setpriv');
  if (!setpriv) {
    log('setpriv not found: Chromium relies on its DevTools pipe closing to exit with the driver');
    return chromiumPath;
  }
  const quote = (s) => `'${s.replace(/'/g, `'\\''`)}'`;
  const script = '#!/bin/sh\n# faultline js driver: Chromium, SIGKILLed when its parent dies\n' +
    `exec ${quote(setpriv)} --pdeathsig KILL -- ${quote(chromiumPath)} "$@"\n`;
  const digest = crypto.createHash('sha256').update(script).digest('hex').slice(0, 16);
  const wrapper = path.join(os.tmpdir(), `faultline-js-chromium-${process.getuid()}-${digest}`);
  try {
    if (fs.readFileSync(wrapper, 'utf8') === script) return wrapper;
  } catch {
    // not there yet
  }
  const temp = `${wrapper}.${process.pid}.tmp`;
  fs.writeFileSync(temp, script, { mode: 0o700 });
  fs.renameSync(temp, wrapper);
  return wrapper;
}

// ---------------------------------------------------------------- the page's server

function serve() {
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://127.0.0.1');
    const entry = files[url.pathname];
    if (url.pathname === '/favicon.ico') {
      res.writeHead(204);
      res.end();
      return;
    }
    if (!entry || req.method !== 'GET') {
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end('not found');
      return;
    }
    fs.readFile(entry.file, (err, body) => {
      if (err) {
        res.writeHead(500, { 'content-type': 'text/plain' });
        res.end(String(err));
        return;
      }
      res.writeHead(200, { 'content-type': entry.type, 'cache-control': 'no-store' });
      res.end(body);
    });
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve(server));
  });
}

// ---------------------------------------------------------------- ordered output

// The page numbers every event and every command result; write them strictly in that order.
let nextSeq = 1;
const held = new Map();
let gapTimer = null;

function deliver(seq, line) {
  if (seq < nextSeq) {
    writeLine(line); // only after a skipped gap: late, but never lost
    return;
  }
  held.set(seq, line);
  flush();
}

function flush() {
  while (held.has(nextSeq)) {
    const line = held.get(nextSeq);
    if (line) writeLine(line);
    held.delete(nextSeq);
    nextSeq += 1;
  }
  if (gapTimer) {
    clearTimeout(gapTimer);
    gapTimer = null;
  }
  if (held.size > 0) {
    // Something numbered nextSeq never arrived; do not hold the rest back forever.
    gapTimer = setTimeout(() => {
      gapTimer = null;
      const first = Math.min(...held.keys());
      log(`page lines ${nextSeq}..${first - 1} did not arrive within ${ORDER_GAP_MS} ms; going on`);
      nextSeq = first;
      flush();
    }, ORDER_GAP_MS);
  }
}

// ---------------------------------------------------------------- commands

let page = null;
let internals = null; // chrome://webrtc-internals, when FAULTLINE_JS_WEBRTC_DUMP asks for it
let browser = null;
let server = null;
let shuttingDown = false;
let roomStarted = false; // a connect was sent to the page: on exit, disconnect first
const seenIds = new Set();

function reply(id, fields) {
  writeLine({ type: 'reply', id, ...fields });
}

/** Runs one page function and writes its (numbered) reply in order. */
async function callPage(id, what, fn, args, after = null) {
  let result;
  try {
    result = await page.evaluate(fn, args);
  } catch (e) {
    reply(id, { ok: false, error: `${what}: the page failed: ${redact(e.message || e)}` });
    return;
  }
  if (after) await after();
  deliver(result.seq, { type: 'reply', id, ...result.reply });
}

async function handle(cmd) {
  const { id, op } = cmd;
  switch (op) {
    case 'connect': {
      if (typeof cmd.url !== 'string' || typeof cmd.token !== 'string') {
        reply(id, { ok: false, error: 'connect: `url` and `token` must be strings' });
        return;
      }
      if (cmd.token) secrets.add(cmd.token);
      identity = tokenIdentity(cmd.token) ?? identity;
      log(`connect ${cmd.url} (options ${JSON.stringify(cmd.options ?? {})})`);
      roomStarted = true;
      await callPage(id, 'connect', ([url, token, options, timeout]) =>
        window.faultline.connect(url, token, options, timeout),
      [cmd.url, cmd.token, cmd.options ?? {}, CONNECT_TIMEOUT_MS]);
      return;
    }
    case 'simulate':
      log(`simulate ${cmd.scenario}${cmd.secs !== undefined ? ` (${cmd.secs} s)` : ''}`);
      await callPage(id, 'simulate', ([scenario, secs]) => window.faultline.simulate(scenario, secs),
        [String(cmd.scenario), typeof cmd.secs === 'number' ? cmd.secs : null]);
      return;
    case 'publish':
      await callPage(id, 'publish', ([payload, topic, reliable, destinations]) =>
        window.faultline.publish(payload, topic, reliable, destinations),
      [cmd.payload ?? '', cmd.topic ?? null, cmd.reliable !== false, cmd.destinations ?? []]);
      return;
    case 'state':
      await callPage(id, 'state', () => window.faultline.state(), null);
      return;
    case 'publish_track':
      log(`publish_track ${cmd.source}`);
      await callPage(id, 'publish_track', (source) => window.faultline.publishTrack(source),
        String(cmd.source));
      return;
    case 'unpublish_track':
      log(`unpublish_track ${cmd.source}`);
      await callPage(id, 'unpublish_track', (source) => window.faultline.unpublishTrack(source),
        String(cmd.source));
      return;
    case 'mute_track':
      if (typeof cmd.muted !== 'boolean') {
        reply(id, { ok: false, error: 'mute_track: `muted` must be a boolean' });
        return;
      }
      log(`mute_track ${cmd.source} ${cmd.muted}`);
      await callPage(id, 'mute_track', ([source, muted]) => window.faultline.muteTrack(source, muted),
        [String(cmd.source), cmd.muted]);
      return;
    case 'close':
      log('close');
      // The webrtc-internals dump is taken once the room is closed, before the reply: the
      // harness kills the driver 5 s after it ends stdin, too soon for a large dump.
      await callPage(id, 'close', () => window.faultline.close(), null,
        internals ? () => saveWebrtcDump(10_000) : null);
      return;
    default:
      reply(id, { ok: false, unsupported: true, error: `unknown op ${JSON.stringify(op)}` });
  }
}

function onLine(text) {
  if (!text.trim()) return;
  let cmd;
  try {
    cmd = JSON.parse(text);
  } catch (e) {
    log(`ignoring a line that is not JSON (${e.message})`);
    return;
  }
  if (!cmd || typeof cmd !== 'object' || !Number.isInteger(cmd.id) || cmd.id <= 0) {
    log('ignoring a command without a positive integer id');
    return;
  }
  if (seenIds.has(cmd.id)) {
    log(`ignoring a second command with id ${cmd.id}`);
    return;
  }
  seenIds.add(cmd.id);
  handle(cmd).catch((e) => {
    log(`command ${cmd.id} (${cmd.op}) failed:`, e);
    reply(cmd.id, { ok: false, error: `${cmd.op}: ${redact(e.message || e)}` });
  });
}

// ---------------------------------------------------------------- life and death

function withTimeout(promise, ms) {
  return Promise.race([promise, new Promise((resolve) => setTimeout(resolve, ms))]);
}

async function shutdown(status, why) {
  if (shuttingDown) return;
  shuttingDown = true;
  log(`shutting down: ${why}`);
  // Whatever happens below, be gone in time.
  setTimeout(() => process.exit(status), EXIT_AFTER_EOF_MS).unref();
  try {
    if (page && roomStarted) {
      const result = await withTimeout(
        page.evaluate(() => window.faultline.close()).catch(() => null),
        2_500,
      );
      // Nobody waits for this reply: only its number is consumed, so that the page's last
      // events (disconnected) are written; anything still missing after a moment is skipped.
      if (result && result.seq) deliver(result.seq, null);
      await new Promise((resolve) => setTimeout(resolve, 100));
      for (const [, line] of [...held.entries()].sort((a, b) => a[0] - b[0])) {
        if (line) writeLine(line);
      }
      held.clear();
    }
    if (internals && !webrtcDumpSaved) await saveWebrtcDump(2_000);
    if (browser) await withTimeout(browser.close().catch(() => {}), 1_500);
  } catch (e) {
    log('error while shutting down:', e);
  }
  if (server) server.close();
  process.exit(status);
}

const webrtcDumpTemplate = process.env.FAULTLINE_JS_WEBRTC_DUMP || null;
let identity = 'unknown';

/** The identity (`sub`) an access token names, or null; the token itself is never logged. */
function tokenIdentity(token) {
  try {
    const claims = JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString('utf8'));
    if (typeof claims.sub === 'string' && /^[\w.@-]+$/.test(claims.sub)) return claims.sub;
  } catch {
    // not a JWT: keep the default
  }
  return null;
}

/** Where the dump goes: the template with `{identity}` and `{pid}` filled in. */
function webrtcDumpPath() {
  return path.resolve(webrtcDumpTemplate.split('{identity}').join(identity)
    .split('{pid}').join(String(process.pid)));
}

/** Opens chrome://webrtc-internals in its own page of `context`; on failure, logs why. */
async function openWebrtcInternals(context) {
  try {
    const p = await context.newPage();
    await p.goto('chrome://webrtc-internals/?keepRemovedConnections', {
      waitUntil: 'load',
      timeout: 10_000,
    });
    await p.waitForSelector('#dump-click-target', { state: 'attached', timeout: 5_000 });
    log('chrome://webrtc-internals open for the dump');
    return p;
  } catch (e) {
    log(`cannot open chrome://webrtc-internals (no dump will be written): ${e.message || e}`);
    return null;
  }
}

let webrtcDumpSaved = false;

/**
 * Saves the webrtc-internals page's own dump (its download) to webrtcDumpPath, unzipped,
 * waiting at most `ms` for the page to produce it.
 */
async function saveWebrtcDump(ms) {
  if (webrtcDumpSaved) return;
  webrtcDumpSaved = true;
  const started = Date.now();
  try {
    // The button sits in a collapsed <details>; open it so that the click lands.
    await internals.evaluate(() => {
      const details = document.querySelector('#dump-click-target')?.closest('details');
      if (details) details.open = true;
    });
    const [download] = await Promise.all([
      internals.waitForEvent('download', { timeout: ms }),
      internals.click('#dump-click-target', { timeout: ms }),
    ]);
    const file = await download.path();
    let body = fs.readFileSync(file);
    if (body[0] === 0x1f && body[1] === 0x8b) body = zlib.gunzipSync(body);
    const target = webrtcDumpPath();
    const temp = `${target}.${process.pid}.tmp`;
    fs.writeFileSync(temp, body);
    fs.renameSync(temp, target);
    log(`webrtc-internals dump (${download.suggestedFilename()}, ${body.length} bytes) ` +
      `written to ${target} in ${Date.now() - started} ms`);
  } catch (e) {
    log(`could not save the webrtc-internals dump after ${Date.now() - started} ms: ` +
      `${e.message || e}`);
  }
}

function launchChromium(executablePath) {
  return playwright.chromium.launch({
    executablePath,
    headless: true,
    timeout: 30_000,
    // This driver handles the signals itself (disconnect, then close the browser);
    // playwright still kills Chromium if the process exits without closing it.
    handleSIGINT: false,
    handleSIGTERM: false,
    handleSIGHUP: false,
    args: [
      '--disable-gpu',
      // Chromium hides loopback addresses from WebRTC unless told otherwise; the test
      // servers all live on 127.0.0.1.
      '--allow-loopback-in-peer-connection',
      // A granted getUserMedia lets Chromium gather host candidates on a host without a
      // default route; the fake UI grants it, the fake device satisfies it. The fake
      // devices are also what publish_track captures: a synthetic camera (30 fps, as the
      // protocol asks; Chromium's default is 20) and a microphone beeping every 500 ms.
      '--use-fake-ui-for-media-stream',
      '--use-fake-device-for-media-stream=fps=30',
      '--autoplay-policy=no-user-gesture-required',
    ],
  });
}

async function main() {
  const started = Date.now();
  // Read stdin from the start; commands wait until the page is ready.
  const queue = [];
  let ready = false;
  const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
  rl.on('line', (text) => (ready ? onLine(text) : queue.push(text)));
  rl.on('close', () => shutdown(0, 'stdin closed'));
  for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP']) {
    process.on(signal, () => shutdown(0, signal));
  }

  server = await serve();
  const origin = `http://127.0.0.1:${server.address().port}`;

  browser = await launchChromium(chromiumExecutable());
  browser.on('disconnected', () => {
    if (!shuttingDown) {
      log('Chromium went away');
      shutdown(1, 'Chromium exited');
    }
  });
  const context = await browser.newContext({
    permissions: ['camera', 'microphone'],
    acceptDownloads: webrtcDumpTemplate !== null,
  });
  if (webrtcDumpTemplate) internals = await openWebrtcInternals(context);
  page = await context.newPage();
  page.on('console', (msg) => log(`[page ${msg.type()}] ${msg.text()}`));
  page.on('pageerror', (err) => log('[page error]', err));
  page.on('crash', () => {
    log('the page crashed');
    shutdown(1, 'page crashed');
  });
  await page.exposeFunction('__faultlineEvent', (line) => {
    deliver(line.seq, { type: 'event', ...line.event });
  });
  await page.goto(`${origin}/`, { waitUntil: 'load', timeout: 30_000 });
  const info = await page.evaluate(() => window.faultline.init());
  log(`page ready in ${Date.now() - started} ms: livekit-client ${info.version}, ` +
    `getUserMedia ${info.media}, ${info.userAgent}`);

  writeLine({
    type: 'hello',
    protocol: PROTOCOL,
    sdk: SDK_NAME,
    sdk_version: info.version,
    detail: `livekit-client ${info.version} (protocol ${info.protocol}, ${bundleIdentity()}) ` +
      `in Chromium ${browser.version()} via playwright-core ${packageVersion('playwright-core')}`,
  });
  ready = true;
  for (const text of queue.splice(0)) onLine(text);
}

main().catch((e) => {
  log('fatal:', e);
  shutdown(1, 'fatal error');
});
