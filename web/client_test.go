package web_test

import (
	"net/http/httptest"
	"strconv"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/herald-io/herald/web"
)

// clientProtocolScript runs herald.js against a scripted fake WebSocket, to
// reach what a healthy server rarely does: duplicates and early
// publications around a resume, epoch changes, advice in DisconnectFrame,
// error replies, token refresh. It throws on the first wrong step. It is
// called with the format ("json" or "protobuf") the client and the fake
// server speak.
const clientProtocolScript = `(async (fmt) => {
  const { Herald, HeraldError, formats } = await import("/herald.js");
  const wire = formats[fmt];
  const sockets = [];
  class FakeWS {
    constructor(url, protocol) {
      this.url = url;
      this.protocol = protocol;
      this.readyState = 0;
      this.sent = [];
      sockets.push(this);
      setTimeout(() => { this.readyState = 1; this.onopen?.({}); });
    }
    send(m) { this.sent.push(...wire.decode(m, "ClientFrame", (err) => { throw err; })); }
    close(code) {
      if (this.readyState >= 2) return;
      this.readyState = 3;
      setTimeout(() => this.onclose?.({ code: code ?? 1005, reason: "" }));
    }
    // Test side: frames packed in one message, as the bridge may do.
    push(...frames) {
      const m = wire.pack(frames.map((f) => wire.encode(f, "ServerFrame")));
      this.onmessage?.({ data: fmt === "json" ? m : m.slice().buffer });
    }
    drop(code, reason = "") { this.readyState = 3; this.onclose?.({ code, reason }); }
  }
  const until = async (what, cond) => {
    for (let i = 0; i < 1000; i++) {
      const v = cond();
      if (v) return v;
      await new Promise((r) => setTimeout(r, 2));
    }
    throw new Error("timed out waiting for " + what);
  };
  const eq = (got, want, what) => {
    if (JSON.stringify(got) !== JSON.stringify(want)) {
      throw new Error(what + ": got " + JSON.stringify(got) + ", want " + JSON.stringify(want));
    }
  };
  // sent waits for the client's next frame of a kind on socket i.
  const sent = (i, kind) => until(kind + " on socket " + i, () => sockets[i]?.sent.find((f) => kind in f && !f.seen && (f.seen = true)));
  const connect = async (i, extra = {}) => {
    const f = await sent(i, "connect");
    sockets[i].push({ id: f.id, connect: { client: "c" + i, user: "u", ping_interval: 25, ...extra } });
    return f;
  };

  const h = new Herald("ws://fake/ws", { WebSocket: FakeWS, format: fmt, minReconnectDelay: 1, maxReconnectDelay: 5 });
  const states = [];
  h.on("state", (c) => states.push(c.state));
  const got = [];
  const subs = [];
  const sub = h.subscribe("chat:x", { onPublication: (p) => got.push(p.epoch + "/" + p.offset), onSubscribed: (c) => subs.push(c) });
  h.connect();
  eq(sockets[0].url, "ws://fake/ws", "url");
  eq(sockets[0].protocol, fmt === "json" ? "herald.json" : "herald.proto", "subprotocol");
  eq(sockets[0].binaryType, fmt === "json" ? undefined : "arraybuffer", "binaryType");
  const c0 = await connect(0);
  // Protobuf leaves out what is empty.
  eq(c0.connect, fmt === "json" ? { token: "", name: "herald-js/1" } : { name: "herald-js/1" }, "connect frame");
  eq(h.format, fmt, "format");
  eq(h.state, "connected", "state");

  // First subscribe: no since. A publication that overtakes the reply is
  // held back and deduplicated against the reply's position.
  let s = await sent(0, "subscribe");
  eq(s.subscribe, { channel: "chat:x" }, "first subscribe");
  const pub = (offset, epoch = "e1", n = offset) => ({ pub: { channel: "chat:x", offset: String(offset), epoch, data: { n } } });
  sockets[0].push(pub(5), pub(6));
  sockets[0].push({ id: s.id, subscribe: { channel: "chat:x", position: { offset: "5", epoch: "e1" }, recoverable: true } }, pub(6), pub(7), pub(7));
  await until("6 and 7", () => got.length >= 2);
  eq(got, ["e1/6", "e1/7"], "live, each once");
  eq(subs[0].resubscribed, false, "first subscribed");

  // The personal channel: subscribed by the server, surfaced as client
  // events.
  const personal = [];
  h.on("subscribed", (c) => personal.push(c.channel));
  h.on("publication", (p) => personal.push(p.channel + "#" + p.offset + ":" + p.data.hi));
  sockets[0].push({ subscribed: { channel: "user:u", position: { offset: "0", epoch: "p" }, recoverable: true } },
    { pub: { channel: "user:u", offset: "1", epoch: "p", data: { hi: "you" } } });
  eq(personal, ["user:u", "user:u#1:you"], "personal channel");

  // An error reply rejects the request with the server's code.
  const p = h.publish("chat:x", { a: 1 });
  const pf = await sent(0, "publish");
  eq(pf.publish, fmt === "json" ? { channel: "chat:x", data: { a: 1 } } : { channel: "chat:x", json: '{"a":1}' }, "publish frame");
  sockets[0].push({ id: pf.id, error: { code: 104, message: "denied", temporary: false } });
  const err = await p.catch((e) => e);
  eq([err instanceof HeraldError, err.code, err.message], [true, 104, "denied"], "error reply");

  // The bridge restarts: DisconnectFrame advises reconnecting; the client
  // resumes from 7 and drops the replayed duplicate.
  sockets[0].push({ disconnect: { code: 4006, reason: "shutdown", reconnect: true, reconnect_delay_ms: 1 } });
  sockets[0].drop(4006, "shutdown");
  eq(sub.state, "subscribing", "waiting to resubscribe");
  await connect(1);
  s = await sent(1, "subscribe");
  eq(s.subscribe, { channel: "chat:x", since: { offset: "7", epoch: "e1" } }, "resume");
  sockets[1].push({ id: s.id, subscribe: { channel: "chat:x", position: { offset: "9", epoch: "e1" }, recovered: true, recoverable: true } }, pub(7), pub(8), pub(9));
  await until("8 and 9", () => got.length >= 4);
  eq(got.slice(2), ["e1/8", "e1/9"], "recovered, each once");
  eq([subs[1].resubscribed, subs[1].recovered], [true, true], "recovered");
  eq(sub.position, { offset: 9, epoch: "e1" }, "position");

  // A silent drop (no DisconnectFrame): reconnect anyway. History is gone
  // (new epoch): recovered false, and the stream continues in the new epoch.
  sockets[1].drop(1006);
  await connect(2);
  s = await sent(2, "subscribe");
  eq(s.subscribe.since, { offset: "9", epoch: "e1" }, "resume again");
  sockets[2].push({ id: s.id, subscribe: { channel: "chat:x", position: { offset: "3", epoch: "e2" }, recovered: false, recoverable: true } }, pub(3, "e2"), pub(4, "e2"));
  await until("e2/4", () => got.length >= 5);
  eq(got.slice(4), ["e2/4"], "after an unrecoverable gap");
  eq([subs[2].resubscribed, subs[2].recovered], [true, false], "not recovered");

  // The server ends the subscription.
  sockets[2].push({ unsubscribed: { channel: "chat:x", reason: "backend" } });
  eq([sub.state, h.getSubscription("chat:x")], ["unsubscribed", undefined], "server unsubscribe");

  // The backend disconnects the user for good: no reconnect.
  sockets[2].push({ disconnect: { code: 4005, reason: "banned", reconnect: false } });
  sockets[2].drop(4005, "banned");
  eq(h.state, "disconnected", "after reconnect:false");
  eq(sockets.length, 3, "no new socket");
  eq(states, ["connecting", "connected", "connecting", "connected", "connecting", "connected", "disconnected"], "states");

  // A close code that means "don't retry", without a DisconnectFrame.
  const h2 = new Herald("ws://fake/ws", { WebSocket: FakeWS, format: fmt });
  h2.connect();
  await connect(3);
  sockets[3].drop(4001, "invalid token");
  eq(h2.state, "disconnected", "after 4001");

  // Token refresh ahead of expiry, and a fresh token on reconnect.
  let n = 0;
  const h3 = new Herald("ws://fake/ws", { WebSocket: FakeWS, format: fmt, getToken: async () => "t" + ++n, minReconnectDelay: 1 });
  h3.connect();
  const c4 = await connect(4, { expires_in: 1 });
  eq(c4.connect.token, "t1", "token from getToken");
  const r = await sent(4, "refresh");
  eq(r.refresh, { token: "t2" }, "refresh frame");
  sockets[4].push({ id: r.id, refresh: { expires_in: 3600 } });
  sockets[4].drop(4009, "no pong");
  const c5 = await connect(5);
  eq(c5.connect.token, "t3", "fresh token on reconnect");
  h3.disconnect();
  eq(h3.state, "disconnected", "client disconnect");

  // A quiet connection is pinged; an unanswered ping means a dead
  // connection: drop it and reconnect.
  const h4 = new Herald("ws://fake/ws", { WebSocket: FakeWS, format: fmt, pingInterval: 20, timeout: 100, minReconnectDelay: 1 });
  const why = [];
  h4.on("connecting", (c) => why.push(c.reason));
  h4.connect();
  await connect(6);
  await sent(6, "ping");
  await connect(7);
  eq(why, ["connect called", "ping timeout"], "reconnect after a lost pong");
  const ping = await sent(7, "ping");
  sockets[7].push({ id: ping.id, pong: {} });
  eq(h4.state, "connected", "pong answered");
  h4.disconnect();

  // Personal channel resume: after a drop, a reconnect of the same user
  // (the token's sub) sends personal_since; the replayed duplicate is
  // dropped; a token for another user sends none.
  const jwt = (sub) => "h." + btoa(JSON.stringify({ sub })).replace(/=+$/, "").replace(/\+/g, "-").replace(/\//g, "_") + ".s";
  const tokens = [jwt("u"), jwt("u"), jwt("v")];
  const h5 = new Herald("ws://fake/ws", { WebSocket: FakeWS, format: fmt, getToken: async () => tokens.shift(), minReconnectDelay: 1 });
  const mine = [];
  h5.on("subscribed", (c) => mine.push("s:" + c.position.offset + ":" + c.recovered + ":" + c.resubscribed));
  h5.on("publication", (p) => mine.push(p.offset));
  h5.connect();
  const c8 = await connect(8);
  eq(c8.connect.personal_since, undefined, "no personal_since at first");
  const ppub = (offset) => ({ pub: { channel: "user:u", offset: String(offset), epoch: "p", data: {} } });
  sockets[8].push({ subscribed: { channel: "user:u", position: { offset: "2", epoch: "p" }, recoverable: true } }, ppub(2), ppub(3));
  sockets[8].drop(1006);
  const c9 = await connect(9);
  eq(c9.connect.personal_since, { offset: "3", epoch: "p" }, "personal_since on reconnect");
  sockets[9].push({ subscribed: { channel: "user:u", position: { offset: "5", epoch: "p" }, recovered: true, recoverable: true } }, ppub(3), ppub(4), ppub(5));
  eq(mine, ["s:2:false:false", 3, "s:5:true:true", 4, 5], "personal recovered, each once");
  sockets[9].drop(1006);
  const c10 = await connect(10);
  eq(c10.connect.personal_since, undefined, "no personal_since for another user");
  h5.disconnect();
  return true;
})`

// TestClientProtocol checks herald.js's side of the protocol against a
// scripted server, in the browser, in both formats.
func TestClientProtocol(t *testing.T) {
	ctx := newBrowser(t)
	srv := httptest.NewServer(web.Handler())
	t.Cleanup(srv.Close)
	if err := chromedp.Do(ctx, chromedp.Navigate(srv.URL+"/herald.d.ts")); err != nil {
		t.Fatal(err)
	}
	for _, f := range formatNames {
		t.Run(f, func(t *testing.T) {
			eval[bool](t, ctx, clientProtocolScript+"("+strconv.Quote(f)+")")
		})
	}
}
