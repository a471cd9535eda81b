import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";

/**
 * An OTLP/HTTP JSON receiver, as a collector's would be: it keeps what the exporters posted, by path
 * (/v1/metrics, /v1/traces), for a test to read. Listens on 127.0.0.1 (host-network pods reach it).
 */
export interface OtlpMetric {
  name: string;
  sum?: { dataPoints: OtlpPoint[] };
  histogram?: { dataPoints: OtlpPoint[] };
}
export interface OtlpPoint {
  attributes: { key: string; value: { stringValue?: string } }[];
  asInt?: number | string;
  asDouble?: number;
  count?: number | string;
}
export interface OtlpSpan {
  name: string;
  traceId: string;
  parentSpanId?: string;
  attributes: { key: string; value: Record<string, unknown> }[];
}

export class OtlpReceiver {
  readonly #received = new Map<string, unknown[]>();
  #server: Server | undefined;
  endpoint = "";

  async start(): Promise<this> {
    this.#server = createServer((req, res) => {
      let body = "";
      req.on("data", (chunk) => {
        body += chunk;
      });
      req.on("end", () => {
        const list = this.#received.get(req.url ?? "") ?? [];
        list.push(JSON.parse(body));
        this.#received.set(req.url ?? "", list);
        res.writeHead(200, { "content-type": "application/json" }).end("{}");
      });
    });
    await new Promise<void>((resolve) => this.#server!.listen(0, "127.0.0.1", resolve));
    this.endpoint = `http://127.0.0.1:${(this.#server.address() as AddressInfo).port}`;
    return this;
  }

  stop(): Promise<void> {
    return new Promise((resolve) => (this.#server ? this.#server.close(() => resolve()) : resolve()));
  }

  /** The metrics `service` (resource attribute service.name) exported so far. */
  metricsOf(service: string): OtlpMetric[] {
    type Body = {
      resourceMetrics: {
        resource: { attributes: { key: string; value: { stringValue?: string } }[] };
        scopeMetrics: { metrics: OtlpMetric[] }[];
      }[];
    };
    return ((this.#received.get("/v1/metrics") ?? []) as Body[])
      .flatMap((b) => b.resourceMetrics)
      .filter((r) =>
        r.resource.attributes.some((a) => a.key === "service.name" && a.value.stringValue === service),
      )
      .flatMap((r) => r.scopeMetrics.flatMap((s) => s.metrics));
  }

  spans(): OtlpSpan[] {
    type Body = { resourceSpans: { scopeSpans: { spans: OtlpSpan[] }[] }[] };
    return ((this.#received.get("/v1/traces") ?? []) as Body[]).flatMap((b) =>
      b.resourceSpans.flatMap((r) => r.scopeSpans.flatMap((s) => s.spans)),
    );
  }
}

/** The value of attribute `key` of a data point. */
export const pointLabel = (p: OtlpPoint, key: string): string | undefined =>
  p.attributes.find((a) => a.key === key)?.value.stringValue;
