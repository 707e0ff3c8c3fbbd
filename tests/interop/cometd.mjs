#!/usr/bin/env node
// Interop scenarios driving the real CometD JavaScript client (npm `cometd`, run
// in Node through `cometd-nodejs-client`) against a Bayeux server.
// usage: node cometd.mjs URL --transport websocket|long-polling [--scenario NAME] ...
// (node cometd.mjs --help for all options)

import { Console } from 'node:console';
import { createRequire } from 'node:module';
import { adapt } from 'cometd-nodejs-client';

const require = createRequire(import.meta.url);
const { Inbox, check, fence, log, main, sleep } = require('./lib/harness.js');
const common = require('./lib/scenarios.js');
const { FayeClient } = require('./lib/faye-client.js');

// cometd-nodejs-client keeps ONE cookie jar per process (per host), shared by
// every CometD client created here, so to a server that binds sessions to
// cookies (CometD's BAYEUX_BROWSER) all of them look like tabs of one browser.
// We keep that default behaviour (a per-client jar is not possible: the store
// hook is not told which client it is storing for) but record what the server
// set, so that the run can report it.
const cookieJar = {};
const cookiesSeen = new Set();
adapt({
  cookies: {
    storeCookie(uri, header, callback) {
      const nameValue = String(header).split(';')[0].trim();
      const eq = nameValue.indexOf('=');
      if (eq > 0) {
        const jar = (cookieJar[uri.hostname] = cookieJar[uri.hostname] || {});
        jar[nameValue.slice(0, eq)] = nameValue;
        cookiesSeen.add(nameValue.slice(0, eq));
      }
      callback();
    },
    retrieveCookies(context, uri, callback) {
      callback(null, Object.values(cookieJar[uri.hostname] || {}));
    },
  },
});
// adapt() points the CometD logger at the global console, whose info/log go to
// stdout; keep stdout for the JSON result lines.
globalThis.window.console = new Console({ stdout: process.stderr, stderr: process.stderr });
// Only now, with window.XMLHttpRequest and window.WebSocket installed.
const { CometD } = await import('cometd');

let clientSeq = 0;

// A short description of an unsuccessful reply, or of a failure the CometD
// client synthesised itself (reply.failure holds the transport and more).
function describeFailure(reply) {
  if (reply.error) return reply.error;
  const f = reply.failure || {};
  const parts = [];
  if (f.reason) parts.push(`reason=${f.reason}`);
  if (f.httpCode !== undefined) parts.push(`http=${f.httpCode}`);
  if (f.websocketCode !== undefined) parts.push(`websocket=${f.websocketCode}`);
  if (f.connectionType) parts.push(`over ${f.connectionType}`);
  if (f.exception) parts.push(`exception=${f.exception.message || f.exception}`);
  return parts.join(' ') || 'unsuccessful';
}

class CometDClient {
  constructor(ctx, label) {
    this.ctx = ctx;
    this.label = label;
    this.kind = 'cometd';
    this.cometd = new CometD(`${label}-${ctx.runId}-${++clientSeq}`);
    if (ctx.transport === 'long-polling') {
      this.cometd.unregisterTransport('websocket');
    }
    this.cometd.configure({
      url: ctx.url,
      logLevel: ctx.args.verbose ? 'info' : 'warn',
      maxNetworkDelay: 10000,
      // The default (8192 characters per message) rejects the 200 KB publish
      // on the client side before anything reaches the server.
      maxSendBayeuxMessageSize: 1024 * 1024,
    });
    this.wire = {
      connectionTypes: new Set(),
      connectSeq: [],
      handshakes: new Inbox(`${label} handshakes`),
      meta: new Inbox(`${label} meta`),
      out: new Inbox(`${label} out`),
      deliveries: new Inbox(`${label} deliveries`),
    };
    const wire = this.wire;
    this.cometd.registerExtension('interop-wire', {
      outgoing(message) {
        if (message.channel === '/meta/connect') {
          wire.connectionTypes.add(message.connectionType);
          wire.connectSeq.push(message.connectionType);
        }
        wire.out.push(message);
        return message;
      },
      incoming(message) {
        const ch = message.channel || '';
        if (ch.startsWith('/meta/')) {
          if (ch === '/meta/handshake' && message.successful) wire.handshakes.push(message.clientId);
          wire.meta.push(message);
        } else if (message.data !== undefined && message.successful === undefined) {
          wire.deliveries.push(message);
        }
        return message;
      },
    });
    this._ready = null;
    this._failures = [];
    ctx.addClient(this);
  }

  // Resolves on the first successful handshake. A failed one is only recorded:
  // the CometD client retries by itself (and, in websocket mode, falls back to
  // long-polling after a failed WebSocket handshake, which the transport check
  // then reports), so the scenario time-out decides.
  ready() {
    if (!this._ready) {
      this._ready = new Promise((resolve) => {
        this.cometd.addListener('/meta/handshake', (reply) => {
          if (reply.successful) resolve(reply);
          else this._failures.push(`/meta/handshake: ${describeFailure(reply)}`);
        });
        this.cometd.addListener('/meta/connect', (reply) => {
          if (!reply.successful) this._failures.push(`/meta/connect: ${describeFailure(reply)}`);
        });
        this.cometd.handshake();
      });
    }
    return this._ready;
  }

