// The console at "/": a Herald client you can drive by hand (subscribe,
// watch publications with their offsets, publish JSON, history, presence)
// and a chat room on chat:lobby that several tabs share. It uses only the
// public API of herald.js, so it is also an example of it.
//
// Query parameters: ?channel=chat:room2 (the chat channel), ?name=alice,
// ?token=JWT, ?connect=0 (don't connect on load), ?transport=sse (or
// http_stream, websocket; several separated by commas: the transports to
// try, in order).
//
// The Admin button opens an operator's view of the node (see "admin mode"
// below): it needs an API key of scope admin, typed into the page and kept
// in memory (or, if asked, in this tab's sessionStorage), never in a URL.

import { Herald, HeraldError } from "/herald.js";

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

/** The time now, or of a publication (its timeUnixMs; 0: unknown, now). */
const time = (/** @type {number} */ ms = 0) => (ms ? new Date(ms) : new Date()).toLocaleTimeString();
/** A <time> of a publication (its timeUnixMs), or of now. */
const timeEl = (/** @type {number} */ ms = 0) => el("time", ms ? { datetime: new Date(ms).toISOString() } : {}, time(ms));
const shortEpoch = (/** @type {string} */ e) => (e ? e.slice(0, 8) : "-");

/** @param {string} text @param {string} [kind] */
function logEvent(text, kind = "") {
  const log = $("event-log");
  const li = el("li", { class: kind }, el("time", {}, time()), " ", text);
  log.prepend(li);
  while (log.childElementCount > 200) log.lastElementChild?.remove();
  filterLog(li);
}

/**
 * Shows only the log lines that contain the filter's text (any case);
 * with a line, checks that one alone (it was just added).
 * @param {Element} [only]
 */
function filterLog(only) {
  const q = /** @type {HTMLInputElement} */ ($("log-filter")).value.trim().toLowerCase();
  const items = only ? [only] : [...$("event-log").children];
  for (const li of items) /** @type {HTMLElement} */ (li).hidden = q !== "" && !li.textContent?.toLowerCase().includes(q);
  const all = $("event-log").childElementCount;
  const shown = $("event-log").querySelectorAll("li:not([hidden])").length;
  $("log-count").textContent = q ? `${shown} of ${all}` : "";
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
  const format = /** @type {any} */ (params.get("format") || "json");
  const h = new Herald(url, transports?.length ? { token, format, transports: /** @type {any} */ (transports) } : { token, format });
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
  h.on("connected", (ctx) => suggestChannels(ctx.user));
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

/** Payload elements and their values, re-rendered when "pretty-print JSON" changes. */
const payloads = new WeakMap();

/**
 * A <code> showing a JSON value, compact or pretty-printed as the
 * "pretty-print JSON" box says.
 * @param {unknown} value
 * @param {string} [binary] shown instead for binary payloads
 */
function payloadEl(value, binary) {
  const code = el("code", { class: "payload" });
  payloads.set(code, { value, binary });
  renderPayload(code);
  return code;
}

/** @param {Element} code */
function renderPayload(code) {
  const p = payloads.get(code);
  if (!p) return;
  const pretty = /** @type {HTMLInputElement} */ ($("pretty-json")).checked;
  code.textContent = p.binary ?? JSON.stringify(p.value, null, pretty ? 2 : undefined);
}

/**
 * Fills the subscribe box's suggestions with channels that the default
 * configuration lets this connection subscribe to: anonymous connections
 * only namespaces with allow_anonymous (chat:…); a token's user also
 * namespaces with allow_subscribe, such as "" (news).
 * @param {string} user the connection's user ("" anonymous)
 */
function suggestChannels(user) {
  const names = user ? ["chat:room1", "news", "chat:random"] : ["chat:room1", "chat:random"];
  $("channel-suggestions").replaceChildren(...names.map((n) => el("option", { value: n })));
  $("sub-hint").textContent = user
    ? `As ${user}: channels your token's channels claim grants, your own user:${user}, and namespaces with allow_subscribe (by default chat:… and names without a prefix, like news).`
    : "Anonymous: only namespaces with allow_subscribe and allow_anonymous (by default chat:…). A token also opens names without a prefix, like news.";
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
  const line = (/** @type {string} */ cls, /** @type {(Node|string)[]} */ ...parts) => lineAt(0, cls, ...parts);
  const lineAt = (/** @type {number} */ ms, /** @type {string} */ cls, /** @type {(Node|string)[]} */ ...parts) => {
    feed.append(el("li", { class: cls }, timeEl(ms), " ", ...parts));
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
        timeEl(pub.timeUnixMs), " ",
        el("span", { class: "off" }, `#${pub.offset}`), " ",
        el("span", { class: "epoch" }, shortEpoch(pub.epoch)), " ",
        payloadEl(pub.data, pub.binary && `<${pub.binary.length} bytes>`));
      if (pub.publisher) li.title = `from ${pub.publisher.user || "anonymous"} (${pub.publisher.client})`;
      feed.append(li);
      feed.scrollTop = feed.scrollHeight;
      showPos();
    },
    onJoin: (ev) => line("join", `→ joined: ${ev.user || "anonymous"} (${ev.client})`),
    onLeave: (ev) => line("leave", `← left: ${ev.user || "anonymous"} (${ev.client})`),
    onUnsubscribed(ctx) {
      if (block.classList.contains("failed")) return; // onError said why
      status.textContent = "unsubscribed";
      status.className = "sub-state bad";
      line("note bad", `unsubscribed: ${ctx.reason}`);
    },
    onError(err) {
      // Refused for good (permission, bad name): the block stays, saying
      // why, until dismissed; a reconnect with other settings tries again.
      line("note bad", `subscribe failed: ${err.message} (code ${err.code})`);
      status.textContent = "failed";
      status.className = "sub-state bad";
      block.classList.add("failed");
      block.title = `${err.message} (code ${err.code})`;
      closeButton.textContent = "Dismiss";
    },
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
  const closeButton = button("Unsubscribe", () => {
    sub.unsubscribe();
    offConnecting();
    consoleChannels.delete(channel);
    block.remove();
  }, "danger");
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
          for (const p of page.publications.reverse()) lineAt(p.timeUnixMs, "hist", el("span", { class: "off" }, `#${p.offset}`), " ", payloadEl(p.data, p.binary && `<${p.binary.length} bytes>`));
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
      closeButton),
    feed, presence, publishForm);
  $("channels").append(block);
}

