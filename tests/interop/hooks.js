#!/usr/bin/env node
'use strict';
// Hooks scenarios (docs/hooks.md) with the real npm `faye` client. Each prints one JSON
// line on stdout for the Rust test (tests/tests/hooks.rs) to check, and exits 0; it exits 1
// only when the client itself could not do its part.
// usage:
//   node hooks.js URL --transport websocket|long-polling --scenario service --calls JSON
//     publishes each {channel, data} of the JSON list in turn and reports, per call, the
//     publish outcome and the reply message carrying the publish's id (Faye's publish
//     callback does not expose reply data, so an incoming extension captures it):
//     {"calls":[{"channel","ok","error":{"code","message"}|null,"reply":{...}|null}]}
//   node hooks.js URL --transport T --scenario events --channel CH
//     A subscribes to CH, B publishes {n:1} to it, A receives it, A unsubscribes, both
//     disconnect: {"a": clientId, "b": clientId, "channel": CH}
//   node hooks.js URL --transport T --scenario roundtrips --channel CH --count N
//     B publishes N messages one at a time, each waiting until A receives it:
//     {"ms": [round trip of each, in ms]}
const faye = require('faye');

const args = process.argv.slice(2);
const url = args[0];
const opt = (name, dflt) => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] : dflt; };
const transport = opt('--transport', 'long-polling');
function fail(msg) { console.error('FAIL: ' + msg); process.exit(1); }
setTimeout(() => fail('timed out after 60 s'), 60000).unref();

// A client on the transport under test that records its clientId and every message it
// receives (replies included).
function client() {
  const c = new faye.Client(url, { timeout: 10, retry: 1 });
  if (transport === 'long-polling') c.disable('websocket');
  c.received = [];
  c.clientId = null;
  c.addExtension({
    incoming: (m, cb) => {
      if (m.channel === '/meta/handshake' && m.successful) c.clientId = m.clientId;
      c.received.push(m);
      cb(m);
    },
    outgoing: (m, cb) => {
      if (m.channel === c.tracking) c.lastId = m.id;
      cb(m);
    },
  });
  return c;
}

const connected = (c) => new Promise((resolve) => c.connect(resolve));
const outcome = (p) => new Promise((resolve) => p.then(() => resolve({ ok: true }), (e) => resolve({ ok: false, error: e })));
const until = async (what, cond, ms = 20000) => {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) fail('waited too long for ' + what);
    await new Promise((r) => setTimeout(r, 10));
  }
};

async function service() {
  const calls = JSON.parse(opt('--calls', '[]'));
  const c = client();
  await connected(c);
  const out = [];
  for (const call of calls) {
    c.tracking = call.channel;
    const r = await outcome(c.publish(call.channel, call.data));
    const id = c.lastId;
    const reply = c.received.find((m) => m.id === id && m.channel === call.channel) || null;
    const error = r.ok ? null : { code: r.error && r.error.code, message: r.error && r.error.message };
    out.push({ channel: call.channel, ok: r.ok, error, reply });
  }
  await c.disconnect();
  return { calls: out };
}

async function events() {
  const channel = opt('--channel');
  const a = client();
  const b = client();
  const got = [];
  const sub = a.subscribe(channel, (d) => got.push(d));
  await sub;
  await connected(b);
  await until('B\'s handshake', () => b.clientId);
  const p = await outcome(b.publish(channel, { n: 1 }));
  if (!p.ok) fail('publish failed: ' + JSON.stringify(p.error));
  await until('A receives the message', () => got.length === 1);
  await sub.cancel();
  // The unsubscribe is acknowledged before A disconnects: wait for its reply.
  await until('the unsubscribe reply', () => a.received.some((m) => m.channel === '/meta/unsubscribe' && m.successful));
  const ids = { a: a.clientId, b: b.clientId, channel };
  await a.disconnect();
  await b.disconnect();
  return ids;
}

async function roundtrips() {
  const channel = opt('--channel');
  const count = Number(opt('--count', '20'));
  const a = client();
  const b = client();
  const got = [];
  await a.subscribe(channel, (d) => got.push(d));
  await connected(b);
  const ms = [];
  for (let i = 0; i < count; i++) {
    const started = Date.now();
    const p = await outcome(b.publish(channel, { i }));
    if (!p.ok) fail('publish failed: ' + JSON.stringify(p.error));
    await until(`message ${i}`, () => got.length === i + 1);
    ms.push(Date.now() - started);
  }
  await a.disconnect();
  await b.disconnect();
  return { ms };
}

const scenarios = { service, events, roundtrips };
const run = scenarios[opt('--scenario')];
if (!run) fail('unknown --scenario; one of ' + Object.keys(scenarios).join(', '));
run()
  .then((r) => { console.log(JSON.stringify(r)); process.exit(0); })
  .catch((e) => fail(e && e.stack || String(e)));
