'use strict';
// Shared plumbing for the interop scripts: command line, scenario runner with
// hard time-outs, an awaitable inbox, raw HTTP POSTs and the "fence" used to
// prove the absence of a message within a bounded time.
//
// CommonJS so that both faye.js (CommonJS) and cometd.mjs (ES module) can load it.

const http = require('http');
const https = require('https');
const crypto = require('crypto');
const util = require('util');

const TRANSPORTS = ['websocket', 'long-polling'];

// Time a subscriber keeps listening after the fence message arrived, to prove
// that nothing more (a duplicate, a message after unsubscribe) is on its way.
const ABSENCE_WINDOW_MS = 500;

// ---------------------------------------------------------------------------
// small utilities

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function log(...args) {
  process.stderr.write(util.format(...args) + '\n');
}

function deepEqual(a, b) {
  return util.isDeepStrictEqual(a, b);
}

function short(value, max = 200) {
  let s;
  try { s = JSON.stringify(value); } catch (e) { s = String(value); }
  if (s === undefined) s = String(value);
  return s.length > max ? s.slice(0, max) + `...(${s.length} chars)` : s;
}

class AssertionError extends Error {}

function check(cond, message) {
  if (!cond) throw new AssertionError(message);
}

// A list that can be awaited: waitFor(pred) resolves once pred(items) is true.
class Inbox {
  constructor(label) {
    this.label = label || 'inbox';
    this.items = [];
    this._waiters = [];
  }

  push(item) {
    this.items.push(item);
    const pending = this._waiters;
    this._waiters = [];
    for (const w of pending) {
      let done = false;
      try { done = w.pred(this.items); } catch (e) { w.reject(e); continue; }
      if (done) w.resolve(this.items); else this._waiters.push(w);
    }
  }

  waitFor(pred) {
    return new Promise((resolve, reject) => {
      let done = false;
      try { done = pred(this.items); } catch (e) { return reject(e); }
      if (done) return resolve(this.items);
      this._waiters.push({ pred, resolve, reject });
    });
  }

  waitCount(n) {
    return this.waitFor((items) => items.length >= n);
  }

  filter(pred) {
    return this.items.filter(pred);
  }
}

// ---------------------------------------------------------------------------
// raw HTTP

