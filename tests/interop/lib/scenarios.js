'use strict';
// Scenarios shared by faye.js and cometd.mjs. Each takes the scenario context
// and a factory `make(ctx, label)` returning a client adapter with:
//   subscribe(channel, onData) -> Promise<handle>   (resolves on the ack)
//   unsubscribe(handle, how)   -> Promise           (resolves on the ack)
//   publish(channel, data)     -> Promise           (resolves on the ack)
//   clientId(), disconnect(), label, wire.{deliveries, connectionTypes, ...}
// Assertions are made both on what the application callbacks saw and on what
// came over the wire (the client's incoming extension), because the client
// libraries dispatch one delivered message to every matching local subscription.

const { Inbox, check, deepEqual, fence, short } = require('./harness');

function wireOn(client, channel) {
  return client.wire.deliveries.filter((m) => m.channel === channel);
}

// A subscribes /chat/room1, B publishes {text:"hi"}, A receives it exactly once.
async function roundtrip(ctx, make) {
  const a = make(ctx, 'A');
  const b = make(ctx, 'B');
  const channel = ctx.chan('/chat/room1');
  const got = new Inbox();
  await ctx.step('A subscribes', a.subscribe(channel, (data) => got.push(data)));
  await ctx.step('B publishes', b.publish(channel, { text: 'hi' }));
  await ctx.step('A receives', got.waitCount(1));
  await fence(ctx, [a], b);
  check(got.items.length === 1, `A received ${got.items.length} messages, expected exactly 1`);
  check(deepEqual(got.items[0], { text: 'hi' }), `A received ${short(got.items[0])}, expected {"text":"hi"}`);
  const wire = wireOn(a, channel);
  check(wire.length === 1, `A's wire saw ${wire.length} deliveries on ${channel}, expected 1`);
  return { channel, received: got.items[0], deliveredFields: Object.keys(wire[0]).sort() };
}

// /w/* gets /w/a but not /w/a/b; /w/** gets both; a client on both patterns
// gets /w/a once on the wire (and once per matching subscription callback).
async function wildcards(ctx, make) {
  const star = make(ctx, 'star');
  const dstar = make(ctx, 'dstar');
  const both = make(ctx, 'both');
  const pub = make(ctx, 'publisher');
  const base = ctx.chan('/w');
  const one = `${base}/a`;
  const two = `${base}/a/b`;
  const got = {
    star: new Inbox(), dstar: new Inbox(), bothStar: new Inbox(), bothDstar: new Inbox(),
  };
  await Promise.all([
    ctx.step('star subscribes /w/*', star.subscribe(`${base}/*`, (d) => got.star.push(d))),
    ctx.step('dstar subscribes /w/**', dstar.subscribe(`${base}/**`, (d) => got.dstar.push(d))),
  ]);
  await ctx.step('both subscribes /w/*', both.subscribe(`${base}/*`, (d) => got.bothStar.push(d)));
  await ctx.step('both subscribes /w/**', both.subscribe(`${base}/**`, (d) => got.bothDstar.push(d)));

  await ctx.step('publish /w/a', pub.publish(one, { ch: 'a' }));
  await ctx.step('publish /w/a/b', pub.publish(two, { ch: 'a/b' }));

  await ctx.step('star receives /w/a', got.star.waitCount(1));
  await ctx.step('dstar receives both', got.dstar.waitCount(2));
  await ctx.step('both receives /w/a via /w/*', got.bothStar.waitCount(1));
  await ctx.step('both receives /w/a and /w/a/b via /w/**', got.bothDstar.waitCount(2));
  await fence(ctx, [star, dstar, both], pub);

  const names = (ib) => ib.items.map((d) => d.ch).sort();
  check(deepEqual(names(got.star), ['a']), `/w/* subscriber got ${short(names(got.star))}, expected ["a"]`);
  check(deepEqual(names(got.dstar), ['a', 'a/b']), `/w/** subscriber got ${short(names(got.dstar))}, expected ["a","a/b"]`);
  check(deepEqual(names(got.bothStar), ['a']), `both: /w/* callback got ${short(names(got.bothStar))}, expected ["a"]`);
  check(deepEqual(names(got.bothDstar), ['a', 'a/b']), `both: /w/** callback got ${short(names(got.bothDstar))}, expected ["a","a/b"]`);

  const wireCount = (c, ch) => wireOn(c, ch).length;
  check(wireCount(star, one) === 1 && wireCount(star, two) === 0,
    `/w/* subscriber wire: ${wireCount(star, one)} x /w/a, ${wireCount(star, two)} x /w/a/b, expected 1 and 0`);
  check(wireCount(dstar, one) === 1 && wireCount(dstar, two) === 1,
    `/w/** subscriber wire: ${wireCount(dstar, one)} x /w/a, ${wireCount(dstar, two)} x /w/a/b, expected 1 and 1`);
  check(wireCount(both, one) === 1,
    `client on /w/* and /w/** received /w/a ${wireCount(both, one)} times on the wire, expected exactly once`);
  check(wireCount(both, two) === 1,
    `client on /w/* and /w/** received /w/a/b ${wireCount(both, two)} times on the wire, expected exactly once`);
  return { base, wireBoth: { a: wireCount(both, one), ab: wireCount(both, two) } };
}

