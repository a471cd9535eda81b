/**
 * The Kafka names a job may use, derived from its namespace (docs/security.md, "Kafka topics and
 * groups"). A buffer or dead-letter topic named freely would let a job in one namespace replay (and
 * so consume and trim) another namespace's buffer, or read its set-aside records: a job may name its
 * own topics only under `syncgov.buffer.<namespace>.` and `syncgov.dlq.<namespace>.`. Namespaces hold
 * no dots (DNS labels), so no namespace's prefix is another's. Consumer groups derive from these
 * topics or from namespace and job (connectors/kafka/cluster.ts), never from spec text.
 */

export type TenantTopicKind = "buffer" | "dlq";

/** The prefix every `kind` topic of a job in `namespace` starts with. */
export function tenantTopicPrefix(kind: TenantTopicKind, namespace: string): string {
  return `syncgov.${kind}.${namespace}.`;
}

/** Why a job in `namespace` may not use `topic` as its `kind` topic, or undefined when it may. */
export function tenantTopicRefusal(
  kind: TenantTopicKind,
  namespace: string,
  topic: string,
): string | undefined {
  const prefix = tenantTopicPrefix(kind, namespace);
  return topic.startsWith(prefix) && topic.length > prefix.length
    ? undefined
    : `must start with ${prefix} (the job's own namespace): a ${kind === "buffer" ? "buffer" : "dead-letter"} topic outside it may be another tenant's`;
}
