// Types of herald.js, written by hand next to it (there is no build step).

/** A place in a channel's stream: offsets grow within one epoch. */
export interface StreamPosition {
  /**
   * Offset of a publication; 0 means "before the first". A uint64 on the
   * wire (a decimal string in herald.json, a varint in herald.proto), a
   * number here in both formats: exact up to 2^53, which a channel does
   * not reach (the nearest double beyond).
   */
  offset: number;
  /** Names one continuous life of the channel's history. */
  epoch: string;
}

/** One connection of a user. */
export interface ClientInfo {
  client: string;
  /** Empty for anonymous connections. */
  user: string;
  /** The token's `info` claim, if any. */
  info: unknown;
}

/** A message in a channel. */
export interface Publication {
  channel: string;
  /** 0 when the channel keeps no history. */
  offset: number;
  epoch: string;
  /**
   * The JSON payload: `JSON.parse` of the exact text that was published
   * (null for binary publications).
   */
  data: unknown;
  /** The binary payload, when it was published as bytes (possibly empty). */
  binary?: Uint8Array;
  tags: Record<string, string>;
  /** The browser connection that published it, if one did. */
  publisher: ClientInfo | null;
  /**
   * When the node accepted it, in milliseconds since the Unix epoch (the
   * node's clock); 0 when unknown. `new Date(pub.timeUnixMs)`.
   */
  timeUnixMs: number;
}

/** A client joined or left a channel. */
export interface PresenceEvent extends ClientInfo {
  channel: string;
}

/** Passed to onSubscribed and the "subscribed" event. */
export interface SubscribedContext {
  channel: string;
  /** The channel's position when the subscription (re)started. */
  position: StreamPosition;
  /**
   * True when the subscription resumed from its last position and every
   * missed publication follows. When `resubscribed && !recovered`,
   * publications may have been missed: refetch the state.
   */
  recovered: boolean;
  /** Whether the channel keeps history, so the subscription can resume. */
  recoverable: boolean;
  /** False the first time, true after every reconnect. */
  resubscribed: boolean;
}

/** Passed to onUnsubscribed and the "unsubscribed" event. */
export interface UnsubscribedContext {
  channel: string;
  reason: string;
}

export interface SubscriptionHandlers {
  onPublication?: (pub: Publication) => void;
  onJoin?: (ev: PresenceEvent) => void;
  onLeave?: (ev: PresenceEvent) => void;
  onSubscribed?: (ctx: SubscribedContext) => void;
  onUnsubscribed?: (ctx: UnsubscribedContext) => void;
  /** The server refused the subscription (it is then unsubscribed). */
  onError?: (err: HeraldError) => void;
}

export interface SubscribeOptions extends SubscriptionHandlers {
  /** Resume after this position (e.g. one saved from `sub.position`). */
  since?: StreamPosition;
}

export interface HeraldOptions {
  /** A JWT for the first connection; empty or absent for anonymous. */
  token?: string;
  /**
   * Fetches a fresh JWT: for the first connection when `token` is absent,
   * for every reconnect, and to refresh the token before it expires. A
   * rejection is retried with backoff.
   */
  getToken?: () => Promise<string> | string;
  /** Client name sent on connect. Default "herald-js/1". */
  name?: string;
  /** Request timeout in ms. Default 10000. */
  timeout?: number;
  /** Backoff base in ms. Default 500. */
  minReconnectDelay?: number;
  /** Backoff cap in ms. Default 20000. */
  maxReconnectDelay?: number;
  /**
   * Application ping interval in ms, when the connection is quiet. Default
   * the server's ping interval.
   */
  pingInterval?: number;
  /**
   * Transports to try, in order. Default ["websocket", "http_stream", "sse"]:
   * a WebSocket where it gets through, else HTTP streaming (a fetch with a
   * streaming body), else SSE (EventSource). When one fails before it
   * opened (a proxy refusing the WebSocket upgrade), the next is tried at
   * once; the one that worked is kept for reconnects. `["sse"]` forces SSE.
   */
  transports?: Transport[];
  /**
   * The wire format: "json" (the default: `herald.json`, protobuf JSON in
   * text frames) or "protobuf" (`herald.proto`, binary protobuf frames:
   * smaller, binary payloads without base64). WebSocket and HTTP
   * streaming carry either; SSE carries JSON whatever this says. The API,
   * events and publication objects are the same in both.
   */
  format?: Format["name"];
  /** URLs of the other transports' endpoints. Default: /sse, /stream and /command beside the WebSocket URL. */
  sseURL?: string;
  streamURL?: string;
  commandURL?: string;
  /** WebSocket constructor, for runtimes without a global one. */
  WebSocket?: typeof WebSocket;
  /** EventSource constructor (sse transport). */
  EventSource?: typeof EventSource;
  /** fetch (http_stream and sse transports). */
  fetch?: typeof fetch;
}