// ---- admin mode ----
//
// An operator's view of the node through its REST API on this page's own
// origin (so it needs a node that runs the core: herald serve, or a load
// balancer that sends /v1/ to cores): Info, Channels, History, Presence,
// Publish, Disconnect and Unsubscribe, each with `Authorization: Bearer
// <key>`. Live figures come from two polls every pollMs: GET /v1/info (the
// core's counts) and GET /metrics (open browser connections and
// publications per second of the process that answers /metrics).

const pollMs = 2000;
/** sessionStorage only: gone with the tab, never in a URL or localStorage. */
const keyStore = "herald.adminKey";

const admin = {
  /** The API key in use; null outside admin mode. @type {string | null} */
  key: null,
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  timer: undefined,
  /** Bumped at every enter and leave, so that a late poll of an old session renders nothing. */
  gen: 0,
  /** The previous /metrics sample, for publications per second. @type {{ t: number, pubs: number } | null} */
  sample: null,
  /** The channel shown in the detail panel. */
  selected: "",
};

/** gRPC code names, for the errors the REST gateway passes on. */
const grpcCodes = ["OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
  "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED",
  "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"];

/** An HTTP error of the node, with the server's own message. */
class AdminError extends Error {
  /** @param {number} status HTTP status; 0 when the node did not answer @param {string} message @param {number} [code] gRPC code */
  constructor(status, message, code) {
    super(message);
    this.status = status;
    this.code = code;
  }

  /** What the operator reads: the status, the server's message and its gRPC code. */
  toString() {
    if (!this.status) return this.message;
    const code = this.code !== undefined ? ` (${grpcCodes[this.code] ?? "code " + this.code})` : "";
    return `HTTP ${this.status}: ${this.message}${code}`;
  }
}

/**
 * Calls the node's REST API with the admin key. body, when given, is JSON
 * text, sent as application/json.
 * @param {string} method
 * @param {string} path
 * @param {string} [body]
 * @returns {Promise<any>}
 */
