#!/usr/bin/env node
'use strict';
// Cross-node delivery with the real npm `faye` client: a subscriber on one node, a publisher
// on another. The subscriber holds an exact and a wildcard subscription that both match, so
// the server must deliver each message once (the client then calls both callbacks once).
// usage: node cluster.js SUB_URL --transport websocket|long-polling --pub PUB_URL [--count N]
const faye = require('faye');

const args = process.argv.slice(2);
const opt = (name, dflt) => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] : dflt; };
const subUrl = args[0];
const transport = opt('--transport', 'websocket');
const pubUrl = opt('--pub', subUrl);
const count = parseInt(opt('--count', '50'), 10);

function client(url) {
  const c = new faye.Client(url, { timeout: 10, retry: 1 });
  if (transport === 'long-polling') c.disable('websocket');
  return c;
}

function fail(msg) { console.error('FAIL: ' + msg); process.exit(1); }
setTimeout(() => fail('timed out after 60 s'), 60000).unref();

(async () => {
  const base = '/cluster/' + Math.random().toString(36).slice(2);
  const channel = base + '/room';
  const exact = [];
  const wild = [];
  const sub = client(subUrl);
  const pub = client(pubUrl);
  await sub.subscribe(channel, (m) => exact.push(m.n));
  await sub.subscribe(base + '/*', (m) => wild.push(m.n));
  const transportUsed = await new Promise((resolve) => {
    // Let the connection settle so the transport in use is the requested one.
    setTimeout(() => resolve(sub._dispatcher && sub._dispatcher._transport && sub._dispatcher._transport.connectionType), 300);
  });
  for (let i = 0; i < count; i++) await pub.publish(channel, { n: i });
  const deadline = Date.now() + 20000;
  while ((exact.length < count || wild.length < count) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 50));
  }
  // Any duplicate would arrive shortly after.
  await new Promise((r) => setTimeout(r, 500));
  const want = JSON.stringify([...Array(count).keys()]);
  if (JSON.stringify(exact) !== want) fail(`exact subscription got ${JSON.stringify(exact)}`);
  if (JSON.stringify(wild) !== want) fail(`wildcard subscription got ${JSON.stringify(wild)}`);
  if (transportUsed && transportUsed !== transport) fail(`client used ${transportUsed}, not ${transport}`);
  console.log(`ok: ${count} messages across nodes over ${transportUsed || transport}, each once, in order`);
  await sub.disconnect();
  await pub.disconnect();
  process.exit(0);
})().catch((e) => fail(e && e.stack || String(e)));