  problems() {
    return this._failures.slice();
  }

  clientId() {
    return this.cometd.getClientId();
  }

  async subscribe(channel, onData) {
    await this.ready();
    return new Promise((resolve, reject) => {
      const sub = this.cometd.subscribe(channel, (message) => onData(message.data, message.channel), (reply) => {
        if (reply.successful) resolve({ channel, sub, onData });
        else reject(new Error(`${this.label} subscribe ${channel} failed: ${describeFailure(reply)}`));
      });
    });
  }

  async unsubscribe(handle) {
    await this.ready();
    return new Promise((resolve, reject) => {
      this.cometd.unsubscribe(handle.sub, (reply) => {
        if (reply.successful) resolve(reply);
        else reject(new Error(`${this.label} unsubscribe ${handle.channel} failed: ${describeFailure(reply)}`));
      });
    });
  }

  async publish(channel, data) {
    await this.ready();
    return new Promise((resolve, reject) => {
      this.cometd.publish(channel, data, (reply) => {
        if (reply.successful) resolve(reply);
        else reject(new Error(`${this.label} publish to ${channel} failed: ${describeFailure(reply)}`));
      });
    });
  }

  disconnect() {
    if (this.cometd.isDisconnected()) return Promise.resolve();
    return new Promise((resolve) => {
      try {
        this.cometd.disconnect(() => resolve());
      } catch (e) {
        resolve();
      }
    });
  }
}

const make = (ctx, label) => new CometDClient(ctx, label);
const makeFaye = (ctx, label) => new FayeClient(ctx, label);

// A CometD subscriber receives a publish made by a faye client, and a faye
// subscriber receives a publish made by a CometD client (same transport for both).
async function crossClient(ctx) {
  const c = make(ctx, 'cometd');
  const f = makeFaye(ctx, 'faye');
  const toCometd = ctx.chan('/cross/to_cometd');
  const toFaye = ctx.chan('/cross/to_faye');
  const gotC = new Inbox();
  const gotF = new Inbox();
  await ctx.step('cometd subscribes', c.subscribe(toCometd, (d) => gotC.push(d)));
  await ctx.step('faye subscribes', f.subscribe(toFaye, (d) => gotF.push(d)));
  const fromFaye = { from: 'faye', text: 'hello CometD \u{1F34E}' };
  const fromCometd = { from: 'cometd', text: 'hello faye \u4e2d\u6587' };
  await ctx.step('faye publishes to cometd', f.publish(toCometd, fromFaye));
  await ctx.step('cometd publishes to faye', c.publish(toFaye, fromCometd));
  await ctx.step('cometd receives', gotC.waitCount(1));
  await ctx.step('faye receives', gotF.waitCount(1));
  await fence(ctx, [c], f);
  await fence(ctx, [f], c);
  check(gotC.items.length === 1 && common.wireOn(c, toCometd).length === 1,
    `cometd subscriber received ${gotC.items.length} (wire ${common.wireOn(c, toCometd).length}), expected 1`);
  check(gotF.items.length === 1 && common.wireOn(f, toFaye).length === 1,
    `faye subscriber received ${gotF.items.length} (wire ${common.wireOn(f, toFaye).length}), expected 1`);
  check(common.wireOn(c, toCometd)[0] && JSON.stringify(gotC.items[0]) === JSON.stringify(fromFaye),
    `cometd subscriber received ${JSON.stringify(gotC.items[0])}`);
  check(JSON.stringify(gotF.items[0]) === JSON.stringify(fromCometd),
    `faye subscriber received ${JSON.stringify(gotF.items[0])}`);
  return {
    deliveredToCometd: Object.keys(common.wireOn(c, toCometd)[0]).sort(),
    deliveredToFaye: Object.keys(common.wireOn(f, toFaye)[0]).sort(),
  };
}

const scenarios = {
  roundtrip: (ctx) => common.roundtrip(ctx, make),
  wildcards: (ctx) => common.wildcards(ctx, make),
  unsubscribe: (ctx) => common.unsubscribe(ctx, make, ['unsubscribe']),
  large_and_unicode: (ctx) => common.largeAndUnicode(ctx, make),
  many_messages: (ctx) => common.manyMessages(ctx, make),
  cross_client: crossClient,
};

main({
  tool: 'cometd.mjs',
  label: 'cometd',
  argv: process.argv.slice(2),
  scenarios,
  onExit() {
    if (cookiesSeen.size) {
      log(`note: the server set cookies ${[...cookiesSeen].join(', ')}; cometd-nodejs-client shares one jar per process, so all CometD clients of this run sent them`);
    }
  },
});
