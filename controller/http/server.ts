import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

export interface HttpRoutes {
  /** Liveness: the process' event loop answers. */
  healthy?: () => boolean;
  /** Readiness: informers synced and leadership decided. */
  ready: () => { ready: boolean; reasons: string[] };
  metrics: (req: IncomingMessage, res: ServerResponse) => void;
  /** A JSON-serialisable read-only view of the registry snapshot. */
  registry: () => unknown;
}

/**
 * The controller's HTTP endpoints: /healthz, /readyz, /metrics and /api/registry. Everything here
 * reads; nothing changes state.
 */
export function startHttpServer(routes: HttpRoutes, port: number, host = "0.0.0.0"): Promise<Server> {
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://localhost");
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
          return routes.metrics(req, res);
        case "/api/registry":
          return send(res, 200, routes.registry());
        default:
          return send(res, 404, { error: `no route ${url.pathname}` });
      }
    } catch (err) {
      send(res, 500, { error: String(err) });
    }
  });
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
