#!/usr/bin/env node
'use strict';
// Interop scenarios driving the real npm `faye` client (1.4.3) against a Bayeux server.
// usage: node faye.js URL --transport websocket|long-polling [--scenario NAME] ...
// (node faye.js --help for all options)

const { Inbox, check, fence, main, rawPost, short } = require('./lib/harness');
const { FayeClient, subscriptionsOf } = require('./lib/faye-client');
const common = require('./lib/scenarios');

const make = (ctx, label) => new FayeClient(ctx, label);

// The server forgets the victim's session (a raw /meta/disconnect with its
// clientId, sent from outside the client). The faye client must get
// reconnect:"handshake" advice on its next /meta/connect, handshake again with a
// new clientId, re-subscribe by itself, and receive a message published afterwards.
async function rehandshake(ctx) {
  const victim = make(ctx, 'victim');
  // After re-handshaking, the faye client sends its first /meta/connect over
  // long-polling while its new WebSocket opens (see README).
  victim.allowTransportDetour = true;
  const pub = make(ctx, 'publisher');
  const channel = ctx.chan('/rehandshake/room');
  const got = new Inbox();
  await ctx.step('victim subscribes', victim.subscribe(channel, (d) => got.push(d)));
  await ctx.step('publisher publishes before', pub.publish(channel, { phase: 'before' }));
  await ctx.step('victim receives before', got.waitCount(1));

  const oldId = victim.clientId();
  check(oldId, 'could not learn the victim\'s clientId');
  const metaBefore = victim.wire.meta.items.length;

  const body = JSON.stringify([{ channel: '/meta/disconnect', clientId: oldId, id: 'interop-disconnect' }]);
  const res = await ctx.step('raw /meta/disconnect', rawPost(ctx.url, body, 'application/json'));
  check(res.status === 200, `raw /meta/disconnect answered HTTP ${res.status}: ${short(res.text)}`);
  const reply = Array.isArray(res.json) ? res.json.find((m) => m && m.channel === '/meta/disconnect') : null;
  check(reply && reply.successful === true, `raw /meta/disconnect not successful: ${short(res.text)}`);

  // The next connect (or any reply) must carry reconnect:"handshake".
  const advised = await ctx.step('victim gets handshake advice', victim.wire.meta.waitFor((items) =>
    items.slice(metaBefore).some((m) => m.advice && m.advice.reconnect === 'handshake')));
  const adviceMsg = advised.slice(metaBefore).find((m) => m.advice && m.advice.reconnect === 'handshake');

  const handshakes = await ctx.step('victim re-handshakes', victim.wire.handshakes.waitFor((ids) =>
    ids.some((id) => id && id !== oldId)));
  const newId = handshakes.find((id) => id && id !== oldId);

  // The client re-subscribes by itself: find its /meta/subscribe with the new
  // clientId and wait for the server's successful reply to that message id.
  const isResub = (m) => m.channel === '/meta/subscribe' && m.clientId === newId &&
    subscriptionsOf(m).includes(channel);
  const resub = await ctx.step('victim re-subscribes', victim.wire.meta.waitFor((items) =>
    victim.wire.out.items.filter(isResub).some((m) => items.some((r) => r.channel === '/meta/subscribe' && r.id === m.id))));
  const resubIds = new Set(victim.wire.out.items.filter(isResub).map((m) => m.id));
  const resubReply = resub.find((r) => r.channel === '/meta/subscribe' && resubIds.has(r.id));
  check(resubReply.successful, `automatic re-subscribe failed: ${short(resubReply)}`);

  await ctx.step('publisher publishes after', pub.publish(channel, { phase: 'after' }));
  await ctx.step('victim receives after', got.waitCount(2));

  // Over WebSocket the faye client sends its first connect(s) after a
  // re-handshake over long-polling while it reopens its socket (such a
  // long-poll may be held until a message arrives, hence after the publish);
  // it must end up back on the transport under test.
  await ctx.step(`victim connects over ${ctx.transport} again`, victim.wire.out.waitFor((items) =>
    items.some((m) => m.channel === '/meta/connect' && m.clientId === newId && m.connectionType === ctx.transport)));
  await fence(ctx, [victim], pub);
  check(got.items.length === 2, `victim received ${short(got.items)}, expected before and after once each`);
  check(got.items[1].phase === 'after', `victim's second message was ${short(got.items[1])}`);
  return {
    oldClientId: oldId,
    newClientId: newId,
    disconnectReply: reply,
    advice: { channel: adviceMsg.channel, error: adviceMsg.error, advice: adviceMsg.advice },
  };
}

const scenarios = {
  roundtrip: (ctx) => common.roundtrip(ctx, make),
  wildcards: (ctx) => common.wildcards(ctx, make),
  unsubscribe: (ctx) => common.unsubscribe(ctx, make, ['cancel', 'client']),
  rehandshake,
  large_and_unicode: (ctx) => common.largeAndUnicode(ctx, make),
  form_publish: (ctx) => common.formPublish(ctx, make),
  // Over long-polling the faye client sends a burst as concurrent HTTP requests
  // (2048-character batches) whose order at the server is undefined: publish in
  // waves of 10 (one request each), acknowledged before the next (see README).
  many_messages: (ctx) => common.manyMessages(ctx, make,
    { waveSize: ctx.transport === 'long-polling' ? 10 : 0 }),
};

main({ tool: 'faye.js', label: 'faye', argv: process.argv.slice(2), scenarios });
