#!/usr/bin/env node
'use strict';
// Publishes steadily with the real npm `faye` client and reports on stdout, one line each:
// `ACK <n>` when the server acknowledged the publish of {n} (successful reply), `NACK <n> <error>`
// when it refused it. A publish that fails on the network is retried by the client itself
// until acknowledged, so it may reach the server more than once (and be delivered twice).
// When stdin closes it stops publishing, waits (up to 20 s) for every outstanding publish,
// prints `DONE <sent> <acked> <nacked>` and exits.
// usage: node steady_publisher.js URL CHANNEL [--interval MS] [--transport long-polling|websocket]
const faye = require('faye');

const args = process.argv.slice(2);
const opt = (name, dflt) => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] : dflt; };
const [url, channel] = args;
const interval = parseInt(opt('--interval', '20'), 10);
const transport = opt('--transport', 'long-polling');

const client = new faye.Client(url, { timeout: 5, retry: 0.5 });
if (transport === 'long-polling') client.disable('websocket');

let sent = 0;
let acked = 0;
let nacked = 0;
let outstanding = 0;
const timer = setInterval(() => {
  const n = sent++;
  outstanding++;
  client.publish(channel, { n }).then(
    () => { acked++; outstanding--; console.log('ACK ' + n); },
    (e) => { nacked++; outstanding--; console.log('NACK ' + n + ' ' + JSON.stringify(e && e.message || e)); },
  );
}, interval);

function finish() {
  console.log(`DONE ${sent} ${acked} ${nacked}`);
  process.exit(0);
}

process.stdin.on('end', () => {
  clearInterval(timer);
  const deadline = Date.now() + 20000;
  const check = setInterval(() => {
    if (outstanding === 0 || Date.now() > deadline) { clearInterval(check); finish(); }
  }, 20);
});
process.stdin.resume();
setTimeout(() => process.exit(0), 120000).unref();
