// publish.js: publish JSON to a channel, exactly as written.
//
//   node publish.js [channel]
'use strict';

const { connect, grpc } = require('./connect');

const { client, metadata } = connect();
const channel = process.argv[2] || 'news';

const publish = (req) =>
  new Promise((resolve, reject) => client.Publish(req, metadata, (err, res) => (err ? reject(err) : resolve(res))));

async function main() {
  // The way to publish JSON: its text in `json`. Every reader gets this
  // text as it is: 12345678901234567891, 10.0 and the key order survive
  // (JSON.stringify of a JavaScript value would already have lost them).
  const ack = await publish({
    channel,
    json: '{"order":12345678901234567891,"total":10.0,"status":"paid"}',
    idempotency_key: 'order-12345678901234567891-paid', // a retry with this key publishes nothing twice
  });
  // offset is a uint64: a string, as `longs: String` asks.
  console.log(`json: offset ${JSON.stringify(ack.position.offset)} epoch ${ack.position.epoch}`);

  // The trap: `data` is a google.protobuf.Value, whose fields protobufjs
  // names in camelCase (stringValue) even with keepCase. A plain object
  // ({status: 'paid'}) or snake_case names are dropped without a word, and
  // an empty Value goes out; Herald refuses it rather than publish null.
  try {
    await publish({ channel, data: { struct_value: { fields: { status: { string_value: 'paid' } } } } });
  } catch (err) {
    console.log(`data with snake_case names: ${grpc.status[err.code]}: ${err.details}`);
  }

  // If you must send a Value, build it with camelCase names. It is lossy:
  // numbers become doubles and keys are sorted (see the history below).
  const ack2 = await publish({ channel, data: toValue({ status: 'paid', total: 10.0, order: 42 }) });
  console.log(`data as a Value: offset ${JSON.stringify(ack2.position.offset)}`);

  // What readers get: the exact text of each JSON payload, in `json`.
  const since = { offset: String(BigInt(ack.position.offset) - 1n), epoch: ack.position.epoch };
  const history = await new Promise((resolve, reject) =>
    client.History({ channel, since, limit: 10 }, metadata, (err, res) => (err ? reject(err) : resolve(res))));
  for (const pub of history.publications) console.log(`history: ${pub.offset} ${pub.json}`);
  client.close();
}

// toValue turns a JavaScript value into a google.protobuf.Value as
// protobufjs's bundled struct.proto spells it.
function toValue(v) {
  if (v === null) return { nullValue: 'NULL_VALUE' };
  if (Array.isArray(v)) return { listValue: { values: v.map(toValue) } };
  switch (typeof v) {
    case 'number': return { numberValue: v };
    case 'string': return { stringValue: v };
    case 'boolean': return { boolValue: v };
    case 'object': return { structValue: { fields: Object.fromEntries(Object.entries(v).map(([k, x]) => [k, toValue(x)])) } };
  }
  throw new TypeError(`not a JSON value: ${typeof v}`);
}

main().catch((err) => {
  console.error(`publish failed: ${grpc.status[err.code] ?? ''} ${err.details ?? err.message}`);
  process.exit(1);
});
