import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Kafka, logLevel } from "kafkajs";
import pg from "pg";

/**
 * Data for the local default's examples, so that they sync for real: a CRM table for the nightly
 * copy, target tables for all three jobs, a fixed-width ledger export (with two malformed lines, to
 * show how they are counted and set aside), and order events on the orders.cdc topic.
 */
export async function seedExampleData(opts: {
  databaseUrl: string;
  brokers: string;
  dataDir: string;
}): Promise<{ ledgerFile: string }> {
  const db = new pg.Client({ connectionString: opts.databaseUrl });
  await db.connect();
  try {
    await db.query(`
      CREATE SCHEMA IF NOT EXISTS crm;
      CREATE SCHEMA IF NOT EXISTS analytics;
      CREATE SCHEMA IF NOT EXISTS finance;
      CREATE TABLE IF NOT EXISTS crm.customers (
        customer_id bigint PRIMARY KEY, name text NOT NULL, email text, segment text, updated_at timestamptz NOT NULL);
      CREATE TABLE IF NOT EXISTS analytics.customers (
        customer_id bigint PRIMARY KEY, name text NOT NULL, email text, segment text, updated_at timestamptz NOT NULL);
      CREATE TABLE IF NOT EXISTS analytics.orders (
        order_id bigint PRIMARY KEY, customer_phone text, amount numeric(12,2), status text, updated_at timestamptz NOT NULL);
      CREATE TABLE IF NOT EXISTS finance.ledger (
        entry_id bigint PRIMARY KEY, account text NOT NULL, amount numeric(14,2) NOT NULL, booked_on date NOT NULL);
      INSERT INTO crm.customers
        SELECT g, 'Customer ' || g, 'customer' || g || '@example.com', (ARRAY['gold','silver','bronze'])[1 + g % 3],
               now() - (g || ' minutes')::interval
        FROM generate_series(1, 5000) g
      ON CONFLICT DO NOTHING;
    `);
  } finally {
    await db.end();
  }

  mkdirSync(opts.dataDir, { recursive: true });
  const ledgerFile = join(opts.dataDir, "ledger.dat");
  const lines = ["ENTRY_ID  ACCOUNT AMOUNT      BOOKED  "];
  for (let i = 1; i <= 2000; i++) {
    const amount = ((i * 7919) % 100000) / 100;
    const day = String(1 + (i % 28)).padStart(2, "0");
    lines.push(
      `${String(i).padStart(10, "0")}${`ACC${i % 50}`.padEnd(8)}${amount.toFixed(2).padStart(12)}202611${day}`,
    );
  }
  lines.push("0000002001BROKEN  not-a-number20261101", "0000002002SHORT");
  writeFileSync(ledgerFile, `${lines.join("\n")}\n`);

  const kafka = new Kafka({
    clientId: "syncgov-dev",
    brokers: opts.brokers.split(","),
    logLevel: logLevel.WARN,
  });
  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({ topics: [{ topic: "orders.cdc", numPartitions: 3 }], waitForLeaders: true });
  await admin.disconnect();
  const producer = kafka.producer();
  await producer.connect();
  const statuses = ["placed", "paid", "shipped", "delivered"];
  const messages = [];
  // 1,000 orders, each updated a few times: the target keeps the latest state per order.
  for (let step = 0; step < statuses.length; step++) {
    for (let id = 1; id <= 1000; id++) {
      if (step > 0 && id % (step + 1) !== 0) continue;
      messages.push({
        key: String(id),
        value: JSON.stringify({
          order_id: id,
          customer_phone: `+49 30 ${String(1000000 + id)}`,
          amount: ((id * 31) % 50000) / 100,
          status: statuses[step],
          updated_at: new Date(Date.UTC(2026, 10, 21, 8, 0, step * 10 + (id % 10))).toISOString(),
        }),
      });
    }
  }
  await producer.send({ topic: "orders.cdc", messages });
  await producer.disconnect();
  return { ledgerFile };
}
