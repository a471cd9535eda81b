import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { type Access, type Caller, type HttpAuth, OPEN_ACCESS } from "./auth.ts";

/** One object of the registry view; namespaced kinds carry their namespace. */
export interface RegistryEntry {
  readonly kind: string;
  readonly namespace?: string | undefined;
  readonly [field: string]: unknown;
}

export interface RegistryView {
  readonly version: number;
  readonly size: number;
  readonly objects: readonly RegistryEntry[];
}

/** The API resource (group, plural) a registry kind is read as, for the caller's list permission. */
const RESOURCES: Readonly<Record<string, { group: string; resource: string }>> = {
  SyncJob: { group: "syncgov.io", resource: "syncjobs" },
  SyncRun: { group: "syncgov.io", resource: "syncruns" },
  SyncPolicy: { group: "syncgov.io", resource: "syncpolicies" },
  Namespace: { group: "", resource: "namespaces" },
};

export interface HttpRoutes {
  /** Liveness: the process' event loop answers. */
  healthy?: () => boolean;
  /** Readiness: informers synced and leadership decided. */
  ready: () => { ready: boolean; reasons: string[] };
  metrics: (req: IncomingMessage, res: ServerResponse) => void;
  /** A read-only view of the registry snapshot; each caller sees the objects it may list. */
  registry: () => RegistryView;
  /** Who may read /metrics and /api/registry (./auth.ts); default OPEN_ACCESS. */
  auth?: HttpAuth;
}

/**
 * The controller's HTTP endpoints: /healthz, /readyz, /metrics and /api/registry. Everything here
 * reads; nothing changes state. The probes are open; /metrics and /api/registry need a caller that
 * `routes.auth` authenticates and authorizes.
 */
export function startHttpServer(routes: HttpRoutes, port: number, host = "0.0.0.0"): Promise<Server> {
  const auth = routes.auth ?? OPEN_ACCESS;
  const server = createServer((req, res) => {
    void serve(req, res);
  });
  const serve = async (req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? "/", "http://localhost");
    /** The authenticated caller allowed `access`, or undefined once a 401/403 is sent. */
    const allowed = async (access?: Access): Promise<Caller | undefined> => {
      const caller = await auth.authenticate(req);
      if ("refused" in caller) {
        send(res, 401, { error: `unauthenticated: ${caller.refused}` });
        return undefined;
      }
      if (access && !(await auth.authorize(caller, access))) {
        send(res, 403, { error: `forbidden: ${caller.username} may not ${describeAccess(access)}` });
        return undefined;
      }
      return caller;
    };
    try {
      if (req.method !== "GET" && req.method !== "HEAD")
        return send(res, 405, { error: "method not allowed" });
      switch (url.pathname) {
        case "/healthz":
        case "/livez":
          return (routes.healthy?.() ?? true) ? text(res, 200, "ok") : text(res, 503, "unhealthy");
        case "/readyz": {
          const r = routes.ready();
          return r.ready ? text(res, 200, "ok") : text(res, 503, `not ready: ${r.reasons.join("; ")}`);
        }
        case "/metrics":
          if (!(await allowed({ path: "/metrics", verb: "get" }))) return;
          return routes.metrics(req, res);
        case "/api/registry": {
          const caller = await allowed();
          if (!caller) return;
          return send(res, 200, await visibleTo(caller, routes.registry(), auth));
        }
        default:
          return send(res, 404, { error: `no route ${url.pathname}` });
      }
    } catch (err) {
      if (!res.headersSent) send(res, 500, { error: String(err) });
      else res.destroy();
    }
  };
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => resolve(server));
  });
}

export function serverPort(server: Server): number {
  return (server.address() as AddressInfo).port;
}

function text(res: ServerResponse, code: number, body: string): void {
  res.writeHead(code, { "content-type": "text/plain; charset=utf-8" });
  res.end(`${body}\n`);
}

function send(res: ServerResponse, code: number, body: unknown): void {
  res.writeHead(code, { "content-type": "application/json" });
  res.end(JSON.stringify(body));
}

function describeAccess(access: Access): string {
  if (!("resource" in access)) return `${access.verb} ${access.path}`;
  const what = access.group ? `${access.resource}.${access.group}` : access.resource;
  return `${access.verb} ${what}${access.namespace ? ` in namespace ${access.namespace}` : ""}`;
}

/**
 * The objects of `view` that `caller` may list: per kind, every object when the caller may list the
 * resource across the cluster, else those in the namespaces where it may. Kinds the view does not map
 * to a resource are left out.
 */
async function visibleTo(caller: Caller, view: RegistryView, auth: HttpAuth): Promise<RegistryView> {
  const decisions = new Map<string, Promise<boolean>>();
  const may = (kind: string, namespace?: string): Promise<boolean> => {
    const resource = RESOURCES[kind];
    if (!resource) return Promise.resolve(false);
    const key = `${kind}/${namespace ?? ""}`;
    let decision = decisions.get(key);
    if (!decision) {
      decision = auth.authorize(caller, { verb: "list", ...resource, namespace });
      decisions.set(key, decision);
    }
    return decision;
  };
  const objects: RegistryEntry[] = [];
  for (const o of view.objects) {
    if ((await may(o.kind)) || (o.namespace !== undefined && (await may(o.kind, o.namespace))))
      objects.push(o);
  }
  return { version: view.version, size: objects.length, objects };
}
