/**
 * Patterns for every name that travels from a spec into SQL, Kafka or a cron parser. They are
 * deliberately narrower than what the engines accept: ASCII only (no look-alike letters), no quotes,
 * no whitespace, no comment or statement separators. The zod schemas and the generated CRDs use the
 * same patterns, so the API server and the controller reject the same names.
 */

/** One SQL identifier part: a letter or underscore, then letters, digits or underscores; 1–63 chars. */
export const SQL_IDENTIFIER = "^[A-Za-z_][A-Za-z0-9_]{0,62}$";

/** A table reference: `table` or `schema.table`, each part a SQL_IDENTIFIER. */
export const SQL_TABLE = "^[A-Za-z_][A-Za-z0-9_]{0,62}(\\.[A-Za-z_][A-Za-z0-9_]{0,62})?$";

/**
 * A Kafka topic name: letters, digits, '.', '_' and '-', 1–249 chars, not starting with '.' (which
 * also rules out Kafka's reserved '.' and '..'). The patterns avoid look-arounds: the API server
 * evaluates them with Go's RE2, which has none.
 */
export const KAFKA_TOPIC = "^[A-Za-z0-9_-][A-Za-z0-9._-]{0,248}$";

/** A Kubernetes object name (DNS-1123 subdomain), as used for Secret references. */
export const DNS1123_SUBDOMAIN = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/**
 * A five-field cron expression (minute hour day-of-month month day-of-week) or a @-macro. The
 * pattern only admits the characters and shape; the controller parses it for real.
 */
export const CRON =
  "^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|([0-9A-Za-z*/,?#-]+[ \\t]+){4}[0-9A-Za-z*/,?#-]+)$";

export const sqlIdentifierRe = new RegExp(SQL_IDENTIFIER);
export const sqlTableRe = new RegExp(SQL_TABLE);

/** Quotes a validated identifier for PostgreSQL; throws on anything the pattern does not admit. */
export function quoteIdent(name: string): string {
  if (!sqlIdentifierRe.test(name)) throw new Error(`invalid SQL identifier ${JSON.stringify(name)}`);
  return `"${name}"`;
}

/** Splits and quotes `schema.table` or `table`. */
export function quoteTable(ref: string): string {
  if (!sqlTableRe.test(ref)) throw new Error(`invalid SQL table reference ${JSON.stringify(ref)}`);
  return ref.split(".").map(quoteIdent).join(".");
}
