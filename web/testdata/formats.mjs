// Driven by TestFormats (format_test.go): reads a JSON job on stdin, made
// by Go with the server's own encoders, and prints one JSON result.
//
//   node formats.mjs /path/to/herald.js < job.json
//
// The job's server frames are protobuf (base64) and herald.json text, as
// the bridge writes them. The script decodes them with herald.js's
// formats, encodes client frames for Go to decode with proto.Unmarshal,
// and runs one scripted session per format through the public API, so that
// Go can check that both formats give the same publications, replies and
// events.

const { Herald, formats } = await import(new URL(process.argv[2], "file:///").href);

const job = JSON.parse(await new Response(process.stdin).text());
const b64 = (/** @type {Uint8Array} */ b) => Buffer.from(b).toString("base64");
const unb64 = (/** @type {string} */ s) => new Uint8Array(Buffer.from(s, "base64"));
// Frame objects as protobuf JSON: bytes in base64, as protojson writes them.
const asJSON = (/** @type {unknown} */ v) => JSON.parse(JSON.stringify(v, (_k, x) => (x instanceof Uint8Array ? b64(x) : x)));
const pb = formats.protobuf;

/** @param {Uint8Array | string} message */
function decodeAll(message, type = "ServerFrame") {
  const errors = [];
  const frames = pb.decode(message, type, (err) => errors.push(String(err)));
  return { frames: asJSON(frames), errors };
}

const out = {};

// Part 1: every server frame, decoded alone.
out.decoded = job.decode.map((c) => ({ name: c.name, ...decodeAll(unb64(c.message)) }));

// Part 2: all of them packed in one message with heartbeats between, and
// the same bytes read as an HTTP stream arriving in small chunks.
const packed = unb64(job.packed);
out.packed = decodeAll(packed);
const streamed = { frames: [], errors: [] };
const push = pb.reader((m) => {
  const r = decodeAll(m);
  streamed.frames.push(...r.frames);
  streamed.errors.push(...r.errors);
});
for (let i = 0, n = 1; i < packed.length; i += n, n = (n % 7) + 1) push(packed.subarray(i, i + n));
out.streamed = streamed;

// Part 3: broken messages: what comes before the damage is kept.
out.malformed = job.malformed.map((c) => ({ name: c.name, ...decodeAll(unb64(c.message)) }));

// Part 4: client frames encoded here, decoded by Go.
const max64 = "18446744073709551615";
const clientFrames = {
  connect: { id: 1, connect: { token: "eyJ.x.y", name: "herald-js/1", personal_since: { offset: max64, epoch: "9f1c2a7b.2dadb4" } } },
  refresh: { id: 4294967295, refresh: { token: "t2" } },
  subscribe: { id: 3, subscribe: { channel: "chat:lobby", since: { offset: "9007199254740993", epoch: "e1" } } },
  subscribeNumber: { id: 4, subscribe: { channel: "chat:n", since: { offset: 2 ** 60, epoch: "é" } } },
  unsubscribe: { id: 5, unsubscribe: { channel: "chat:lobby" } },
  publishJSON: { id: 6, publish: { channel: "chat:x", json: '{"id":12345678901234567891,"z":1,"a":"\u00e9\ud83d\ude00\u2028"}', idempotency_key: "m-1" } },
  publishBinary: { id: 7, publish: { channel: "files:1", binary: new Uint8Array([0, 1, 2, 253, 254, 255]) } },
  publishEmptyBinary: { id: 8, publish: { channel: "files:1", binary: new Uint8Array(0) } },
  publishValue: { id: 9, publish: { channel: "chat:x", data: { b: [1.5, -2, true, null, "x"], a: { n: 1e300 } } } },
  publishNullValue: { id: 10, publish: { channel: "chat:x", data: null } },
  history: { id: 11, history: { channel: "chat:x", since: { offset: "15", epoch: "e1" }, limit: 1000, reverse: true } },
  presence: { id: 12, presence: { channel: "chat:x" } },
  presenceStats: { id: 13, presence_stats: { channel: "chat:x" } },
  ping: { id: 14, ping: {} },
};
// For protojson, an offset beyond 2^53 given as a number goes as its exact
// decimal string (JSON.stringify(2 ** 60) is "1152921504606847000").
const offsetText = (/** @type {string} */ k, /** @type {unknown} */ x) => (k === "offset" && typeof x === "number" ? BigInt(x).toString() : x);
out.encoded = Object.entries(clientFrames).map(([name, frame]) => ({ name, json: JSON.stringify(asJSON(frame), offsetText), proto: b64(pb.encode(frame)) }));
out.encodeErrors = [
  { id: 1, subscribe: { channel: "x", since: { offset: "18446744073709551616" } } },
  { id: 1, subscribe: { channel: "x", since: { offset: -1 } } },
  { id: 1, subscribe: { channel: "x", since: { offset: "1e3" } } },
  { id: 2 ** 32, ping: {} },
  { id: 1, publish: { channel: "x", binary: "AAE=" } },
  { id: 1, publsh: { channel: "x" } },
].map((frame) => {
  try {
    pb.encode(frame);
    return "encoded";
  } catch (err) {
    return String(err);
  }
});

