/**
 * `syncgov run <namespace>/<run>`: the runner process, and the entrypoint of runner pods. Exit code
 * 0 when the run Succeeded (or had already), 1 otherwise. SIGTERM or SIGINT cancels the run at the
 * next batch boundary; it then ends Cancelled.
 */

import { createServer, type Server } from "node:http";
import { KubeConfig } from "@kubernetes/client-node";
import { type Command, InvalidArgumentError } from "commander";
import { describeApiError } from "../kube/resource.ts";
import { logger } from "../telemetry/logger.ts";
import { Telemetry } from "../telemetry/telemetry.ts";
import { parseRunRef, type RunRef, runSyncRun } from "./cluster.ts";

function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError("must be a positive whole number");
  return n;
}

function runRef(value: string): RunRef {
  try {
    return parseRunRef(value);
  } catch (error) {
    throw new InvalidArgumentError((error as Error).message);
  }
}

export function registerRunCommand(program: Command): Command {
  return program
    .command("run")
    .description(
      "Execute one SyncRun and report progress and the result in its status (the runner pod's entrypoint).",
    )
    .argument("<run>", "the SyncRun, as <namespace>/<name>", runRef)
    .option(
      "--kubeconfig <path>",
      "kubeconfig file (default: KUBECONFIG, then ~/.kube/config, then in-cluster)",
    )
    .option("--batch-size <rows>", "rows per source page and per upsert statement", positiveInt, 2000)
    .option(
      "--metrics-port <port>",
      "serve the run's metrics in the Prometheus format on this port (e.g. for a PodMonitor); they are pushed over OTLP too when OTEL_EXPORTER_OTLP_ENDPOINT is set",
      positiveInt,
    )
    .action(async (ref: RunRef, opts: { kubeconfig?: string; batchSize: number; metricsPort?: number }) => {
      // The runner reports like the controller: metrics and traces through OpenTelemetry, flushed
      // before the process ends so that a short run's figures are not lost.
      const telemetry = new Telemetry({ serviceName: "syncgov-runner" });
      const server =
        opts.metricsPort === undefined ? undefined : await serveMetrics(telemetry, opts.metricsPort);
      try {
        process.exitCode = await runCommand(ref, opts);
      } finally {
        server?.close();
        await telemetry.shutdown();
      }
      // Everything is closed by now; should a library keep a handle open, the process still ends.
      setTimeout(() => process.exit(), 5000).unref();
    });
}

async function runCommand(ref: RunRef, opts: { kubeconfig?: string; batchSize: number }): Promise<number> {
  const run = `${ref.namespace}/${ref.name}`;
  const kubeConfig = new KubeConfig();
  if (opts.kubeconfig) kubeConfig.loadFromFile(opts.kubeconfig);
  else kubeConfig.loadFromDefault();
  const cancel = new AbortController();
  const onSignal = (signal: NodeJS.Signals) => {
    logger.warn({ run, signal }, "cancelling the run");
    cancel.abort();
  };
  process.on("SIGTERM", onSignal);
  process.on("SIGINT", onSignal);
  try {
    const outcome = await runSyncRun(ref, {
      kubeConfig,
      signal: cancel.signal,
      log: logger,
      batchSize: opts.batchSize,
    });
    return outcome.phase === "Succeeded" ? 0 : 1;
  } catch (error) {
    // Only API failures reach here (the run's own failures end in its status); they carry no Secret.
    logger.error({ run, error: describeApiError(error) }, "the runner could not report the run");
    return 1;
  } finally {
    process.off("SIGTERM", onSignal);
    process.off("SIGINT", onSignal);
  }
}

/** /metrics on the port, for the lifetime of the run. */
function serveMetrics(telemetry: Telemetry, port: number): Promise<Server> {
  const server = createServer((req, res) => {
    if (req.url === "/metrics") telemetry.metricsHandler(req, res);
    else res.writeHead(404).end();
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, () => resolve(server));
  });
}
