/**
 * Who may read the controller's HTTP API (docs/security.md, "The HTTP API"). /metrics and
 * /api/registry name every tenant's jobs, tables and topics, so each caller is authenticated and
 * authorized by Kubernetes itself, as kube-rbac-proxy and controller-runtime's secure metrics do: the
 * caller's bearer token is checked with a TokenReview, and each access with a SubjectAccessReview
 * for that user — `get` on the non-resource URL /metrics, `list` on syncjobs.syncgov.io per namespace
 * for the registry, which shows only what the caller may list. Answers are cached for a short while
 * (TTL below), keyed by a hash of the token, so a scrape every few seconds costs no API calls.
 *
 * Written here rather than taken from a library: the checks are two API calls with client-node, and
 * no maintained Node library does this for Kubernetes.
 */

import { createHash } from "node:crypto";
import type { IncomingMessage } from "node:http";
import {
  AuthenticationV1Api,
  AuthorizationV1Api,
  type KubeConfig,
  type V1ResourceAttributes,
} from "@kubernetes/client-node";

export interface Caller {
  readonly username: string;
  readonly uid?: string | undefined;
  readonly groups: readonly string[];
  readonly extra?: Readonly<Record<string, readonly string[]>> | undefined;
}

/** What a caller asks to do: a non-resource URL, or a verb on a resource (in a namespace). */
export type Access =
  | { readonly path: string; readonly verb: "get" }
  | {
      readonly verb: "get" | "list";
      readonly group: string;
      readonly resource: string;
      readonly namespace?: string | undefined;
    };

export interface HttpAuth {
  /** The caller of `req`, or why it is not authenticated (→ 401). */
  authenticate(req: IncomingMessage): Promise<Caller | { readonly refused: string }>;
  /** Whether the caller may do `access` (→ 403 when not). */
  authorize(caller: Caller, access: Access): Promise<boolean>;
}

/** For a controller whose port only trusted parties reach (`--http-auth none`): anyone may do anything. */
export const OPEN_ACCESS: HttpAuth = {
  authenticate: async () => ({ username: "system:anonymous", groups: [] }),
  authorize: async () => true,
};

const TTL_MS = 30_000;
const MAX_ENTRIES = 10_000;

/** A small TTL cache: answers of the API server about one token or one access. */
class TtlCache<V> {
  readonly #entries = new Map<string, { value: V; expires: number }>();

  get(key: string, now: number): V | undefined {
    const hit = this.#entries.get(key);
    if (hit && hit.expires > now) return hit.value;
    if (hit) this.#entries.delete(key);
    return undefined;
  }

  set(key: string, value: V, now: number): void {
    if (this.#entries.size >= MAX_ENTRIES) this.#entries.clear();
    this.#entries.set(key, { value, expires: now + TTL_MS });
  }
}

export class KubernetesAuth implements HttpAuth {
  readonly #authn: AuthenticationV1Api;
  readonly #authz: AuthorizationV1Api;
  readonly #callers = new TtlCache<Caller | { refused: string }>();
  readonly #decisions = new TtlCache<boolean>();
  readonly #now: () => number;

  constructor(kc: KubeConfig, now: () => number = Date.now) {
    this.#authn = kc.makeApiClient(AuthenticationV1Api);
    this.#authz = kc.makeApiClient(AuthorizationV1Api);
    this.#now = now;
  }

  async authenticate(req: IncomingMessage): Promise<Caller | { refused: string }> {
    const header = req.headers.authorization ?? "";
    const m = /^Bearer\s+(\S+)$/i.exec(header);
    if (!m) return { refused: "a bearer token is required (Authorization: Bearer <token>)" };
    const token = m[1]!;
    const key = createHash("sha256").update(token).digest("hex");
    const cached = this.#callers.get(key, this.#now());
    if (cached) return cached;
    const review = await this.#authn.createTokenReview({
      body: { apiVersion: "authentication.k8s.io/v1", kind: "TokenReview", spec: { token } },
    });
    const user = review.status?.user;
    const result: Caller | { refused: string } =
      review.status?.authenticated && user?.username
        ? {
            username: user.username,
            uid: user.uid,
            groups: user.groups ?? [],
            extra: user.extra,
          }
        : { refused: `the token is not valid${review.status?.error ? ` (${review.status.error})` : ""}` };
    this.#callers.set(key, result, this.#now());
    return result;
  }

  async authorize(caller: Caller, access: Access): Promise<boolean> {
    const key = JSON.stringify([caller.username, caller.uid, caller.groups, access]);
    const cached = this.#decisions.get(key, this.#now());
    if (cached !== undefined) return cached;
    const resourceAttributes: V1ResourceAttributes | undefined =
      "resource" in access
        ? {
            verb: access.verb,
            group: access.group,
            resource: access.resource,
            ...(access.namespace ? { namespace: access.namespace } : {}),
          }
        : undefined;
    const review = await this.#authz.createSubjectAccessReview({
      body: {
        apiVersion: "authorization.k8s.io/v1",
        kind: "SubjectAccessReview",
        spec: {
          user: caller.username,
          ...(caller.uid ? { uid: caller.uid } : {}),
          groups: [...caller.groups],
          ...(caller.extra
            ? { extra: Object.fromEntries(Object.entries(caller.extra).map(([k, v]) => [k, [...v]])) }
            : {}),
          ...(resourceAttributes
            ? { resourceAttributes }
            : { nonResourceAttributes: { path: (access as { path: string }).path, verb: access.verb } }),
        },
      },
    });
    const allowed = review.status?.allowed === true;
    this.#decisions.set(key, allowed, this.#now());
    return allowed;
  }
}