/** How frames travel. */
export type Transport = "websocket" | "http_stream" | "sse";

export type State = "disconnected" | "connecting" | "connected";

export interface ConnectedContext {
  client: string;
  user: string;
  /** Seconds until the token expires; 0: never. */
  expiresIn: number;
  version: string;
  /** Seconds between server pings. */
  pingInterval: number;
  /** The transport this connection uses. */
  transport: Transport;
  /** Its wire format ("json" on SSE, whatever the option). */
  format: Format["name"];
}

export interface DisconnectContext {
  /** Close code (see docs/protocol.md), or a server error code. */
  code: number;
  reason: string;
  /** Whether the client will reconnect. */
  reconnect: boolean;
  /** With reconnect: ms before the next attempt. */
  delay?: number;
}

export interface ErrorContext {
  type: "token" | "transport" | "connect" | "refresh" | "frame";
  error: unknown;
}

export interface HeraldEvents {
  connecting: DisconnectContext;
  connected: ConnectedContext;
  disconnected: DisconnectContext;
  state: { state: State } & Partial<ConnectedContext & DisconnectContext>;
  error: ErrorContext;
  /**
   * Publications of server-side subscriptions (the personal channel
   * `user:<id>`), in order and without duplicates: the client remembers the
   * personal channel's last position and, when it reconnects as the same
   * user (the token's `sub`), sends it as `personal_since` so that what was
   * published meanwhile is replayed.
   */
  publication: Publication;
  /**
   * A server-side subscription began. For the personal channel after a
   * reconnect, `recovered` tells whether every missed publication follows;
   * `resubscribed && !recovered` means some may be lost: refetch the state.
   */
  subscribed: SubscribedContext;
  /** A server-side subscription ended. */
  unsubscribed: UnsubscribedContext;
  join: PresenceEvent;
  leave: PresenceEvent;
}

export interface PublishOptions {
  /**
   * An idempotency key: a retry with the same key within the server's
   * dedupe window returns the first publish's position (`duplicate`).
   */
  idempotencyKey?: string;
  /**
   * Data is a string of JSON text, published as it is written (integers
   * beyond 2^53, key order; the server drops insignificant whitespace)
   * instead of `JSON.stringify(data)`. A string that is not one JSON value
   * rejects with JSON.parse's SyntaxError.
   */
  raw?: boolean;
}

export interface PublishResult extends StreamPosition {
  /** An earlier publish with the same idempotency key was found. */
  duplicate: boolean;
}

export interface HistoryOptions {
  /** Start after this position (before it, with reverse). */
  since?: StreamPosition;
  /**
   * Maximum publications; 0: the server's default. A page holds fewer
   * when more would be over 4 MiB (the server's `limits.max_grpc_message`):
   * ask again with `since` the last one's position.
   */
  limit?: number;
  /** Newest first. */
  reverse?: boolean;
}

export interface HistoryResult {
  publications: Publication[];
  /** The channel's current position. */
  position: StreamPosition;
}

export declare const ErrorCode: Readonly<{
  TIMEOUT: 1;
  CONNECTION_CLOSED: 2;
  NOT_CONNECTED: 3;
}>;

export declare class HeraldError extends Error {
  constructor(code: number, message: string, temporary?: boolean);
  /** An ErrorCode, or the server's code (100-299). */
  code: number;
  temporary: boolean;
}

