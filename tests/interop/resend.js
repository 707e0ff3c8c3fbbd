#!/usr/bin/env node
'use strict';
// A publish whose reply is lost is re-sent by the real npm `faye` client (same message id,
// after `retry` seconds); the server must deliver it once. The publisher talks long-polling
// through a proxy that, once, lets the publish reach the server and then drops the
// connection instead of passing the reply on (what a node dying after the publish, or a
// network cut, does). The subscriber is connected straight to the server.
// With --then, the proxy sends everything after the dropped reply to another node, as a
// balancer does when the node that took the publish goes away.
// Against Faye's own server the subscriber gets the message twice.
// usage: node resend.js URL [--transport websocket|long-polling] [--then URL2] [--sub URL3]
//   (--transport is the subscriber's; the publisher long-polls through the proxy)
const http = require('http');
const faye = require('faye');

const args = process.argv.slice(2);
const opt = (name, dflt) => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] : dflt; };
const first = new URL(args[0]);
const then = new URL(opt('--then', args[0]));
const subscriberUrl = opt('--sub', args[0]);
const transport = opt('--transport', 'websocket');

function fail(msg) { console.error('FAIL: ' + msg); process.exit(1); }
setTimeout(() => fail('timed out after 60 s'), 60000).unref();

const channel = '/resend/' + Math.random().toString(36).slice(2);
let dropped = 0;

// Forwards each request; the first whose body publishes {"n":1} on `channel` gets no reply.
const proxy = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const body = Buffer.concat(chunks);
    const text = body.toString();
    const drop = dropped === 0 && text.includes(channel) && text.includes('"n":1');
    const target = dropped === 0 ? first : then;
    const up = http.request({
      host: target.hostname, port: target.port, path: req.url, method: req.method,
      headers: { ...req.headers, host: target.host },
    }, (r) => {
      const back = [];
      r.on('data', (c) => back.push(c));
      r.on('end', () => {
        if (drop) {
          dropped += 1;
          req.socket.destroy();
          return;
        }
        res.writeHead(r.statusCode, r.headers);
        res.end(Buffer.concat(back));
      });
    });
    up.on('error', (e) => { res.writeHead(502); res.end(String(e)); });
    up.end(body);
  });
});

(async () => {
  await new Promise((r) => proxy.listen(0, '127.0.0.1', r));
  const proxied = `http://127.0.0.1:${proxy.address().port}${first.pathname}`;
  const got = [];
  const sub = new faye.Client(subscriberUrl, { timeout: 10, retry: 1 });
  if (transport === 'long-polling') sub.disable('websocket');
  await sub.subscribe(channel, (m) => got.push(m.n));
  const pub = new faye.Client(proxied, { timeout: 10, retry: 1 });
  pub.disable('websocket');
  pub.disable('eventsource');
  const started = Date.now();
  await pub.publish(channel, { n: 1 });
  const took = Date.now() - started;
  await pub.publish(channel, { n: 2 });
  const deadline = Date.now() + 10000;
  while (got.length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  // A second copy would arrive right after.
  await new Promise((r) => setTimeout(r, 500));
  if (dropped !== 1) fail(`the proxy dropped ${dropped} replies, not 1`);
  if (took < 900) fail(`the first publish was answered after ${took} ms: it was not re-sent`);
  if (JSON.stringify(got) !== '[1,2]') fail(`subscriber got ${JSON.stringify(got)}, want [1,2]`);
  console.log(`ok: the publish re-sent after ${took} ms was delivered once`);
  await sub.disconnect();
  await pub.disconnect();
  proxy.close();
  process.exit(0);
})().catch((e) => fail(e && e.stack || String(e)));
