import { once } from "node:events";
import net from "node:net";

/**
 * A TCP proxy on a loopback port that forwards to a real server and injects faults on demand, so an
 * integration test can make PostgreSQL or Kafka slow, cut or unreachable without touching the server.
 * Written on node:net alone: the faults needed are few, and a test helper should not pull in a
 * dependency for them.
 */
export interface FaultProxyStats {
  /** Client connections accepted since the proxy started, refused ones included. */
  acceptedConnections: number;
  /** Connections currently forwarded. */
  activeConnections: number;
  /** Connections destroyed on arrival while refuse(true) was in force. */
  refusedConnections: number;
  /** Connections destroyed by cutConnections(). */
  cutConnections: number;
  /** Bytes written to the target and to the clients. */
  bytesToTarget: number;
  bytesToClient: number;
}

export interface FaultProxyTarget {
  host: string;
  port: number;
}

/**
 * One direction of a forwarded connection. Every chunk is held until latency ms after it arrived;
 * the queue is first in, first out, so a chunk never overtakes the one ahead of it even when the
 * latency drops mid-stream, and the end of the stream waits behind the last chunk.
 */
class DelayedPipe {
  readonly #from: net.Socket;
  readonly #to: net.Socket;
  readonly #latency: () => number;
  readonly #count: (bytes: number) => void;
  readonly #queue: { chunk: Buffer | null; due: number }[] = [];
  #timer: NodeJS.Timeout | undefined;

  constructor(from: net.Socket, to: net.Socket, latency: () => number, count: (bytes: number) => void) {
    this.#from = from;
    this.#to = to;
    this.#latency = latency;
    this.#count = count;
    from.on("data", (chunk: Buffer) => this.#push(chunk));
    from.on("end", () => this.#push(null));
    to.on("drain", () => from.resume());
  }

  stop(): void {
    clearTimeout(this.#timer);
    this.#queue.length = 0;
  }

  #push(chunk: Buffer | null): void {
    this.#queue.push({ chunk, due: performance.now() + this.#latency() });
    this.#flush();
  }

  #flush(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    const now = performance.now();
    while (this.#queue.length > 0 && this.#queue[0]!.due <= now) {
      const { chunk } = this.#queue.shift()!;
      if (this.#to.destroyed) return;
      if (chunk === null) {
        this.#to.end();
      } else {
        this.#count(chunk.length);
        // Back-pressure: stop reading until the slow side has taken what it was given.
        if (!this.#to.write(chunk)) this.#from.pause();
      }
    }
    const next = this.#queue[0];
    if (next) this.#timer = setTimeout(() => this.#flush(), Math.max(1, Math.ceil(next.due - now)));
  }
}

interface ForwardedConnection {
  client: net.Socket;
  upstream: net.Socket;
  pipes: DelayedPipe[];
}

export class FaultProxy {
  readonly host = "127.0.0.1";
  readonly #server: net.Server;
  readonly #target: FaultProxyTarget;
  readonly #connections = new Set<ForwardedConnection>();
  #latencyMs = 0;
  #refusing = false;
  #stats: FaultProxyStats = {
    acceptedConnections: 0,
    activeConnections: 0,
    refusedConnections: 0,
    cutConnections: 0,
    bytesToTarget: 0,
    bytesToClient: 0,
  };

  private constructor(target: FaultProxyTarget) {
    this.#target = target;
    // Half-open allowed: a client's FIN travels through the latency queue instead of closing at once.
    this.#server = net.createServer({ allowHalfOpen: true }, (client) => this.#accept(client));
  }

  /** Starts a proxy on a free loopback port that forwards every connection to target. */
  static async start(target: FaultProxyTarget): Promise<FaultProxy> {
    const proxy = new FaultProxy(target);
    proxy.#server.listen(0, proxy.host);
    await once(proxy.#server, "listening");
    return proxy;
  }

  get port(): number {
    const address = this.#server.address();
    if (address === null || typeof address === "string") throw new Error("fault proxy is not listening");
    return address.port;
  }

  get stats(): FaultProxyStats {
    return { ...this.#stats, activeConnections: this.#connections.size };
  }

  /** Delays every chunk in both directions by ms from now on (0 forwards at once). */
  setLatency(ms: number): void {
    if (!Number.isFinite(ms) || ms < 0) throw new RangeError(`latency must be >= 0 ms, got ${ms}`);
    this.#latencyMs = ms;
  }

  /** Resets every current connection on both sides, as a network cut or a crashed server would. */
  cutConnections(): void {
    for (const connection of this.#connections) {
      this.#stats.cutConnections++;
      this.#drop(connection);
    }
  }

  /** While on, new connections are accepted and reset at once; current ones are left alone. */
  refuse(on: boolean): void {
    this.#refusing = on;
  }

  /** Stops listening and resets every connection. */
  async close(): Promise<void> {
    this.cutConnections();
    if (!this.#server.listening) return;
    const closed = once(this.#server, "close");
    this.#server.close();
    await closed;
  }

  #accept(client: net.Socket): void {
    this.#stats.acceptedConnections++;
    if (this.#refusing) {
      this.#stats.refusedConnections++;
      client.on("error", () => {});
      client.resetAndDestroy();
      return;
    }
    client.setNoDelay(true);
    const upstream = net.connect({
      host: this.#target.host,
      port: this.#target.port,
      noDelay: true,
      allowHalfOpen: true,
    });
    const latency = () => this.#latencyMs;
    const connection: ForwardedConnection = {
      client,
      upstream,
      pipes: [
        new DelayedPipe(client, upstream, latency, (n) => {
          this.#stats.bytesToTarget += n;
        }),
        new DelayedPipe(upstream, client, latency, (n) => {
          this.#stats.bytesToClient += n;
        }),
      ],
    };
    this.#connections.add(connection);
    for (const socket of [client, upstream]) {
      // An error on either side (a reset is the point of this proxy) resets the other side too.
      socket.on("error", () => this.#drop(connection));
      // Both sides half-close through the pipes; the pair is done once both have closed.
      socket.on("close", () => {
        if (client.destroyed && upstream.destroyed) this.#drop(connection);
      });
    }
  }

  #drop(connection: ForwardedConnection): void {
    if (!this.#connections.delete(connection)) return;
    for (const pipe of connection.pipes) pipe.stop();
    for (const socket of [connection.client, connection.upstream]) {
      if (!socket.destroyed) socket.resetAndDestroy();
    }
  }
}
