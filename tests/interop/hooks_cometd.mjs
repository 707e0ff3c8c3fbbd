#!/usr/bin/env node
// `/service` forwarding (docs/hooks.md) with the real CometD client's remoteCall, run in
// Node through cometd-nodejs-client. Prints one JSON line for the Rust test
// (tests/tests/hooks.rs) and exits 0; 1 only when the client could not handshake.
// usage: node hooks_cometd.mjs URL --transport websocket|long-polling --calls JSON
//   JSON: [{"target": "rpc/echo", "data": ..., "timeout": ms}, ...], called in turn;
//   output: {"calls": [{"target", "successful", "data", "error", "ms"}]}

import { Console } from 'node:console';
import { adapt } from 'cometd-nodejs-client';

const args = process.argv.slice(2);
const url = args[0];
const opt = (name, dflt) => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] : dflt; };
const fail = (msg) => { console.error('FAIL: ' + msg); process.exit(1); };
setTimeout(() => fail('timed out after 60 s'), 60000).unref();

adapt();
// adapt() points the CometD logger at the global console; keep stdout for the result.
globalThis.window.console = new Console({ stdout: process.stderr, stderr: process.stderr });
const { CometD } = await import('cometd');

const cometd = new CometD('hooks');
if (opt('--transport', 'long-polling') === 'long-polling') cometd.unregisterTransport('websocket');
cometd.configure({ url, logLevel: 'warn', maxNetworkDelay: 10000 });

await new Promise((resolve) => {
  cometd.handshake((reply) => (reply.successful ? resolve() : fail('handshake: ' + JSON.stringify(reply))));
});

const out = [];
for (const call of JSON.parse(opt('--calls', '[]'))) {
  const started = Date.now();
  const reply = await new Promise((resolve) => cometd.remoteCall(call.target, call.data, call.timeout, resolve));
  out.push({
    target: call.target,
    successful: reply.successful,
    data: reply.data === undefined ? null : reply.data,
    error: reply.error === undefined ? null : reply.error,
    ms: Date.now() - started,
  });
}
await new Promise((resolve) => cometd.disconnect(resolve));
console.log(JSON.stringify({ calls: out }));
process.exit(0);
