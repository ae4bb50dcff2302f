// The console at "/": a Herald client you can drive by hand (subscribe,
// watch publications with their offsets, publish JSON, history, presence)
// and a chat room on chat:lobby that several tabs share. It uses only the
// public API of herald.js, so it is also an example of it.
//
// Query parameters: ?channel=chat:room2 (the chat channel), ?name=alice,
// ?token=JWT, ?connect=0 (don't connect on load), ?transport=sse (or
// http_stream, websocket; several separated by commas: the transports to
// try, in order).

import { Herald } from "/herald.js";

const params = new URLSearchParams(location.search);
const chatChannel = params.get("channel") || "chat:lobby";
const $ = (/** @type {string} */ id) => /** @type {HTMLElement} */ (document.getElementById(id));

/**
 * Creates an element; children are nodes or text (never parsed as HTML).
 * @param {string} tag
 * @param {Record<string, string>} [attrs]
 * @param {...(Node | string)} children
 */
function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  e.append(...children);
  return e;
}

const time = () => new Date().toLocaleTimeString();
const shortEpoch = (/** @type {string} */ e) => (e ? e.slice(0, 8) : "-");

/** @param {string} text @param {string} [kind] */
function logEvent(text, kind = "") {
  const log = $("event-log");
  log.prepend(el("li", { class: kind }, el("time", {}, time()), " ", text));
  while (log.childElementCount > 200) log.lastElementChild?.remove();
}

// ---- connection ----

/** @type {Herald | null} */
let herald = null;
/** Channels subscribed in the console, re-made when reconnecting with new settings. */
const consoleChannels = new Set([chatChannel]);

function start() {
  herald?.disconnect();
  const url = /** @type {HTMLInputElement} */ ($("url")).value.trim() || "/ws";
  const token = /** @type {HTMLInputElement} */ ($("token")).value.trim();
  const transports = params.get("transport")?.split(",").filter(Boolean);
  const h = new Herald(url, transports?.length ? { token, transports: /** @type {any} */ (transports) } : { token });
  herald = h;
  // @ts-ignore: for devtools and tests
  window.herald = h;
  h.on("state", (ctx) => {
    if (h !== herald) return;
    const s = $("state");
    s.textContent = ctx.state;
    s.className = `state ${ctx.state}`;
    $("whoami").textContent = ctx.state === "connected" ? `${h.user || "anonymous"} · ${h.client} · ${h.transport}` : "";
  });
  h.on("connecting", (ctx) => {
    if (ctx.code || ctx.delay !== undefined) {
      logEvent(`connection lost (${ctx.code || "-"} ${ctx.reason}); retrying in ${((ctx.delay ?? 0) / 1000).toFixed(1)}s`, "warn");
    } else {
      logEvent(`connecting to ${h.url}`);
    }
  });
  h.on("connected", (ctx) => logEvent(`connected as ${ctx.user || "anonymous"} (client ${ctx.client}${ctx.expiresIn ? `, token expires in ${ctx.expiresIn}s` : ""})`, "ok"));
  h.on("disconnected", (ctx) => logEvent(`disconnected (${ctx.code || "-"} ${ctx.reason})`, "bad"));
  h.on("error", (ctx) => logEvent(`${ctx.type} error: ${errText(ctx.error)}`, "bad"));
  h.on("subscribed", (ctx) => logEvent(`server subscribed this connection to ${ctx.channel}`));
  h.on("publication", (pub) => logEvent(`${pub.channel} #${pub.offset}: ${payloadText(pub)}`, "ok"));

  $("channels").replaceChildren();
  chat.reset();
  for (const ch of consoleChannels) addChannel(h, ch);
  h.connect();
}

/** @param {unknown} e */
const errText = (e) => (e instanceof Error ? e.message : String(e));

/** @param {import("./herald").Publication} pub */
function payloadText(pub) {
  if (pub.binary) return `<${pub.binary.length} bytes>`;
  return JSON.stringify(pub.data);
}

// ---- chat ----

