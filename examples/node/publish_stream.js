// publish_stream.js: many publications on one PublishStream. Each request
// gets exactly one response, in request order: its position, or an error
// for that publication alone (the stream carries on).
//
//   node publish_stream.js [channel]
'use strict';

const { once } = require('node:events');
const { connect, grpc } = require('./connect');

const { client, metadata } = connect();
const channel = process.argv[2] || 'news';

async function main() {
  const messages = [
    { channel, json: '{"tick":1}' },
    { channel: 'nowhere:1', json: '{"tick":2}' }, // unknown namespace: refused
    { channel, json: '{"tick":3' }, // not JSON: refused, nothing stored
    { channel, json: '{"tick":4,"price":1.10}' },
  ];
  const call = client.PublishStream(metadata);
  const done = new Promise((resolve, reject) => {
    call.on('data', (res) => {
      // sequence echoes the request's; a uint64, so a string.
      if (res.result === 'ok') console.log(`${res.sequence} ok offset ${res.ok.position.offset}`);
      else console.log(`${res.sequence} refused ${res.error.code}: ${res.error.message}`);
    });
    call.on('error', reject); // the whole stream failed (UNAVAILABLE, UNAUTHENTICATED…)
    call.on('end', resolve);
  });
  for (const [i, publish] of messages.entries()) {
    // Give publications idempotency keys if you resend what was not
    // acknowledged after a broken stream: a key publishes nothing twice.
    if (!call.write({ publish, sequence: i + 1 })) await once(call, 'drain'); // backpressure
  }
  call.end(); // no more requests: the node answers what it has, then ends
  await done;
  client.close();
}

main().catch((err) => {
  console.error(`stream failed: ${grpc.status[err.code] ?? ''} ${err.details ?? err.message}`);
  process.exit(1);
});