async function api(method, path, body) {
  /** @type {Record<string, string>} */
  const headers = { Accept: "application/json" };
  if (admin.key) headers.Authorization = `Bearer ${admin.key}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let res;
  try {
    res = await fetch(path, { method, headers, body, cache: "no-store", credentials: "omit" });
  } catch (err) {
    throw new AdminError(0, `the node did not answer: ${errText(err)}`);
  }
  const text = await res.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {
    // not JSON: an error page of the node or of a proxy
  }
  if (res.ok) return json ?? {};
  if (json && typeof json.message === "string") throw new AdminError(res.status, json.message, json.code);
  let msg = text.trim() || res.statusText;
  if (res.status === 404 && path.startsWith("/v1/")) msg += " (this node serves no REST API: a bridge alone? Open the console of a node that runs the core)";
  throw new AdminError(res.status, msg);
}

/** @param {string} channel */
const channelPath = (channel) => `/v1/channels/${encodeURIComponent(channel)}`;
/** @param {string} user */
const userPath = (user) => `/v1/users/${encodeURIComponent(user)}`;

/** @param {unknown} err */
const adminText = (err) => (err instanceof AdminError ? err.toString() : errText(err));

/** @param {unknown} err */
function adminError(err) {
  const p = $("admin-error");
  p.textContent = err ? adminText(err) : "";
  p.hidden = !err;
}

/** @param {string} id @param {string} text @param {string} kind */
function adminResult(id, text, kind) {
  const p = $(id);
  p.textContent = text;
  p.className = `result ${kind}`;
  logEvent(`admin: ${text}`, kind === "ok" ? "" : "bad");
}

/**
 * Enters admin mode with key: Info must answer (it needs scope admin, so a
 * narrower or wrong key is refused here, with the server's message).
 * @param {string} key
 * @param {boolean} remember keep the key in this tab's sessionStorage
 */
async function enterAdmin(key, remember) {
  const gen = ++admin.gen;
  admin.key = key;
  let info;
  try {
    info = await api("GET", "/v1/info");
  } catch (err) {
    if (gen !== admin.gen) return;
    admin.key = null;
    sessionStorage.removeItem(keyStore);
    adminError(err);
    return;
  }
  if (gen !== admin.gen) return;
  if (remember) sessionStorage.setItem(keyStore, key);
  else sessionStorage.removeItem(keyStore);
  // A node without API keys answers without one too: say so.
  let open = key === "";
  if (!open) {
    try {
      open = (await fetch("/v1/info", { cache: "no-store", credentials: "omit" })).ok;
    } catch {
      // unknown: say nothing
    }
  }
  if (gen !== admin.gen) return;
  adminError(null);
  /** @type {HTMLInputElement} */ ($("admin-key")).value = "";
  $("admin-open-notice").hidden = !open;
  $("admin-login").hidden = true;
  $("admin-body").hidden = false;
  admin.sample = null;
  logEvent(`admin: entered on node ${info.node ?? "?"}`);
  renderInfo(info);
  poll(gen);
}

function leaveAdmin() {
  admin.gen++;
  admin.key = null;
  clearTimeout(admin.timer);
  sessionStorage.removeItem(keyStore);
  admin.selected = "";
  $("admin-body").hidden = true;
  $("admin-login").hidden = false;
  $("admin-detail").replaceChildren();
  $("admin-stats").replaceChildren();
  /** @type {HTMLElement} */ ($("admin-channels").querySelector("tbody")).replaceChildren();
  adminError(null);
  logEvent("admin: left; key forgotten");
}

/**
 * Refreshes Info, the channel list and the metrics, then again after
 * pollMs, until admin mode ends. A failed call shows its error and the
 * poll goes on (a key revoked meanwhile shows 401 here).
 * @param {number} gen
 */
async function poll(gen) {
  clearTimeout(admin.timer);
  const [info, channels, metrics] = await Promise.allSettled([api("GET", "/v1/info"), loadChannels(), loadMetrics()]);
  if (gen !== admin.gen) return;
  const failed = [info, channels].find((r) => r.status === "rejected");
  adminError(failed && /** @type {PromiseRejectedResult} */ (failed).reason);
  if (info.status === "fulfilled") renderInfo(info.value);
  renderStats(info.status === "fulfilled" ? info.value : null, metrics.status === "fulfilled" ? metrics.value : { error: adminText(metrics.reason) });
  $("admin-updated").textContent = `updated ${time()} · every ${pollMs / 1000} s`;
  admin.timer = setTimeout(() => poll(gen), pollMs);
}

/** @param {any} info an InfoResponse */
function renderInfo(info) {
  $("admin-node").textContent = info.node ?? "";
  $("admin-node-meta").textContent = `Herald ${info.version ?? "?"} · engine ${info.engine ?? "?"} · up ${duration(Number(info.uptime_seconds ?? 0))}`;
}

/** @param {number} s seconds */
function duration(s) {
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
}

/**
 * Reads /metrics (Prometheus text): open browser connections (every
 * herald_*_connections gauge of a transport) and publications accepted
 * (herald_publications_total, all namespaces). A figure the process does
 * not export is null.
 * @returns {Promise<{ conns: number | null, pubs: number | null, rate: number | null } | { error: string }>}
 */
async function loadMetrics() {
  const res = await fetch("/metrics", { cache: "no-store", credentials: "omit" });
  if (!res.ok) return { error: `/metrics: HTTP ${res.status}` };
  /** @type {number | null} */
  let conns = null;
  /** @type {number | null} */
  let pubs = null;
  for (const line of (await res.text()).split("\n")) {
    const m = /^([A-Za-z_:][\w:]*)(?:\{[^}]*\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const v = Number(m[2]);
    if (/^herald_(ws|sse|http_stream)_connections$/.test(m[1])) conns = (conns ?? 0) + v;
    else if (m[1] === "herald_publications_total") pubs = (pubs ?? 0) + v;
  }
  const now = performance.now();
  let rate = null;
  const last = admin.sample;
  if (pubs !== null && last && pubs >= last.pubs && now > last.t) rate = ((pubs - last.pubs) * 1000) / (now - last.t);
  admin.sample = pubs === null ? null : { t: now, pubs };
  return { conns, pubs, rate };
}

/**
 * @param {any} info an InfoResponse, or null if it failed
 * @param {any} m what loadMetrics returned
 */
function renderStats(info, m) {
  const n = (/** @type {unknown} */ v) => (v === null || v === undefined ? "–" : String(v));
  /** @type {[string, string, string, string][]} key, label, value, title */
  const stats = [
    ["connections", "connections", n(m.conns), "open browser connections of the process serving /metrics (herald_ws_connections and the other transports' gauges)"],
    ["rate", "publications/s", m.rate === null || m.rate === undefined ? "–" : m.rate.toFixed(1), `publications accepted per second, between the last two polls of /metrics (herald_publications_total)`],
    ["publications", "publications", n(m.pubs), "publications accepted by this process since it started (herald_publications_total)"],
  ];
  if (info) {
    stats.push(
      ["channels", "channels", n(info.channels ?? 0), "channels with subscribers on this node (Info)"],
      ["streams", "streams", n(info.streams ?? 0), "gRPC subscribe streams open on this node (Info)"],
      ["clients", "subscribers", n(info.clients ?? 0), "browser subscriptions (a connection in a channel) in namespaces with presence, reported by the bridges attached to this node (Info.clients)"],
      ["bridges", "bridges", n(info.bridges ?? 0), "bridges attached to this node (Info)"],
    );
  }
  $("admin-stats").replaceChildren(...stats.map(([key, label, value, title]) =>
    el("div", { class: "stat", "data-stat": key, title }, el("dt", {}, label), el("dd", {}, value))));
  if (m.error) $("admin-stats").append(el("div", { class: "stat muted", "data-stat": "metrics-error" }, el("dt", {}, "metrics"), el("dd", {}, m.error)));
}

/** The most channels the list shows: the first page of Channels. */
const channelsPage = 500;

/** The most connections a channel's presence shows: the first page. */
const presencePage = 500;

/** Loads and shows the channel list, filtered by the pattern box. */
async function loadChannels() {
  const pattern = /** @type {HTMLInputElement} */ ($("admin-pattern")).value.trim();
  const query = new URLSearchParams({ page_size: String(channelsPage) });
  if (pattern) query.set("pattern", pattern);
  const res = await api("GET", `/v1/channels?${query}`);
  /** @type {any[]} */
  const channels = res.channels ?? [];
  const more = res.next_page_token ? `the first ${channels.length} by name; more follow, narrow with a pattern` : String(channels.length);
  $("admin-channel-count").textContent = `(${more}${pattern ? ` matching ${pattern}` : ""})`;
  const rows = channels.map((c) => {
    const tr = el("tr", { "data-channel": c.name, class: c.name === admin.selected ? "selected" : "", tabindex: "0", title: `inspect ${c.name}` },
      el("td", {}, el("code", {}, c.name)),
      el("td", { "data-col": "clients" }, String(c.clients ?? 0)),
      el("td", { "data-col": "streams" }, String(c.streams ?? 0)),
      el("td", { "data-col": "offset" }, String(c.position?.offset ?? 0)),
      el("td", { class: "muted" }, shortEpoch(c.position?.epoch ?? "")));
    const open = () => inspect(c.name);
    tr.addEventListener("click", open);
    tr.addEventListener("keydown", (e) => { if (e.key === "Enter") open(); });
    return tr;
  });
  /** @type {HTMLElement} */ ($("admin-channels").querySelector("tbody")).replaceChildren(...rows);
}

/**
 * Shows a channel's position, presence (with disconnect and unsubscribe
 * for each user) and newest history, each part with its own error.
 * @param {string} channel
 */
async function inspect(channel) {
  channel = channel.trim();
  if (!channel) return;
  admin.selected = channel;
  /** @type {HTMLInputElement} */ ($("admin-channel")).value = channel;
  for (const tr of $("admin-channels").querySelectorAll("tr[data-channel]")) tr.classList.toggle("selected", tr.getAttribute("data-channel") === channel);
  const gen = admin.gen;
  const [hist, pres, stats] = await Promise.allSettled([
    api("GET", `${channelPath(channel)}/history?limit=20&reverse=true`),
    api("GET", `${channelPath(channel)}/presence?page_size=${presencePage}`),
    api("GET", `${channelPath(channel)}/presence/stats`),
  ]);
  if (gen !== admin.gen || admin.selected !== channel) return;

  const refresh = el("button", { type: "button" }, "Refresh");
  refresh.addEventListener("click", () => inspect(channel));
  const publishHere = el("button", { type: "button" }, "Publish here");
  publishHere.addEventListener("click", () => {
    /** @type {HTMLInputElement} */ ($("admin-pub-channel")).value = channel;
    $("admin-pub-data").focus();
  });
  const pos = hist.status === "fulfilled" ? hist.value.position : null;
  const head = el("header", { class: "row" }, el("code", { class: "grow" }, channel),
    el("span", { class: "muted" }, pos ? `offset ${pos.offset ?? 0} · epoch ${shortEpoch(pos.epoch ?? "")}` : ""), refresh, publishHere);

  const presence = el("section", { class: "presence-part" });
  if (pres.status === "fulfilled") {
    /** @type {any[]} */
    const clients = pres.value.clients ?? [];
    const s = stats.status === "fulfilled" ? stats.value : null;
    presence.append(el("h4", {}, `Presence: ${s ? `${s.clients ?? 0} connection(s), ${s.users ?? 0} user(s)` : `${clients.length} connection(s)`}`));
    const rows = clients.map((c) => {
      const actions = el("td", { class: "actions" });
      if (c.user) {
        const disc = el("button", { type: "button", class: "danger", "data-action": "disconnect" }, "Disconnect");
        disc.addEventListener("click", () => disconnectUser(c.user, "disconnected by an operator", false));
        const unsub = el("button", { type: "button", class: "danger", "data-action": "unsubscribe" }, "Unsubscribe");
        unsub.addEventListener("click", () => unsubscribeUser(c.user, channel));
        actions.append(disc, " ", unsub);
      } else {
        actions.append(el("span", { class: "muted", title: "Disconnect and Unsubscribe act on users; an anonymous connection has none" }, "anonymous"));
      }
      return el("tr", { "data-client": c.client, "data-user": c.user ?? "" },
        el("td", {}, el("code", {}, c.client)), el("td", {}, c.user || "–"),
        el("td", {}, c.info === undefined ? "" : payloadEl(c.info)), actions);
    });
    presence.append(rows.length
      ? el("table", { class: "table" }, el("thead", {}, el("tr", {}, el("th", {}, "client"), el("th", {}, "user"), el("th", {}, "info"), el("th", {}, ""))), el("tbody", {}, ...rows))
      : el("p", { class: "muted" }, "nobody"));
    if (pres.value.next_page_token) presence.append(el("p", { class: "muted", "data-more": "" }, `the first ${clients.length} connections by client id; more follow`));
  } else {
    presence.append(el("h4", {}, "Presence"), el("p", { class: "notice bad" }, adminText(pres.reason)));
  }

  const history = el("section", { class: "history-part" });
  if (hist.status === "fulfilled") {
    /** @type {any[]} */
    const pubs = hist.value.publications ?? [];
    history.append(el("h4", {}, `History: ${pubs.length ? `newest ${pubs.length}` : "empty"}`));
    history.append(el("ol", { class: "history" }, ...pubs.map((p) => el("li", { "data-offset": String(p.offset ?? 0) },
      el("span", { class: "off" }, `#${p.offset ?? 0}`), " ",
      el("time", { class: "muted" }, p.time_unix_ms ? new Date(Number(p.time_unix_ms)).toLocaleTimeString() : ""),
      p.publisher ? el("span", { class: "muted" }, ` from ${p.publisher.user || "anonymous"} (${p.publisher.client})`) : "",
      restPayload(p)))));
  } else {
    history.append(el("h4", {}, "History"), el("p", { class: "notice bad" }, adminText(hist.reason)));
  }
  $("admin-detail").replaceChildren(el("div", { class: "detail", "data-channel": channel }, head, presence, history));
}