// After unsubscribing, publishes no longer arrive (checked on the wire, so it
// is the server that stopped sending, not just the client's local dispatch).
// `variants` are the adapter's unsubscribe styles to exercise, one channel each.
async function unsubscribe(ctx, make, variants = ['cancel']) {
  const a = make(ctx, 'A');
  const b = make(ctx, 'B');
  const channels = variants.map((v) => ctx.chan(`/unsub/${v}`));
  const got = channels.map(() => new Inbox());
  const handles = [];
  for (let i = 0; i < channels.length; i++) {
    handles.push(await ctx.step(`A subscribes ${channels[i]}`, a.subscribe(channels[i], (d) => got[i].push(d))));
  }
  for (let i = 0; i < channels.length; i++) {
    await ctx.step(`B publishes before on ${channels[i]}`, b.publish(channels[i], { phase: 'before' }));
    await ctx.step(`A receives before on ${channels[i]}`, got[i].waitCount(1));
  }
  for (let i = 0; i < channels.length; i++) {
    await ctx.step(`A unsubscribes ${channels[i]} (${variants[i]})`, a.unsubscribe(handles[i], variants[i]));
  }
  for (let i = 0; i < channels.length; i++) {
    await ctx.step(`B publishes after on ${channels[i]}`, b.publish(channels[i], { phase: 'after' }));
  }
  await fence(ctx, [a], b);
  const detail = {};
  for (let i = 0; i < channels.length; i++) {
    const wire = wireOn(a, channels[i]);
    check(got[i].items.length === 1, `${variants[i]}: callback got ${short(got[i].items)}, expected only the "before" message`);
    check(wire.length === 1 && deepEqual(wire[0].data, { phase: 'before' }),
      `${variants[i]}: server still delivered after unsubscribe: wire saw ${short(wire.map((m) => m.data))}`);
    detail[variants[i]] = { channel: channels[i], wireDeliveries: wire.length };
  }
  return detail;
}

const UNICODE = 'Apple = \u{1F34E}, \u00fcn\u00efc\u00f8d\u00e9, \u4e2d\u6587, \u2028';
// Other characters JSON encoders like to get wrong, checked separately.
const AWKWARD = '\u2029 \u00a0 \u0000 \u001f \u007f "quoted" \\back\\ \t\r\n </script> \u{10FFFF}';

function bigString(n) {
  const alphabet = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 {}[]",:\\/';
  let s = '';
  let x = 12345;
  const chunk = [];
  for (let i = 0; i < 1024; i++) {
    x = (x * 1103515245 + 12345) & 0x7fffffff;
    chunk.push(alphabet[x % alphabet.length]);
  }
  const block = chunk.join('');
  while (s.length < n) s += block;
  return s.slice(0, n);
}

// A ~200 KB string and a non-ASCII string round-trip intact.
async function largeAndUnicode(ctx, make) {
  const a = make(ctx, 'A');
  const b = make(ctx, 'B');
  const channel = ctx.chan('/payload/room');
  const got = new Inbox();
  const big = bigString(200 * 1024);
  await ctx.step('A subscribes', a.subscribe(channel, (d) => got.push(d)));
  await ctx.step('B publishes 200 KB', b.publish(channel, { kind: 'big', text: big }));
  await ctx.step('B publishes unicode', b.publish(channel, { kind: 'unicode', text: UNICODE, awkward: AWKWARD, nested: { [UNICODE]: [UNICODE] } }));
  await ctx.step('A receives both', got.waitCount(2));
  await fence(ctx, [a], b);
  check(got.items.length === 2, `A received ${got.items.length} messages, expected 2`);
  const bigMsg = got.items.find((d) => d && d.kind === 'big');
  const uniMsg = got.items.find((d) => d && d.kind === 'unicode');
  check(bigMsg, 'the 200 KB message did not arrive');
  check(uniMsg, 'the unicode message did not arrive');
  check(typeof bigMsg.text === 'string' && bigMsg.text.length === big.length,
    `200 KB payload arrived with length ${bigMsg.text && bigMsg.text.length}, expected ${big.length}`);
  check(bigMsg.text === big, '200 KB payload arrived altered');
  check(uniMsg.text === UNICODE, `unicode payload altered: got ${short(uniMsg.text)}, expected ${short(UNICODE)}`);
  check(uniMsg.awkward === AWKWARD, `escaping-sensitive payload altered: got ${short(uniMsg.awkward)}, expected ${short(AWKWARD)}`);
  check(deepEqual(uniMsg.nested, { [UNICODE]: [UNICODE] }), `unicode key/value altered: ${short(uniMsg.nested)}`);
  return { bigLength: big.length, unicode: uniMsg.text };
}