export declare class Herald {
  constructor(url?: string, options?: HeraldOptions);
  readonly url: string;
  /** The transport of the current (or last) connection; "" before the first. */
  readonly transport: Transport | "";
  /** The wire format of the current (or last) connection; "" before the first. */
  readonly format: Format["name"] | "";
  state: State;
  client: string;
  user: string;
  on<K extends keyof HeraldEvents>(event: K, fn: (ctx: HeraldEvents[K]) => void): () => void;
  off<K extends keyof HeraldEvents>(event: K, fn: (ctx: HeraldEvents[K]) => void): void;
  connect(): void;
  disconnect(): void;
  ready(timeout?: number): Promise<void>;
  subscribe(channel: string, handlers?: SubscribeOptions): Subscription;
  getSubscription(channel: string): Subscription | undefined;
  publish(channel: string, data: unknown, opts?: PublishOptions): Promise<PublishResult>;
  history(channel: string, opts?: HistoryOptions): Promise<HistoryResult>;
  presence(channel: string): Promise<ClientInfo[]>;
  presenceStats(channel: string): Promise<{ clients: number; users: number }>;
  ping(): Promise<number>;
  /**
   * Calls a method of the application's backend (its RPC hook; allowed by
   * the bridge's `hooks.rpc_methods`): resolves with the backend's JSON
   * answer (null when it gave none) or bytes; rejects with a HeraldError
   * (the backend's code and reason, or 203/204 when it is down or slow).
   */
  rpc(method: string, data?: unknown): Promise<unknown>;
}

export interface SubscriptionEvents {
  publication: Publication;
  join: PresenceEvent;
  leave: PresenceEvent;
  subscribed: SubscribedContext;
  unsubscribed: UnsubscribedContext;
  error: HeraldError;
}

export declare class Subscription {
  readonly channel: string;
  state: "subscribing" | "subscribed" | "unsubscribed";
  recoverable: boolean;
  /** Last position delivered; save it to resume later with `since`. */
  readonly position: StreamPosition | null;
  on<K extends keyof SubscriptionEvents>(event: K, fn: (ctx: SubscriptionEvents[K]) => void): () => void;
  off<K extends keyof SubscriptionEvents>(event: K, fn: (ctx: SubscriptionEvents[K]) => void): void;
  unsubscribe(): void;
  publish(data: unknown, opts?: PublishOptions): Promise<PublishResult>;
  history(opts?: HistoryOptions): Promise<HistoryResult>;
  presence(): Promise<ClientInfo[]>;
  presenceStats(): Promise<{ clients: number; users: number }>;
}

/**
 * A wire format of the browser protocol, as the `format` option names it.
 * Frames are objects in the shape of their herald.json text (protobuf JSON
 * with proto field names, see docs/protocol.md): `{ id: 1, subscribe: {
 * channel: "x" } }`; 64-bit integers are decimal strings, a
 * google.protobuf.Value is its JSON value; bytes are base64 strings in
 * "json" and Uint8Arrays in "protobuf". The client uses these itself;
 * they are exported for tools and tests (a scripted server, a frame
 * dump).
 */
export interface Format {
  readonly name: "json" | "protobuf";
  /** The WebSocket subprotocol: "herald.json" or "herald.proto". */
  readonly subprotocol: string;
  /** The Content-Type of HTTP-stream and /command bodies. */
  readonly contentType: string;
  /** Whether messages are binary. */
  readonly binary: boolean;
  /**
   * Encodes one frame as a message of its own (in "protobuf", after its
   * varint length). A body's `json` (a publish's JSON text) goes as the
   * exact text: `data` in "json", the `json` field in "protobuf".
   * @param type "ClientFrame" (the default) or "ServerFrame"
   */
  encode(frame: object, type?: "ClientFrame" | "ServerFrame"): string | Uint8Array;
  /** Packs encoded frames into one message. */
  pack(parts: Array<string | Uint8Array>): string | Uint8Array;
  /**
   * Decodes the frames of one message; each frame that cannot be decoded
   * is passed to onError (fields unknown to this client are skipped).
   * @param type "ServerFrame" (the default) or "ClientFrame"
   */
  decode(message: string | ArrayBuffer | Uint8Array, type?: "ClientFrame" | "ServerFrame", onError?: (err: unknown) => void): any[];
}

/** The wire formats, by name. */
export declare const formats: Readonly<{ json: Format; protobuf: Format }>;