// Part 5: the same session through the public API, once per format.
const until = async (/** @type {string} */ what, /** @type {() => unknown} */ cond) => {
  for (let i = 0; i < 2000; i++) {
    const v = cond();
    if (v) return v;
    await new Promise((r) => setTimeout(r, 1));
  }
  throw new Error("timed out waiting for " + what);
};

/** A publication as the test compares it: bytes in base64, data also as text (key order). */
const view = (/** @type {any} */ p) => ({ ...p, binary: p.binary === undefined ? undefined : b64(p.binary), dataText: JSON.stringify(p.data) });

/**
 * @param {"json" | "protobuf"} format
 * @param {Record<string, string>} msgs the server's messages (herald.json text, or protobuf in base64)
 */
async function session(format, msgs) {
  const sockets = [];
  class FakeWS {
    constructor(url, protocol) {
      this.url = url;
      this.protocol = protocol;
      this.readyState = 0;
      this.sent = [];
      sockets.push(this);
      setTimeout(() => {
        this.readyState = 1;
        this.onopen?.({});
      });
    }
    send(m) {
      this.sent.push(m);
    }
    close() {
      this.readyState = 3;
    }
  }
  const deliver = (/** @type {string} */ name) => {
    const m = msgs[name];
    if (m === undefined) throw new Error("no message " + name);
    // As a browser hands them over: text, or an ArrayBuffer (binaryType).
    sockets[0].onmessage({ data: format === "json" ? m : unb64(m).slice().buffer });
  };
  const sentCount = (/** @type {number} */ n) => until(`${n} frames sent`, () => sockets[0]?.sent.length >= n);

  const r = { errors: [], pubs: [], subscribed: [], subErrors: [], personal: [], presenceEvents: [], unsubscribed: [], states: [] };
  const h = new Herald("ws://fake/ws", { WebSocket: FakeWS, format, timeout: 3000 });
  h.on("error", (e) => r.errors.push(e.type + ": " + String(e.error)));
  h.on("state", (c) => r.states.push(c.state + (c.code ? " " + c.code : "")));
  h.on("connected", (c) => (r.connected = c));
  h.on("subscribed", (c) => r.personal.push({ subscribed: c }));
  h.on("publication", (p) => r.personal.push(view(p)));
  h.subscribe("chat:x", {
    onPublication: (p) => r.pubs.push(view(p)),
    onSubscribed: (c) => r.subscribed.push(c),
    onJoin: (e) => r.presenceEvents.push({ join: e }),
    onLeave: (e) => r.presenceEvents.push({ leave: e }),
    onUnsubscribed: (c) => r.unsubscribed.push(c),
  });
  h.subscribe("chat:big", { since: { offset: 2 ** 60, epoch: "eb" }, onError: (e) => r.subErrors.push({ code: e.code, message: e.message }) });
  h.connect();
  r.binaryType = await until("the socket", () => sockets[0]) && sockets[0].binaryType;
  r.protocol = sockets[0].protocol;
  await sentCount(1);
  deliver("connect");
  await sentCount(3);
  deliver("subscribe");
  deliver("subscribeBig");
  deliver("pubs");
  deliver("personal");
  deliver("presenceEvents");
  const call = async (/** @type {number} */ n, /** @type {string} */ reply, /** @type {() => Promise<any>} */ fn) => {
    const p = fn();
    await sentCount(n);
    deliver(reply);
    return p;
  };
  r.history = await call(4, "history", () => h.history("chat:x", { since: { offset: 10, epoch: "e1" }, limit: 10, reverse: true }));
  r.history.publications = r.history.publications.map(view);
  r.presence = await call(5, "presence", () => h.presence("chat:x"));
  r.stats = await call(6, "stats", () => h.presenceStats("chat:x"));
  r.published = [
    await call(7, "publish7", () => h.publish("chat:x", { text: "hi", n: 1, "\u00e9": "\ud83d\ude00" }, { idempotencyKey: "k-1" })),
    await call(8, "publish8", () => h.publish("chat:x", '{"id": 12345678901234567891,\n "k" : [1.0, -0]}', { raw: true })),
    await call(9, "publish9", () => h.publish("chat:x", new Uint8Array([0, 1, 2, 255]))),
    await call(10, "publish10", () => h.publish("chat:x", new Uint8Array(0))),
  ];
  r.rawError = await h.publish("chat:x", "{not json", { raw: true }).then(() => "published", (e) => e.name);
  r.pong = typeof (await call(11, "pong", () => h.ping()));
  r.refused = await call(12, "error", () => h.publish("chat:x", 1)).then(
    () => null,
    (e) => ({ code: e.code, message: e.message, temporary: e.temporary }),
  );
  deliver("unsubscribed");
  deliver("disconnect");
  sockets[0].onclose({ code: 4005, reason: "" });
  r.format = h.format;
  r.sent = sockets[0].sent.map((m) => (typeof m === "string" ? m : b64(m)));
  return r;
}

