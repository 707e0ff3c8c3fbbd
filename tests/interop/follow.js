#!/usr/bin/env node
'use strict';
// Follows a channel with the real npm `faye` client and reports on stdout, one line each:
// `READY` once the subscription is acknowledged, `MSG <n>` per message ({n} payloads),
// `TRANSPORT <type>` whenever the transport in use changes. Ends when stdin closes or after 120 s.
// usage: node follow.js URL CHANNEL [--transport websocket|long-polling]
const faye = require('faye');

const [url, channel] = process.argv.slice(2);
const t = process.argv.indexOf('--transport');
const transport = t >= 0 ? process.argv[t + 1] : 'websocket';
const client = new faye.Client(url, { timeout: 5, retry: 0.5 });
if (transport === 'long-polling') client.disable('websocket');
// The client starts on long-polling and upgrades to WebSocket without an event: report
// each change of the dispatcher's transport.
let current = null;
setInterval(() => {
  const t = client._dispatcher && client._dispatcher._transport;
  const name = t && t.connectionType;
  if (name && name !== current) { current = name; console.log('TRANSPORT ' + name); }
}, 50).unref();
client.subscribe(channel, (m) => console.log('MSG ' + m.n)).then(
  () => console.log('READY'),
  (e) => { console.log('ERROR ' + JSON.stringify(e)); process.exit(1); },
);
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
setTimeout(() => process.exit(0), 120000).unref();
