'use strict';
// Thin wrapper around the real npm `faye` client (1.4.3) giving the scenarios
// a promise-based interface and a wire-level view of what the client saw.

const faye = require('faye');
const { Inbox } = require('./harness');

function subscriptionsOf(msg) {
  return [].concat(msg.subscription === undefined ? [] : msg.subscription);
}

class FayeClient {
  constructor(ctx, label) {
    this.ctx = ctx;
    this.label = label;
    this.kind = 'faye';
    this.client = new faye.Client(ctx.url, { timeout: ctx.args.clientTimeout, retry: 2 });
    if (ctx.transport === 'long-polling') this.client.disable('websocket');

    // What went over the wire, as seen by the client's extensions.
    this.wire = {
      connectionTypes: new Set(),
      connectSeq: [],                               // connectionType of every /meta/connect, in order
      handshakes: new Inbox(`${label} handshakes`), // clientIds from successful handshake replies
      meta: new Inbox(`${label} meta`),             // every /meta/* reply received
      out: new Inbox(`${label} out`),               // every message sent (outgoing extension)
      deliveries: new Inbox(`${label} deliveries`), // every delivered (non-meta, has data) message
    };
    this._clientId = null;
    const wire = this.wire;
    const self = this;
    this.client.addExtension({
      outgoing(message, callback) {
        if (message.channel === '/meta/connect') {
          wire.connectionTypes.add(message.connectionType);
          wire.connectSeq.push(message.connectionType);
        }
        if (message.clientId) self._clientId = message.clientId;
        wire.out.push(message);
        callback(message);
      },
      incoming(message, callback) {
        const ch = message.channel || '';
        if (ch.startsWith('/meta/')) {
          if (ch === '/meta/handshake' && message.successful) {
            self._clientId = message.clientId;
            wire.handshakes.push(message.clientId);
          }
          wire.meta.push(message);
        } else if (message.data !== undefined && message.successful === undefined) {
          wire.deliveries.push(message);
        }
        callback(message);
      },
    });
    ctx.addClient(this);
  }

  problems() {
    return this.wire.meta.items.filter((m) => m.successful === false)
      .map((m) => `${m.channel}: ${m.error || 'unsuccessful'}`);
  }

  clientId() {
    return this._clientId || (this.client._dispatcher && this.client._dispatcher.clientId) || null;
  }

  // Resolves with a handle once the server acknowledged the subscription.
  subscribe(channel, onData) {
    const sub = this.client.subscribe(channel, (data) => onData(data, channel));
    return new Promise((resolve, reject) => {
      sub.then(() => resolve({ channel, sub, onData }),
        (err) => reject(new Error(`${this.label} subscribe ${channel} failed: ${err && err.message ? err.message : JSON.stringify(err)}`)));
    });
  }

  // Unsubscribes and resolves once the server acknowledged it.
  // how: 'cancel' (subscription.cancel()) or 'client' (client.unsubscribe(channel)).
  async unsubscribe(handle, how = 'cancel') {
    const start = this.wire.out.items.length;
    if (how === 'client') this.client.unsubscribe(handle.channel);
    else handle.sub.cancel();
    const isMine = (m) => m.channel === '/meta/unsubscribe' && subscriptionsOf(m).includes(handle.channel);
    const out = await this.wire.out.waitFor((items) => items.slice(start).some(isMine));
    const sent = out.slice(start).find(isMine);
    const replies = await this.wire.meta.waitFor((items) =>
      items.some((r) => r.channel === '/meta/unsubscribe' && r.id === sent.id));
    const reply = replies.find((r) => r.channel === '/meta/unsubscribe' && r.id === sent.id);
    if (!reply.successful) throw new Error(`${this.label} unsubscribe ${handle.channel} failed: ${reply.error}`);
    return reply;
  }

  // Resolves once the server acknowledged the publish.
  publish(channel, data) {
    const pub = this.client.publish(channel, data);
    return new Promise((resolve, reject) => {
      pub.then(() => resolve(),
        (err) => reject(new Error(`${this.label} publish to ${channel} failed: ${err && err.message ? err.message : JSON.stringify(err)}`)));
    });
  }

  disconnect() {
    const p = this.client.disconnect();
    if (!p) {
      // Not connected (never handshaken, or handshake in flight): just close the transports.
      try { this.client._dispatcher.close(); } catch (e) { /* ignore */ }
      return Promise.resolve();
    }
    return new Promise((resolve) => p.then(resolve, resolve));
  }
}

module.exports = { FayeClient, subscriptionsOf, faye };