/**
 * A publication's payload as the REST gateway shows it: JSON in data (or
 * json, as text), bytes in binary or raw_json (base64), always
 * pretty-printed.
 * @param {any} p
 */
function restPayload(p) {
  let text;
  if ("data" in p) text = JSON.stringify(p.data, null, 2);
  else if (typeof p.json === "string") text = prettyJSONText(p.json);
  else if (typeof p.raw_json === "string") text = prettyJSONText(new TextDecoder().decode(base64Bytes(p.raw_json)));
  else if (typeof p.binary === "string") text = `<${base64Bytes(p.binary).length} bytes> ${p.binary}`;
  else text = "(no payload)";
  return el("pre", { class: "payload-pretty" }, text);
}

/** @param {string} text JSON text; shown as is if it does not parse */
function prettyJSONText(text) {
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return text;
  }
}

/** @param {string} b64 */
function base64Bytes(b64) {
  const bin = atob(b64);
  return Uint8Array.from(bin, (c) => c.charCodeAt(0));
}

/** @param {string} user @param {string} reason @param {boolean} reconnect */
async function disconnectUser(user, reason, reconnect) {
  try {
    await api("POST", `${userPath(user)}/disconnect`, JSON.stringify({ reason, reconnect }));
    adminResult("admin-user-result", `disconnected ${user} on every bridge${reconnect ? " (may reconnect)" : ""}`, "ok");
  } catch (err) {
    adminResult("admin-user-result", `disconnect ${user}: ${adminText(err)}`, "bad");
  }
  refreshSoon();
}

