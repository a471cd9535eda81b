import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { stringify } from "yaml";
import { obtainScript, type StartedService } from "./common.ts";
import { execFileAsync, freePort, ProcessGroup, waitFor } from "./process.ts";

/**
 * The directory holding `prometheus` and `promtool`, built from the Go module proxy by
 * test/env/obtain/prometheus.sh and cached (minutes the first time, at once afterwards).
 */
export async function obtainPrometheus(): Promise<string> {
  const { stdout } = await execFileAsync("bash", [obtainScript("prometheus.sh")], { maxBuffer: 1 << 20 });
  return stdout.trim();
}

export interface PrometheusEndpoint {
  /** Base URL of the HTTP API, e.g. http://127.0.0.1:9090 */
  url: string;
  /** Directory of the prometheus and promtool binaries. */
  binDir: string;
}

export interface PrometheusOptions {
  /** "host:port" targets scraped at /metrics as one scrape job. */
  targets: string[];
  /** Name of the scrape job (the `job` label of series without one of their own). */
  jobName?: string;
  /** Scrape and rule evaluation interval, e.g. "1s". */
  interval?: string;
  /** Rule files loaded by the server (absolute paths). */
  ruleFiles?: string[];
  /** A bearer token sent with each scrape (the controller's /metrics checks it). */
  bearerToken?: string;
}

/**
 * Starts a local Prometheus server (its own process group, data under `dir`) scraping `targets`.
 * The scrape keeps the targets' own labels (honor_labels), as the chart's ServiceMonitor does.
 * stop() shuts it down.
 */
export async function startLocalPrometheus(
  dir: string,
  opts: PrometheusOptions,
): Promise<StartedService<PrometheusEndpoint> & { stop: () => Promise<void> }> {
  const began = Date.now();
  const binDir = await obtainPrometheus();
  mkdirSync(join(dir, "data"), { recursive: true });
  const interval = opts.interval ?? "1s";
  const config = join(dir, "prometheus.yml");
  if (opts.bearerToken) writeFileSync(join(dir, "scrape-token"), opts.bearerToken, { mode: 0o600 });
  writeFileSync(
    config,
    stringify({
      global: { scrape_interval: interval, scrape_timeout: interval, evaluation_interval: interval },
      rule_files: opts.ruleFiles ?? [],
      scrape_configs: [
        {
          job_name: opts.jobName ?? "syncgov",
          honor_labels: true,
          metrics_path: "/metrics",
          static_configs: [{ targets: opts.targets }],
          ...(opts.bearerToken ? { authorization: { credentials_file: join(dir, "scrape-token") } } : {}),
        },
      ],
    }),
  );
  const port = await freePort();
  const logFile = join(dir, "prometheus.log");
  const group = new ProcessGroup(dir);
  const child = group.start({
    name: "prometheus",
    command: join(binDir, "prometheus"),
    args: [
      `--config.file=${config}`,
      `--storage.tsdb.path=${join(dir, "data")}`,
      `--web.listen-address=127.0.0.1:${port}`,
      "--log.level=info",
    ],
    logFile,
  });
  const url = `http://127.0.0.1:${port}`;
  await waitFor(
    "prometheus /-/ready",
    async () => (await fetch(`${url}/-/ready`)).ok,
    60_000,
    () => group.assertAlive(child, "prometheus", logFile),
  );
  const version = (await execFileAsync(join(binDir, "prometheus"), ["--version"])).stdout.split("\n")[0];
  return {
    endpoint: { url, binDir },
    description: `${version} at ${url}`,
    seconds: (Date.now() - began) / 1000,
    logs: [logFile],
    processes: ["prometheus"],
    stop: () => group.stop(),
  };
}

/** Result of an instant query through the HTTP API (/api/v1/query). */
export interface InstantQueryResult {
  status: "success" | "error";
  errorType?: string;
  error?: string;
  data?: { resultType: string; result: { metric: Record<string, string>; value: [number, string] }[] };
  warnings?: string[];
}

export async function instantQuery(url: string, query: string): Promise<InstantQueryResult> {
  const res = await fetch(`${url}/api/v1/query`, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ query }),
  });
  return (await res.json()) as InstantQueryResult;
}