// 200 messages published quickly by one client arrive in order, none lost or duplicated.
// waveSize 0 sends all publishes at once. With waveSize N the publisher sends N
// at a time and waits for their acks before the next N: the faye client over
// long-polling splits a burst into several concurrent HTTP requests on separate
// sockets, whose order at the server is not defined; a wave of N small messages
// goes out as one request, so the order under test is well defined.
async function manyMessages(ctx, make, { count = 200, waveSize = 0 } = {}) {
  const a = make(ctx, 'A');
  const b = make(ctx, 'B');
  const channel = ctx.chan('/many/room');
  const got = new Inbox();
  await ctx.step('A subscribes', a.subscribe(channel, (d) => got.push(d)));
  // Make sure B is handshaken so that all publishes leave in one burst.
  await ctx.step('B warm-up publish', b.publish(ctx.chan('/many/warmup'), { warmup: true }));
  if (waveSize > 0) {
    for (let start = 0; start < count; start += waveSize) {
      const acks = [];
      for (let i = start; i < Math.min(count, start + waveSize); i++) acks.push(b.publish(channel, { seq: i }));
      await ctx.step(`B's publishes from ${start} acknowledged`, Promise.all(acks));
    }
  } else {
    const acks = [];
    for (let i = 0; i < count; i++) acks.push(b.publish(channel, { seq: i }));
    await ctx.step(`B's ${count} publishes acknowledged`, Promise.all(acks));
  }
  await ctx.step(`A receives ${count}`, got.waitCount(count));
  await fence(ctx, [a], b);
  const seqs = got.items.map((d) => d && d.seq);
  const seen = new Set(seqs);
  const missing = [];
  for (let i = 0; i < count; i++) if (!seen.has(i)) missing.push(i);
  check(seqs.length === count, `A received ${seqs.length} messages, expected ${count} (missing ${short(missing)})`);
  check(seen.size === count, `duplicates received: ${short(seqs.filter((s, i) => seqs.indexOf(s) !== i))}`);
  const firstOut = seqs.findIndex((s, i) => s !== i);
  check(firstOut === -1, `out of order from index ${firstOut}: ...${short(seqs.slice(Math.max(0, firstOut - 3), firstOut + 5))}`);
  const wire = wireOn(a, channel);
  check(wire.length === count, `A's wire saw ${wire.length} deliveries, expected ${count}`);
  return { count, inOrder: true, burst: waveSize > 0 ? `waves of ${waveSize}` : 'all at once' };
}

// A subscriber receives a message published by a raw HTTP form POST with no session.
async function formPublish(ctx, make) {
  const { rawPost } = require('./harness');
  const s = make(ctx, 'subscriber');
  const f = make(ctx, 'fence-publisher');
  const channel = ctx.chan('/backend/feed');
  const got = new Inbox();
  await ctx.step('subscriber subscribes', s.subscribe(channel, (d) => got.push(d)));
  const data = { text: 'from backend', n: 42, uni: '\u00fc\u{1F34E}' };
  const body = 'message=' + encodeURIComponent(JSON.stringify({ channel, data }));
  const res = await ctx.step('form POST', rawPost(ctx.url, body, 'application/x-www-form-urlencoded'));
  check(res.status === 200, `form POST answered HTTP ${res.status}: ${short(res.text)}`);
  check(Array.isArray(res.json), `form POST reply is not a JSON array: ${short(res.text)}`);
  const reply = res.json[0] || {};
  check(reply.successful === true, `form POST reply not successful: ${short(res.json)}`);
  check(reply.channel === channel, `form POST reply channel ${reply.channel}, expected ${channel}`);
  await ctx.step('subscriber receives', got.waitCount(1));
  await fence(ctx, [s], f);
  check(got.items.length === 1, `subscriber received ${got.items.length} messages, expected 1`);
  check(deepEqual(got.items[0], data), `subscriber received ${short(got.items[0])}, expected ${short(data)}`);
  return { reply: res.json, contentType: res.headers['content-type'] };
}

module.exports = {
  AWKWARD,
  UNICODE,
  bigString,
  formPublish,
  largeAndUnicode,
  manyMessages,
  roundtrip,
  unsubscribe,
  wildcards,
  wireOn,
};
