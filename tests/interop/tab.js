#!/usr/bin/env node
'use strict';
// One browser tab, played by the real npm `faye` client, driven over stdin/stdout by a test.
// usage: node tab.js URL [--transport websocket|long-polling] [--jwt TOKEN] [--sub /a,/b]
// stdout, one line each:
//   `CLIENT <id>`          whenever the client id changes (first handshake, re-handshakes)
//   `READY`                once every --sub subscription is acknowledged
//   `MSG <channel> <json>` per message received (its `data`)
//   `ACK <what>` / `ERR <what> <error>` for commands
// stdin, one command per line:
//   `away` / `online`      publish {status} to /service/presence
//   `sub <channel>`        subscribe to one more channel
//   `disconnect`           disconnect cleanly, then exit
// Ends when stdin closes (without a disconnect: the session is left to expire) or after 120 s.
const faye = require('faye');
const readline = require('readline');

const args = process.argv.slice(2);
const opt = (name, dflt) => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] : dflt; };
const url = args[0];
const transport = opt('--transport', 'websocket');
const jwt = opt('--jwt', null);
const subs = (opt('--sub', '') || '').split(',').filter(Boolean);

const client = new faye.Client(url, { timeout: 5, retry: 0.5 });
if (transport === 'long-polling') client.disable('websocket');
if (jwt) {
  client.addExtension({
    outgoing: (m, cb) => { if (m.channel === '/meta/handshake') m.ext = Object.assign({}, m.ext, { jwt }); cb(m); },
  });
}
let id = null;
setInterval(() => {
  const now = client._dispatcher && client._dispatcher.clientId;
  if (now && now !== id) { id = now; console.log('CLIENT ' + id); }
}, 20).unref();

const on = (ch) => client.subscribe(ch, (data) => console.log('MSG ' + ch + ' ' + JSON.stringify(data)));
Promise.all(subs.map(on)).then(
  () => console.log('READY'),
  (e) => { console.log('ERR subscribe ' + JSON.stringify(e)); process.exit(1); },
);

const rl = readline.createInterface({ input: process.stdin });
rl.on('line', (line) => {
  const [cmd, arg] = line.trim().split(/\s+/);
  if (cmd === 'away' || cmd === 'online') {
    client.publish('/service/presence', { status: cmd }).then(
      () => console.log('ACK ' + cmd),
      (e) => console.log('ERR ' + cmd + ' ' + JSON.stringify(e && e.message)),
    );
  } else if (cmd === 'sub') {
    on(arg).then(() => console.log('ACK sub ' + arg), (e) => console.log('ERR sub ' + JSON.stringify(e)));
  } else if (cmd === 'disconnect') {
    Promise.resolve(client.disconnect()).then(() => { console.log('ACK disconnect'); setTimeout(() => process.exit(0), 50); });
  }
});
rl.on('close', () => process.exit(0));
setTimeout(() => process.exit(0), 120000).unref();