const chat = {
  /** Offsets shown, so history and live publications never show twice. */
  seen: new Set(),
  /** @type {Map<string, string>} client id → label */
  who: new Map(),

  reset() {
    this.seen.clear();
    this.who.clear();
    $("chat-log").replaceChildren();
    this.renderWho();
    $("chat-notice").hidden = true;
  },

  /**
   * @param {import("./herald").Publication} pub
   * @param {boolean} [older] history: insert before the live ones
   */
  add(pub, older = false) {
    const key = pub.offset ? `${pub.epoch}:${pub.offset}` : "";
    if (key && this.seen.has(key)) return;
    if (key) this.seen.add(key);
    const d = /** @type {any} */ (pub.data);
    const isMsg = d && typeof d === "object" && typeof d.text === "string";
    const name = isMsg ? String(d.user || "someone") : "raw";
    const li = el("li", { class: "msg", "data-offset": String(pub.offset) },
      el("span", { class: "who" }, name),
      el("span", { class: "text" }, isMsg ? d.text : payloadText(pub)),
      el("span", { class: "meta" }, pub.offset ? `#${pub.offset}` : ""));
    if (name === myName()) li.classList.add("mine");
    const log = $("chat-log");
    if (older) {
      // History comes newest first; each older item goes above the rest.
      log.prepend(li);
    } else {
      log.append(li);
      log.scrollTop = log.scrollHeight;
    }
  },

  /** @param {string} text @param {string} kind */
  notice(text, kind) {
    const n = $("chat-notice");
    n.textContent = text;
    n.className = `notice ${kind}`;
    n.hidden = false;
  },

  /**
   * Loads recent history up to the subscription's start position, so the
   * room is not empty on arrival and is refilled after an unrecoverable gap.
   * @param {import("./herald").Subscription} sub
   * @param {import("./herald").StreamPosition} upTo
   */
  async loadHistory(sub, upTo) {
    try {
      const page = await sub.history({ limit: 50, reverse: true });
      for (const pub of page.publications) {
        if (pub.epoch === upTo.epoch && pub.offset <= upTo.offset) this.add(pub, true);
      }
    } catch (err) {
      logEvent(`history of ${sub.channel}: ${errText(err)}`, "warn");
    }
  },

  /**
   * Joins and leaves received while a presence snapshot is fetched: the
   * snapshot may be older than them, so they are applied again on top of
   * it. Null when no fetch is under way.
   * @type {{ client: string, label: string, join: boolean }[] | null}
   */
  pending: null,

  /**
   * Replaces the list with the channel's presence, then the events that
   * came meanwhile. Called at every (re)subscription, since events may
   * have been missed while the connection or the server's continuity was
   * lost.
   * @param {import("./herald").Subscription} sub
   */
  async loadPresence(sub) {
    /** @type {{ client: string, label: string, join: boolean }[]} */
    const pending = [];
    this.pending = pending;
    try {
      const clients = await sub.presence();
      if (this.pending !== pending) return; // a newer fetch is under way
      this.who.clear();
      for (const c of clients) this.who.set(c.client, whoLabel(c));
      for (const ev of pending) {
        if (ev.join) this.who.set(ev.client, ev.label);
        else this.who.delete(ev.client);
      }
      this.renderWho();
    } catch (err) {
      logEvent(`presence of ${sub.channel}: ${errText(err)}`, "warn");
    } finally {
      if (this.pending === pending) this.pending = null;
    }
  },

  /** @param {{ client: string, user?: string }} ev @param {boolean} join */
  presenceEvent(ev, join) {
    const label = whoLabel(ev);
    this.pending?.push({ client: ev.client, label, join });
    if (join) this.who.set(ev.client, label);
    else this.who.delete(ev.client);
    this.renderWho();
  },

  renderWho() {
    const items = [...this.who].map(([id, label]) => el("li", { "data-client": id, class: id === herald?.client ? "me" : "" }, label));
    $("chat-who").replaceChildren(...items);
    $("chat-count").textContent = `(${this.who.size})`;
  },

  /** @param {import("./herald").Subscription} sub */
  attach(sub) {
    sub.on("subscribed", (ctx) => {
      if (!ctx.resubscribed) {
        this.loadHistory(sub, ctx.position);
      } else if (ctx.recovered) {
        this.notice(`Reconnected at ${time()}: missed messages recovered.`, "ok");
      } else {
        this.reset();
        this.notice(`Reconnected at ${time()}: missed messages could not be recovered; reloaded recent history.`, "warn");
        this.loadHistory(sub, ctx.position);
      }
      this.loadPresence(sub);
    });
    sub.on("publication", (pub) => this.add(pub));
    sub.on("join", (ev) => this.presenceEvent(ev, true));
    sub.on("leave", (ev) => this.presenceEvent(ev, false));
  },
};

