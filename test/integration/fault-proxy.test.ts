import { once } from "node:events";
import net from "node:net";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { testEnv } from "../support/env.ts";
import { FaultProxy } from "../support/fault-proxy.ts";

describe("FaultProxy in front of the real PostgreSQL", () => {
  let proxy: FaultProxy;
  const clients: pg.Client[] = [];

  beforeAll(async () => {
    const target = new URL(testEnv().databaseUrl);
    proxy = await FaultProxy.start({ host: target.hostname, port: Number(target.port) });
  });

  afterAll(async () => {
    await Promise.allSettled(clients.map((c) => c.end()));
    await proxy.close();
  });

  /** A pg client whose connection goes through the proxy; its connection errors are collected. */
  function proxiedClient(): { client: pg.Client; errors: Error[] } {
    const url = new URL(testEnv().databaseUrl);
    url.hostname = proxy.host;
    url.port = String(proxy.port);
    const client = new pg.Client({ connectionString: url.toString(), connectionTimeoutMillis: 10_000 });
    const errors: Error[] = [];
    // pg emits "error" on a client whose connection dies while idle; unhandled, it would crash the run.
    client.on("error", (error) => errors.push(error));
    clients.push(client);
    return { client, errors };
  }

  it("forwards a session both ways and counts it", async () => {
    const before = proxy.stats;
    const { client } = proxiedClient();
    await client.connect();
    const result = await client.query<{ sum: number; db: string }>(
      "SELECT $1::int + $2::int AS sum, current_database() AS db",
      [40, 2],
    );
    expect(result.rows[0]).toEqual({ sum: 42, db: new URL(testEnv().databaseUrl).pathname.slice(1) });
    const during = proxy.stats;
    expect(during.acceptedConnections).toBe(before.acceptedConnections + 1);
    expect(during.activeConnections).toBe(before.activeConnections + 1);
    expect(during.bytesToTarget).toBeGreaterThan(before.bytesToTarget);
    expect(during.bytesToClient).toBeGreaterThan(before.bytesToClient);
    await client.end();
  });

  it("setLatency(300) delays each direction, so SELECT 1 takes at least 300 ms", async () => {
    const { client } = proxiedClient();
    await client.connect();
    proxy.setLatency(300);
    try {
      const began = performance.now();
      const result = await client.query<{ one: number }>("SELECT 1 AS one");
      const elapsed = performance.now() - began;
      expect(result.rows[0]?.one).toBe(1);
      // The query and its answer each wait 300 ms in the proxy.
      expect(elapsed).toBeGreaterThanOrEqual(600);
    } finally {
      proxy.setLatency(0);
    }
    await client.end();
  });

  it("cutConnections makes a connected client fail", async () => {
    const { client } = proxiedClient();
    await client.connect();
    await client.query("SELECT 1");
    const cutsBefore = proxy.stats.cutConnections;
    proxy.cutConnections();
    expect(proxy.stats.cutConnections).toBe(cutsBefore + 1);
    expect(proxy.stats.activeConnections).toBe(0);
    await expect(client.query("SELECT 1")).rejects.toThrow(/terminated|ECONNRESET|not queryable/i);
  });

  it("refuse(true) keeps new clients out; after refuse(false) a new client connects again", async () => {
    proxy.refuse(true);
    const refusedBefore = proxy.stats.refusedConnections;
    try {
      const { client } = proxiedClient();
      await expect(client.connect()).rejects.toThrow();
      expect(proxy.stats.refusedConnections).toBe(refusedBefore + 1);
    } finally {
      proxy.refuse(false);
    }
    const { client } = proxiedClient();
    await client.connect();
    expect((await client.query<{ ok: boolean }>("SELECT true AS ok")).rows[0]?.ok).toBe(true);
    await client.end();
  });
});

describe("FaultProxy byte stream", () => {
  it("keeps chunks in order when the latency drops mid-stream", async () => {
    const echo = net.createServer((socket) => socket.pipe(socket));
    echo.listen(0, "127.0.0.1");
    await once(echo, "listening");
    const address = echo.address() as net.AddressInfo;
    const proxy = await FaultProxy.start({ host: "127.0.0.1", port: address.port });
    try {
      const socket = net.connect({ host: proxy.host, port: proxy.port, noDelay: true });
      await once(socket, "connect");
      let received = "";
      socket.on("data", (chunk: Buffer) => {
        received += chunk.toString();
      });
      proxy.setLatency(300);
      socket.write("first,");
      await new Promise((resolve) => setTimeout(resolve, 20));
      proxy.setLatency(0);
      socket.write("second");
      socket.end();
      await once(socket, "close");
      expect(received).toBe("first,second");
    } finally {
      await proxy.close();
      echo.close();
    }
  });
});