/** @param {string} user @param {string} channel */
async function unsubscribeUser(user, channel) {
  try {
    await api("POST", `${userPath(user)}/unsubscribe`, JSON.stringify({ channel }));
    adminResult("admin-user-result", `unsubscribed ${user} from ${channel} on every bridge`, "ok");
  } catch (err) {
    adminResult("admin-user-result", `unsubscribe ${user} from ${channel}: ${adminText(err)}`, "bad");
  }
  refreshSoon();
}

/** Refreshes the lists shortly after an action, once bridges have carried it out. */
function refreshSoon() {
  const gen = admin.gen;
  setTimeout(() => {
    if (gen !== admin.gen) return;
    loadChannels().catch(adminError);
    if (admin.selected) inspect(admin.selected);
  }, 300);
}

$("admin-toggle").addEventListener("click", () => {
  const section = $("admin");
  section.hidden = !section.hidden;
  $("admin-toggle").setAttribute("aria-expanded", String(!section.hidden));
  if (!section.hidden && admin.key === null) $("admin-key").focus();
});
$("admin-login").addEventListener("submit", (e) => {
  e.preventDefault();
  enterAdmin(/** @type {HTMLInputElement} */ ($("admin-key")).value.trim(), /** @type {HTMLInputElement} */ ($("admin-remember")).checked);
});
$("admin-leave").addEventListener("click", leaveAdmin);
/** @type {ReturnType<typeof setTimeout> | undefined} */
let patternTimer;
$("admin-pattern").addEventListener("input", () => {
  clearTimeout(patternTimer);
  patternTimer = setTimeout(() => loadChannels().then(() => adminError(null), adminError), 200);
});
$("admin-inspect").addEventListener("submit", (e) => {
  e.preventDefault();
  inspect(/** @type {HTMLInputElement} */ ($("admin-channel")).value);
});
$("admin-publish").addEventListener("submit", async (e) => {
  e.preventDefault();
  const channel = /** @type {HTMLInputElement} */ ($("admin-pub-channel")).value.trim();
  const text = /** @type {HTMLTextAreaElement} */ ($("admin-pub-data")).value;
  const key = /** @type {HTMLInputElement} */ ($("admin-pub-key")).value.trim();
  if (!channel) return adminResult("admin-pub-result", "publish: name a channel", "bad");
  try {
    JSON.parse(text);
  } catch (err) {
    return adminResult("admin-pub-result", `publish: not JSON: ${errText(err)}`, "bad");
  }
  // The payload goes as the text typed (not re-serialized), so that what
  // subscribers get is exactly that JSON.
  const body = `{"data":${text}${key ? `,"idempotency_key":${JSON.stringify(key)}` : ""}}`;
  try {
    const res = await api("POST", `${channelPath(channel)}/publish`, body);
    const p = res.position ?? {};
    adminResult("admin-pub-result", `${res.duplicate ? "duplicate: already" : "published"} to ${channel} at offset ${p.offset ?? 0} (epoch ${shortEpoch(p.epoch ?? "")})`, "ok");
  } catch (err) {
    adminResult("admin-pub-result", `publish to ${channel}: ${adminText(err)}`, "bad");
  }
  refreshSoon();
});
$("admin-user").addEventListener("submit", (e) => {
  e.preventDefault();
  const user = /** @type {HTMLInputElement} */ ($("admin-user-id")).value.trim();
  if (!user) return adminResult("admin-user-result", "disconnect: name a user", "bad");
  const reason = /** @type {HTMLInputElement} */ ($("admin-user-reason")).value.trim() || "disconnected by an operator";
  disconnectUser(user, reason, /** @type {HTMLInputElement} */ ($("admin-user-reconnect")).checked);
});
$("admin-unsubscribe").addEventListener("click", () => {
  const user = /** @type {HTMLInputElement} */ ($("admin-user-id")).value.trim();
  const channel = /** @type {HTMLInputElement} */ ($("admin-user-channel")).value.trim();
  if (!user || !channel) return adminResult("admin-user-result", "unsubscribe: name a user and a channel", "bad");
  unsubscribeUser(user, channel);
});

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