/** @param {{ client: string, user?: string }} c */
function whoLabel(c) {
  return c.user || `anonymous ${c.client.slice(0, 6)}`;
}

function myName() {
  return /** @type {HTMLInputElement} */ ($("chat-name")).value.trim() || "guest";
}

// ---- console channels ----

/**
 * Subscribes to channel and adds its block: a live feed with offsets and
 * epochs, publish, history and presence.
 * @param {Herald} h
 * @param {string} channel
 */
function addChannel(h, channel) {
  if (h.getSubscription(channel)) return;
  consoleChannels.add(channel);
  const feed = el("ol", { class: "feed" });
  const status = el("span", { class: "sub-state" }, "subscribing");
  const pos = el("span", { class: "pos muted" });
  const presence = el("ul", { class: "presence" });
  const input = /** @type {HTMLTextAreaElement} */ (el("textarea", { rows: "2", spellcheck: "false", "aria-label": "JSON to publish" }));
  input.value = channel === chatChannel ? JSON.stringify({ user: myName(), text: "hello from the console" }) : '{"hello": "world"}';
  const line = (/** @type {string} */ cls, /** @type {(Node|string)[]} */ ...parts) => {
    feed.append(el("li", { class: cls }, el("time", {}, time()), " ", ...parts));
    while (feed.childElementCount > 500) feed.firstElementChild?.remove();
    feed.scrollTop = feed.scrollHeight;
  };

  const sub = h.subscribe(channel, {
    onSubscribed(ctx) {
      status.textContent = "subscribed";
      status.className = "sub-state ok";
      if (!ctx.resubscribed) line("note", `subscribed at offset ${ctx.position.offset}, epoch ${shortEpoch(ctx.position.epoch)}${ctx.recoverable ? "" : " (no history: not recoverable)"}`);
      else if (ctx.recovered) line("note ok", "resubscribed: recovered, missed publications follow");
      else line("note warn", `resubscribed: missed publications could not be recovered (now at offset ${ctx.position.offset}, epoch ${shortEpoch(ctx.position.epoch)})`);
      showPos();
    },
    onPublication(pub) {
      const li = el("li", { class: "pub", "data-offset": String(pub.offset), "data-epoch": pub.epoch },
        el("time", {}, time()), " ",
        el("span", { class: "off" }, `#${pub.offset}`), " ",
        el("span", { class: "epoch" }, shortEpoch(pub.epoch)), " ",
        el("code", {}, payloadText(pub)));
      if (pub.publisher) li.title = `from ${pub.publisher.user || "anonymous"} (${pub.publisher.client})`;
      feed.append(li);
      feed.scrollTop = feed.scrollHeight;
      showPos();
    },
    onJoin: (ev) => line("join", `→ joined: ${ev.user || "anonymous"} (${ev.client})`),
    onLeave: (ev) => line("leave", `← left: ${ev.user || "anonymous"} (${ev.client})`),
    onUnsubscribed(ctx) {
      status.textContent = "unsubscribed";
      status.className = "sub-state bad";
      line("note bad", `unsubscribed: ${ctx.reason}`);
    },
    onError: (err) => line("note bad", `subscribe failed: ${err.message} (code ${err.code})`),
  });
  const offConnecting = h.on("connecting", () => {
    if (sub.state !== "unsubscribed") {
      status.textContent = "waiting";
      status.className = "sub-state warn";
    }
  });
  if (channel === chatChannel) chat.attach(sub);

  function showPos() {
    const p = sub.position;
    pos.textContent = p ? `offset ${p.offset} · epoch ${shortEpoch(p.epoch)}` : "";
  }

  const button = (/** @type {string} */ label, /** @type {() => void} */ fn, cls = "") => {
    const b = el("button", { type: "button", class: cls }, label);
    b.addEventListener("click", fn);
    return b;
  };
  const publishForm = el("form", { class: "row publish" }, input, el("button", { type: "submit" }, "Publish"));
  publishForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    let data;
    try {
      data = JSON.parse(input.value);
    } catch (err) {
      line("note bad", `not JSON: ${errText(err)}`);
      return;
    }
    try {
      const res = await sub.publish(data);
      line("note", `published at #${res.offset}${res.duplicate ? " (duplicate)" : ""}`);
    } catch (err) {
      line("note bad", `publish failed: ${errText(err)}`);
    }
  });

  const block = el("article", { class: "channel", "data-channel": channel },
    el("header", {},
      el("h3", {}, channel), status, pos,
      el("span", { class: "grow" }),
      button("History", async () => {
        try {
          const page = await sub.history({ limit: 20, reverse: true });
          line("note", `history: ${page.publications.length} newest of position #${page.position.offset} (epoch ${shortEpoch(page.position.epoch)})`);
          for (const p of page.publications.reverse()) line("hist", el("span", { class: "off" }, `#${p.offset}`), " ", el("code", {}, payloadText(p)));
        } catch (err) {
          line("note bad", `history: ${errText(err)}`);
        }
      }),
      button("Presence", async () => {
        try {
          const [clients, stats] = await Promise.all([sub.presence(), sub.presenceStats()]);
          presence.replaceChildren(...clients.map((c) => el("li", {}, `${c.user || "anonymous"} (${c.client})`)));
          line("note", `presence: ${stats.clients} connection(s), ${stats.users} user(s)`);
        } catch (err) {
          line("note bad", `presence: ${errText(err)}`);
        }
      }),
      button("Clear", () => feed.replaceChildren()),
      button("Unsubscribe", () => {
        sub.unsubscribe();
        offConnecting();
        consoleChannels.delete(channel);
        block.remove();
      }, "danger")),
    feed, presence, publishForm);
  $("channels").append(block);
}