function rawPost(url, body, contentType, timeoutMs = 5000) {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const mod = u.protocol === 'https:' ? https : http;
    const buf = Buffer.from(body, 'utf8');
    const req = mod.request(u, {
      method: 'POST',
      agent: false,
      headers: { 'Content-Type': contentType, 'Content-Length': buf.length },
    }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let json;
        try { json = JSON.parse(text); } catch (e) { json = undefined; }
        resolve({ status: res.statusCode, headers: res.headers, text, json });
      });
      res.on('error', reject);
    });
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`POST ${url} timed out after ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end(buf);
  });
}

// ---------------------------------------------------------------------------
// command line

function usage(tool, scenarioNames) {
  return [
    `usage: node ${tool} URL --transport websocket|long-polling [options]`,
    '',
    'options:',
    `  --scenario NAME        run only NAME (repeatable, or comma-separated); one of: ${scenarioNames.join(', ')}`,
    '  --timeout SECONDS      client-side connection timeout before the server advises one (default 10, env INTEROP_CLIENT_TIMEOUT)',
    '  --scenario-timeout MS  hard time-out per scenario (default 15000, env INTEROP_SCENARIO_TIMEOUT_MS)',
    '  --verbose              trace scenario steps on stderr',
    '  --list                 print the scenario names and exit',
    '',
    'Prints one JSON line per scenario on stdout; exits 1 if any scenario failed, 2 on a usage error.',
  ].join('\n');
}

function parseArgs(argv, tool, scenarioNames) {
  const tokens = [];
  for (const a of argv) {
    const m = /^(--[a-z-]+)=(.*)$/s.exec(a);
    if (m) tokens.push(m[1], m[2]); else tokens.push(a);
  }
  const args = {
    url: null,
    transport: null,
    scenarios: [],
    clientTimeout: Number(process.env.INTEROP_CLIENT_TIMEOUT || 10),
    scenarioTimeoutMs: Number(process.env.INTEROP_SCENARIO_TIMEOUT_MS || 15000),
    verbose: false,
    list: false,
  };
  const die = (msg) => {
    process.stderr.write(`${tool}: ${msg}\n\n${usage(tool, scenarioNames)}\n`);
    process.exit(2);
  };
  for (let i = 0; i < tokens.length; i++) {
    const a = tokens[i];
    const value = () => {
      if (i + 1 >= tokens.length) die(`missing value for ${a}`);
      return tokens[++i];
    };
    switch (a) {
      case '--transport': args.transport = value(); break;
      case '--scenario': args.scenarios.push(...value().split(',').map((s) => s.trim()).filter(Boolean)); break;
      case '--timeout': args.clientTimeout = Number(value()); break;
      case '--scenario-timeout': args.scenarioTimeoutMs = Number(value()); break;
      case '--verbose': args.verbose = true; break;
      case '--list': args.list = true; break;
      case '-h': case '--help':
        process.stdout.write(usage(tool, scenarioNames) + '\n');
        process.exit(0);
        break;
      default:
        if (a.startsWith('-')) die(`unknown option ${a}`);
        if (args.url) die(`unexpected argument ${a}`);
        args.url = a;
    }
  }
  if (args.list) {
    process.stdout.write(scenarioNames.join('\n') + '\n');
    process.exit(0);
  }
  if (!args.url) die('missing URL');
  try {
    const u = new URL(args.url);
    if (!/^https?:$/.test(u.protocol)) die(`URL must be http(s): ${args.url}`);
  } catch (e) {
    die(`invalid URL ${args.url}`);
  }
  if (!TRANSPORTS.includes(args.transport)) die(`--transport must be one of ${TRANSPORTS.join(', ')}`);
  for (const s of args.scenarios) if (!scenarioNames.includes(s)) die(`unknown scenario ${s}`);
  if (args.scenarios.length === 0) args.scenarios = scenarioNames.slice();
  if (!(args.clientTimeout > 0)) die('--timeout must be a positive number of seconds');
  if (!(args.scenarioTimeoutMs > 0)) die('--scenario-timeout must be a positive number of milliseconds');
  return args;
}

// ---------------------------------------------------------------------------
// scenario context and runner

class Context {
  constructor(name, args) {
    this.name = name;
    this.args = args;
    this.url = args.url;
    this.transport = args.transport;
    this.runId = crypto.randomBytes(4).toString('hex');
    this.currentStep = 'start';
    this.steps = [];
    this.errors = [];
    this.clients = [];
    this._cleanups = [];
    this._fenceSeq = 0;
    this.aborted = false;
    this.started = Date.now();
  }

  // Unique channel: "/chat/room1" -> "/chat_<runId>/room1".
  chan(path) {
    const parts = path.split('/');
    parts[1] = `${parts[1]}_${this.runId}`;
    return parts.join('/');
  }

  trace(msg) {
    if (this.args.verbose) log(`[${this.name} +${Date.now() - this.started}ms] ${msg}`);
  }

  // Awaits `promise`, naming it so that a scenario time-out says what was pending.
  // A scenario abandoned after its time-out stops at its next step.
  async step(what, promise) {
    if (this.aborted) throw new AssertionError(`scenario aborted before: ${what}`);
    this.currentStep = what;
    this.steps.push(what);
    this.trace(`... ${what}`);
    const value = await promise;
    if (this.aborted) throw new AssertionError(`scenario aborted during: ${what}`);
    this.trace(`ok  ${what}`);
    return value;
  }

  addClient(client) {
    this.clients.push(client);
    return client;
  }

  defer(fn) {
    this._cleanups.push(fn);
  }

  async cleanup() {
    const fns = this._cleanups.reverse();
    this._cleanups = [];
    await Promise.all(fns.map(async (fn) => {
      try {
        await Promise.race([Promise.resolve().then(fn), sleep(3000)]);
      } catch (e) {
        this.trace(`cleanup error: ${e && e.message}`);
      }
    }));
    await Promise.all(this.clients.map(async (c) => {
      try {
        await Promise.race([c.disconnect(), sleep(3000)]);
      } catch (e) {
        this.trace(`disconnect error (${c.label}): ${e && e.message}`);
      }
    }));
  }

  // Every client that sent a /meta/connect must have used the transport under test.
  // What each client saw go wrong (failed replies, transport failures), for failure reports.
  diagnostics() {
    const out = {};
    for (const c of this.clients) {
      const problems = c.problems ? c.problems() : [];
      if (problems.length) out[c.label] = problems.slice(-5);
    }
    return out;
  }

  // A client with `allowTransportDetour` set (the faye client right after a
  // re-handshake) may send some connects over another transport, but its first
  // and last ones must use the transport under test.
  checkTransports() {
    const seen = {};
    for (const c of this.clients) {
      const seq = c.wire.connectSeq;
      if (seq.length === 0) continue;
      const types = [...new Set(seq)];
      seen[c.label] = c.allowTransportDetour && types.length > 1 ? seq : types;
      if (c.allowTransportDetour) {
        check(seq[0] === this.transport && seq[seq.length - 1] === this.transport,
          `${c.label} sent /meta/connect over ${seq.join(',')}: first and last must be ${this.transport}`);
      } else if (this.transport === 'websocket' && c.kind === 'faye') {
        // Faye's client opens the socket while it handshakes over HTTP and switches once
        // the socket is open (transport.js `get` waits for `isUsable`); a connect sent
        // before that, on a loaded machine, goes over long-polling. From the first
        // connect over the socket on, every one must use it.
        const first = seq.indexOf('websocket');
        check(first >= 0 && seq.slice(0, first).every((t) => t === 'long-polling')
            && seq.slice(first).every((t) => t === 'websocket'),
          `${c.label} sent /meta/connect over ${seq.join(',')}: expected websocket after at most a few long-polling ones while the socket opened`);
      } else {
        check(types.every((t) => t === this.transport),
          `${c.label} sent /meta/connect with connectionType ${types.join(',')}, expected ${this.transport}`);
      }
    }
    return seen;
  }
}

// Proves that nothing else is still on its way to `subscribers`: each subscribes
// to a fresh fence channel, `publisher` publishes one fence message, every
// subscriber waits until it has it, then all keep listening for ABSENCE_WINDOW_MS.
async function fence(ctx, subscribers, publisher) {
  const channel = `${ctx.chan('/fence')}/f${++ctx._fenceSeq}`;
  const token = crypto.randomBytes(6).toString('hex');
  const inboxes = subscribers.map((s) => [s, new Inbox(`${s.label} fence`)]);
  await Promise.all(inboxes.map(([s, ib]) =>
    ctx.step(`${s.label} subscribes ${channel}`, s.subscribe(channel, (data) => ib.push(data)))));
  await ctx.step(`${publisher.label} publishes fence`, publisher.publish(channel, { fence: token }));
  await Promise.all(inboxes.map(([s, ib]) =>
    ctx.step(`${s.label} receives fence`, ib.waitFor((items) => items.some((d) => d && d.fence === token)))));
  ctx.currentStep = `absence window ${ABSENCE_WINDOW_MS} ms`;
  await sleep(ABSENCE_WINDOW_MS);
}

let currentCtx = null;
let handlersInstalled = false;

function installProcessHandlers() {
  if (handlersInstalled) return;
  handlersInstalled = true;
  const record = (kind) => (err) => {
    const msg = `${kind}: ${err && err.stack ? err.stack : err}`;
    if (currentCtx) currentCtx.errors.push(msg.split('\n')[0]);
    log(msg);
  };
  process.on('unhandledRejection', record('unhandled rejection'));
  process.on('uncaughtException', record('uncaught exception'));
}

async function runOne(name, fn, args, meta) {
  const ctx = new Context(name, args);
  currentCtx = ctx;
  const started = Date.now();
  let timer;
  let ok = false;
  let detail;
  try {
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new AssertionError(
        `scenario timed out after ${args.scenarioTimeoutMs} ms while waiting for: ${ctx.currentStep}`)),
      args.scenarioTimeoutMs);
    });
    detail = await Promise.race([Promise.resolve().then(() => fn(ctx)), timeout]);
    const transports = ctx.checkTransports();
    if (ctx.errors.length) throw new AssertionError(`uncaught errors: ${ctx.errors.join(' | ')}`);
    ok = true;
    detail = Object.assign({ connectionTypes: transports }, detail || {});
  } catch (e) {
    ok = false;
    detail = { error: e && e.message ? e.message : String(e), step: ctx.currentStep };
    const diagnostics = ctx.diagnostics();
    if (Object.keys(diagnostics).length) detail.clients = diagnostics;
    if (args.verbose && !(e instanceof AssertionError) && e && e.stack) log(`[${name}] ${e.stack}`);
  } finally {
    clearTimeout(timer);
    ctx.aborted = true;
    await ctx.cleanup();
    currentCtx = null;
  }
  return Object.assign({ scenario: name, ok }, meta, { ms: Date.now() - started, detail });
}

// Runs the selected scenarios one after another, prints one JSON line each,
// then exits with 0 (all passed), 1 (any failed).
async function main({ tool, label, argv, scenarios, meta, onExit }) {
  const names = Object.keys(scenarios);
  const args = parseArgs(argv, tool, names);
  installProcessHandlers();
  // The whole run must end by itself even if a cleanup wedges.
  const budget = args.scenarios.length * (args.scenarioTimeoutMs + 10000) + 10000;
  setTimeout(() => {
    log(`${tool}: whole run exceeded ${budget} ms, aborting`);
    process.exit(3);
  }, budget).unref();

  let passed = 0;
  let failed = 0;
  for (const name of args.scenarios) {
    const result = await runOne(name, scenarios[name], args, Object.assign({ client: label, transport: args.transport }, meta));
    process.stdout.write(JSON.stringify(result) + '\n');
    if (result.ok) passed++; else failed++;
  }
  if (onExit) {
    try { onExit(); } catch (e) { log(e); }
  }
  log(`${label}-${args.transport}: ${passed} passed, ${failed} failed`);
  // Clients were disconnected; exit explicitly so that a stray retry timer or
  // keep-alive socket of a client library cannot keep the process alive.
  process.exit(failed ? 1 : 0);
}

module.exports = {
  ABSENCE_WINDOW_MS,
  AssertionError,
  Context,
  Inbox,
  check,
  deepEqual,
  fence,
  log,
  main,
  rawPost,
  short,
  sleep,
};