// Try an RPC: the bridge passes it to the application's backend (its RPC
// hook), where hooks.rpc_methods allows the method.
$("rpc-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const method = /** @type {HTMLInputElement} */ ($("rpc-method")).value.trim();
  const text = /** @type {HTMLTextAreaElement} */ ($("rpc-data")).value.trim();
  const out = $("rpc-result");
  if (!method || !herald) return;
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch (err) {
    out.textContent = `data is not JSON: ${errText(err)}`;
    out.className = "result bad";
    return;
  }
  out.textContent = "calling…";
  out.className = "result";
  try {
    const res = await herald.rpc(method, data);
    out.textContent = res instanceof Uint8Array ? `${res.length} bytes` : JSON.stringify(res);
    out.className = "result ok";
    logEvent(`rpc ${method}: ${out.textContent}`, "ok");
  } catch (err) {
    const code = err instanceof HeraldError ? `${err.code}${err.temporary ? " (temporary)" : ""}: ` : "";
    out.textContent = `${code}${errText(err)}`;
    out.className = "result bad";
    logEvent(`rpc ${method} failed: ${out.textContent}`, "bad");
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
  `curl -X POST ${location.origin}/v1/channels/${encodeURIComponent(chatChannel)}/publish \\\n  -H 'Content-Type: application/json' -d '{"data":{"user":"backend","text":"hi"}}'\n\n` +
  `grpcurl -plaintext -d '{"channel":"${chatChannel}","data":{"user":"grpc","text":"hi"}}' \\\n  localhost:7400 herald.v1.HeraldService/Publish`;

$("log-filter").addEventListener("input", () => filterLog());
$("pretty-json").addEventListener("change", () => {
  for (const code of document.querySelectorAll("code.payload")) renderPayload(code);
});
suggestChannels("");

if (params.get("connect") !== "0") start();
const storedKey = sessionStorage.getItem(keyStore);
if (storedKey !== null) {
  $("admin").hidden = false;
  $("admin-toggle").setAttribute("aria-expanded", "true");
  /** @type {HTMLInputElement} */ ($("admin-remember")).checked = true;
  enterAdmin(storedKey, true);
}
