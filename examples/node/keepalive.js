// keepalive.js: what a keepalive setting does to a quiet subscription.
// Herald closes a connection whose client pings more often than every
// 10 s while nothing else flows; grpc-js then ends the stream with an error
// that is about pings, not about a slow subscriber.
//
//   node keepalive.js <keepalive ms | default> <seconds> [channel]
//
// It subscribes with grpc.keepalive_time_ms set to <keepalive ms> (or as
// connect.js sets it) and prints `ok` if the stream lived <seconds>
// seconds, or how it ended.
'use strict';

const { connect, grpc } = require('./connect');

const [ms, seconds] = [process.argv[2], Number(process.argv[3])];
const channel = process.argv[4] || 'news';
const { client, metadata } = connect(ms === 'default' ? {} : { 'grpc.keepalive_time_ms': Number(ms) });
const start = Date.now();
const call = client.Subscribe({ channel }, metadata);
const timer = setTimeout(() => {
  console.log(`ok: keepalive ${ms}, the stream lived ${seconds} s`);
  process.exit(0);
}, seconds * 1000);
call.on('data', (ev) => {
  if (ev.event === 'subscribed') console.log('subscribed');
});
call.on('error', () => {});
call.on('status', ({ code, details }) => {
  clearTimeout(timer);
  console.log(`ended after ${((Date.now() - start) / 1000).toFixed(1)} s: ${grpc.status[code]}: ${details}`);
  process.exit(2);
});
