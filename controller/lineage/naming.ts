/**
 * Dataset identities as the OpenLineage naming spec writes them, so syncgov's datasets join the
 * same nodes other producers (Airflow, Spark, Flink, Kafka Connect) report:
 *
 * | source     | namespace                         | name                       |
 * |------------|-----------------------------------|----------------------------|
 * | PostgreSQL | `postgres://{host}:{port}`        | `{database}.{schema}.{table}` |
 * | Kafka      | `kafka://{bootstrap host}:{port}` | `{topic}`                  |
 * | local file | `file://{host}`                   | `{absolute path}`          |
 *
 * Names are built from host, port, database, schema, table, topic and path only. A connection URL
 * usually carries a user and password (and PostgreSQL URLs may carry `password=` or `sslpassword=`
 * in the query): none of that ever reaches a name, because only those parts are read out of it.
 */

import { hostname } from "node:os";
import { posix } from "node:path";
import { quoteTable } from "../api/identifiers.ts";

export interface DatasetName {
  readonly namespace: string;
  readonly name: string;
}

/** A dataset location that cannot be named: the message never repeats the URL it came from. */
export class LineageNamingError extends Error {
  override readonly name = "LineageNamingError";
}

export interface PostgresLocation {
  readonly host: string;
  readonly port?: number;
  readonly database: string;
}

/**
 * A PostgreSQL table: `connection` is a `postgres://` / `postgresql://` URL (its credentials and
 * query are ignored, except `host` for a socket directory) or a host/port/database; `table` is
 * `table` (schema public) or `schema.table`.
 */
export function postgresDataset(connection: string | PostgresLocation, table: string): DatasetName {
  const location = typeof connection === "string" ? parsePostgresUrl(connection) : connection;
  quoteTable(table); // validates the reference
  const [schema, relation] = table.includes(".") ? table.split(".") : ["public", table];
  const port = location.port ?? 5432;
  return {
    namespace: `postgres://${location.host}:${port}`,
    name: `${location.database}.${schema}.${relation}`,
  };
}

function parsePostgresUrl(text: string): PostgresLocation {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new LineageNamingError("the PostgreSQL connection string is not a URL");
  }
  if (url.protocol !== "postgres:" && url.protocol !== "postgresql:") {
    throw new LineageNamingError(
      `a PostgreSQL connection URL starts with postgres://, not ${url.protocol}//`,
    );
  }
  const host = decodeURIComponent(url.hostname) || url.searchParams.get("host") || "localhost";
  const database = decodeURIComponent(url.pathname.replace(/^\//, ""));
  if (database === "") throw new LineageNamingError("the PostgreSQL connection URL names no database");
  return { host, port: url.port === "" ? 5432 : Number(url.port), database };
}

/**
 * A Kafka topic, in the namespace of the first bootstrap server. Brokers may be given as
 * `host:port`, a comma-separated list, or with a listener scheme (`SASL_SSL://host:9093`).
 */
export function kafkaDataset(brokers: string | readonly string[], topic: string): DatasetName {
  const list = (typeof brokers === "string" ? brokers.split(",") : brokers)
    .map((b) => b.trim())
    .filter(Boolean);
  const first = list[0];
  if (first === undefined) throw new LineageNamingError("no Kafka bootstrap server to name the topic by");
  const { host, port } = hostAndPort(first, 9092);
  return { namespace: `kafka://${host}:${port}`, name: topic };
}

/** A file: `path` is absolute, or a `file://host/path` URL; `host` defaults to this machine's name. */
export function fileDataset(path: string, host: string = hostname()): DatasetName {
  if (path.startsWith("file:")) {
    let url: URL;
    try {
      url = new URL(path);
    } catch {
      throw new LineageNamingError("the file URL is not a URL");
    }
    return fileDataset(decodeURIComponent(url.pathname), url.hostname || host);
  }
  if (!posix.isAbsolute(path)) throw new LineageNamingError("a file dataset needs an absolute path");
  return { namespace: `file://${host}`, name: posix.normalize(path) };
}

/**
 * Host and port of `host:port`, `[v6]:port`, `scheme://user:pass@host:port/…` or a bare host; the
 * scheme, credentials and path are dropped.
 */
function hostAndPort(address: string, defaultPort: number): { host: string; port: number } {
  let rest = address.replace(/^[A-Za-z][A-Za-z0-9+._-]*:\/\//, "");
  rest = rest.slice(rest.lastIndexOf("@") + 1).split("/")[0] ?? "";
  const match = /^(\[[^\]]+\]|[^:]+)(?::(\d{1,5}))?$/.exec(rest);
  if (!match) throw new LineageNamingError("a Kafka bootstrap server is host:port");
  return { host: match[1]!, port: match[2] === undefined ? defaultPort : Number(match[2]) };
}

/**
 * A URL fit for a log line or an error: scheme, host, port and path only (no user, password,
 * query or fragment). Text that is not a URL becomes "[unparseable URL]".
 */
export function redactUrl(text: string): string {
  try {
    const url = new URL(text);
    return `${url.protocol}//${url.host}${url.pathname === "/" ? "" : url.pathname}`;
  } catch {
    return "[unparseable URL]";
  }
}

/**
 * Removes `user:password@` from every URL in free text (an error message that quotes a connection
 * string), and the values of query parameters that commonly hold secrets.
 */
export function redactCredentials(text: string): string {
  return text
    .replace(/([A-Za-z][A-Za-z0-9+.-]*:\/\/)[^\s/@]*@/g, "$1")
    .replace(
      /([?&](?:password|sslpassword|passwd|pwd|secret|token|api[_-]?key|access[_-]?token)=)[^&\s]*/gi,
      "$1[redacted]",
    );
}