// Part 6: damaged bytes never make decode (or the stream reader) throw,
// and what does not decode goes to onError as the decoder's own error (a
// TypeError or RangeError there would be a check the decoder lacks). Mutations of the packed
// message (flipped, dropped, inserted bytes, runs of varint continuation
// bytes, cuts), from a fixed seed.
let seed = 12345;
const rand = (/** @type {number} */ n) => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) >>> 8) % n;
out.fuzz = { runs: 0, thrown: [], frames: 0, errors: 0 };
for (let run = 0; run < 3000; run++) {
  const b = Array.from(packed.subarray(rand(packed.length), packed.length));
  for (let k = rand(8) + 1; k > 0; k--) {
    const at = rand(b.length + 1);
    const what = rand(5);
    if (what === 0) b[at] = rand(256);
    else if (what === 1) b.splice(at, 1);
    else if (what === 2) b.splice(at, 0, rand(256));
    else if (what === 3) b.length = at;
    else b.splice(at, 0, ...Array.from({ length: rand(11) + 1 }, () => 0x80 | rand(128))); // long varints
  }
  const m = new Uint8Array(b);
  const onError = (/** @type {unknown} */ err) => {
    out.fuzz.errors++;
    if (!String(err).startsWith("Error: herald: bad protobuf frame")) throw err;
  };
  try {
    out.fuzz.frames += pb.decode(m, "ServerFrame", onError).length;
    pb.decode(m, "ClientFrame", onError);
    const read = pb.reader((x) => pb.decode(x, "ServerFrame", onError));
    try {
      read(m);
    } catch (err) {
      // The reader may refuse a length beyond its bound: an Error of its own.
      if (!String(err).includes("herald:")) throw err;
    }
  } catch (err) {
    out.fuzz.thrown.push(String(err));
  }
  out.fuzz.runs++;
}

// The option: a name it does not know is refused at once; undefined is JSON.
out.options = [{ format: "xml" }, { format: "proto" }, { format: undefined }, {}].map((o) => {
  try {
    return new Herald("ws://fake/ws", o) && "ok";
  } catch (err) {
    return String(err);
  }
});

out.api = {};
for (const f of ["json", "protobuf"]) out.api[f] = asJSON(await session(f, job.api[f]));

process.stdout.write(JSON.stringify(out));