// ---- wiring ----

const nameInput = /** @type {HTMLInputElement} */ ($("chat-name"));
nameInput.value = params.get("name") || sessionStorage.getItem("herald.name") || `guest-${Math.floor(Math.random() * 9000 + 1000)}`;
nameInput.addEventListener("change", () => sessionStorage.setItem("herald.name", myName()));
sessionStorage.setItem("herald.name", myName());
$("chat-channel").textContent = chatChannel;
/** @type {HTMLInputElement} */ ($("token")).value = params.get("token") || "";

$("connect-form").addEventListener("submit", (e) => {
  e.preventDefault();
  start();
});
$("disconnect").addEventListener("click", () => herald?.disconnect());

$("chat-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const input = /** @type {HTMLInputElement} */ ($("chat-text"));
  const text = input.value.trim();
  if (!text || !herald) return;
  input.value = "";
  try {
    await herald.publish(chatChannel, { user: myName(), text });
  } catch (err) {
    chat.notice(`Not sent: ${errText(err)}`, "bad");
    input.value = text;
  }
});

$("sub-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const input = /** @type {HTMLInputElement} */ ($("sub-channel"));
  const channel = input.value.trim();
  if (!channel || !herald) return;
  addChannel(herald, channel);
  input.value = "";
});

$("curl-example").textContent =
  `curl -X POST ${location.origin}/v1/channels/${chatChannel}/publish \\\n  -d '{"data":{"user":"backend","text":"hi"}}'\n\n` +
  `grpcurl -plaintext -d '{"channel":"${chatChannel}","data":{"user":"grpc","text":"hi"}}' \\\n  localhost:7400 herald.v1.HeraldService/Publish`;

if (params.get("connect") !== "0") start();
