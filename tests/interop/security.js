#!/usr/bin/env node
'use strict';
// Security scenarios with the real npm `faye` client.
// usage:
//   node security.js URL --scenario push-only --secret S [--field password]
//     a browser client without the secret cannot publish; a backend client adding the
//     secret in ext can; a subscriber gets the message without the secret.
//   node security.js URL --scenario subscribe [--ext-handshake JSON] [--ext-subscribe JSON]
//       [--ok CH,CH] [--refused CH,CH]
//     a client whose extension adds `ext` to its handshake / subscribes: the --ok
//     subscriptions succeed, the --refused ones fail with a 403 error.
const faye = require('faye');

const args = process.argv.slice(2);
const url = args[0];
const opt = (name, dflt) => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] : dflt; };
const scenario = opt('--scenario', 'subscribe');
const list = (name) => (opt(name, '') || '').split(',').filter(Boolean);
function fail(msg) { console.error('FAIL: ' + msg); process.exit(1); }
setTimeout(() => fail('timed out after 30 s'), 30000).unref();

function client(extFor) {
  const c = new faye.Client(url, { timeout: 10, retry: 1 });
  c.disable('websocket');
  if (extFor) {
    c.addExtension({ outgoing: (m, cb) => { const e = extFor(m); if (e) m.ext = Object.assign({}, m.ext, e); cb(m); } });
  }
  return c;
}

const outcome = (p) => new Promise((resolve) => p.then(() => resolve({ ok: true }), (e) => resolve({ ok: false, error: e })));

async function pushOnly() {
  const secret = opt('--secret');
  const field = opt('--field', 'password');
  const seen = [];
  const sub = client();
  sub.addExtension({ incoming: (m, cb) => { if (m.channel === '/news') seen.push(m); cb(m); } });
  await sub.subscribe('/news', () => {});
  const browser = client();
  const denied = await outcome(browser.publish('/news', { from: 'browser' }));
  if (denied.ok) fail('a client without the secret could publish');
  if (!/Password required/.test(denied.error && denied.error.message)) fail('unexpected error: ' + JSON.stringify(denied.error));
  const backend = client((m) => (m.channel === '/news' ? { [field]: secret } : null));
  const accepted = await outcome(backend.publish('/news', { from: 'backend' }));
  if (!accepted.ok) fail('the backend could not publish: ' + JSON.stringify(accepted.error));
  const deadline = Date.now() + 10000;
  while (seen.length < 1 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  await new Promise((r) => setTimeout(r, 300));
  if (seen.length !== 1) fail('subscriber got ' + JSON.stringify(seen));
  if (seen[0].data.from !== 'backend') fail('wrong message delivered: ' + JSON.stringify(seen[0]));
  if (JSON.stringify(seen[0]).includes(secret)) fail('the secret reached a subscriber: ' + JSON.stringify(seen[0]));
  console.log('ok: push-only');
}

async function subscribe() {
  const onHandshake = opt('--ext-handshake') ? JSON.parse(opt('--ext-handshake')) : null;
  const onSubscribe = opt('--ext-subscribe') ? JSON.parse(opt('--ext-subscribe')) : null;
  const c = client((m) => (m.channel === '/meta/handshake' ? onHandshake : m.channel === '/meta/subscribe' ? onSubscribe : null));
  for (const ch of list('--ok')) {
    const r = await outcome(c.subscribe(ch, () => {}));
    if (!r.ok) fail(`subscribe ${ch} refused: ${JSON.stringify(r.error)}`);
  }
  for (const ch of list('--refused')) {
    const r = await outcome(c.subscribe(ch, () => {}));
    if (r.ok) fail(`subscribe ${ch} was allowed`);
    if (r.error.code !== 403) fail(`subscribe ${ch}: expected a 403 error, got ${JSON.stringify(r.error)}`);
  }
  console.log('ok: subscribe expectations');
}

(scenario === 'push-only' ? pushOnly() : subscribe())
  .then(() => process.exit(0))
  .catch((e) => fail(e && e.stack || String(e)));
