/**
 * The chart's Grafana dashboard and Prometheus alerts, proven against a real Prometheus (built from
 * the Go module proxy by test/env/obtain/prometheus.sh):
 * - promtool checks the alerting rules file the chart renders, and unit-tests every alert on
 *   synthetic series (test/prometheus/syncgov.rules.test.yaml);
 * - `helm template` carries the dashboard JSON and the rules file unchanged;
 * - a real controller (InProcess executor) runs a realtime Kafka → PostgreSQL job and a validation,
 *   a real Prometheus scrapes its /metrics every second and loads the rules; every dashboard query
 *   and every alert expression evaluates without error through the HTTP API, the panels about what
 *   the test produced return series, and the rules load and evaluate healthy.
 */

import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Kafka, logLevel } from "kafkajs";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse, parseAllDocuments, stringify } from "yaml";
import { execFileAsync } from "../env/services/process.ts";
import {
  instantQuery,
  obtainPrometheus,
  type PrometheusEndpoint,
  startLocalPrometheus,
} from "../env/services/prometheus.ts";
import { eventually, type RunningController, startController } from "../support/controller.ts";
import { testEnv, uniqueName } from "../support/env.ts";
import { installCrds, kubectl, kubectlOk } from "../support/kubectl.ts";
import { repoPath } from "../support/manifests.ts";
import { readerToken } from "../support/reader-token.ts";

const CHART = repoPath("charts/syncgov");
const RULES = repoPath("charts/syncgov/alerts/syncgov.rules.yaml");
const RULE_TESTS = repoPath("test/prometheus/syncgov.rules.test.yaml");
const DASHBOARD = repoPath("charts/syncgov/dashboards/syncgov.json");

interface Target {
  expr: string;
  refId: string;
}
interface Panel {
  type: string;
  title: string;
  targets?: Target[];
}
interface Dashboard {
  panels: Panel[];
  templating: { list: { name: string; type: string; definition?: string }[] };
}
interface RuleFile {
  groups: { name: string; rules: { alert: string; expr: string }[] }[];
}

const dashboard = JSON.parse(readFileSync(DASHBOARD, "utf8")) as Dashboard;
const rules = parse(readFileSync(RULES, "utf8")) as RuleFile;
const alerts = rules.groups.flatMap((g) => g.rules);
/** Every query of the dashboard: panel title, refId and expression. */
const panelQueries = dashboard.panels.flatMap((p) =>
  (p.targets ?? []).map((t) => ({ panel: p.title, refId: t.refId, expr: t.expr })),
);

let binDir = "";

beforeAll(async () => {
  // Built once from the Go module proxy (minutes), cached in ~/.cache/syncgov afterwards.
  binDir = await obtainPrometheus();
}, 60 * 60_000);

describe("the alerting rules under promtool", () => {
  it("pass `promtool check rules`", async () => {
    const { stdout } = await execFileAsync(join(binDir, "promtool"), ["check", "rules", RULES]);
    expect(stdout).toContain(`SUCCESS: ${alerts.length} rules found`);
  });

  it("fire, and stay silent, as `promtool test rules` expects for every alert", async () => {
    const tests = parse(readFileSync(RULE_TESTS, "utf8")) as {
      tests: { alert_rule_test: { alertname: string; exp_alerts: unknown[] }[] }[];
    };
    const cases = tests.tests.flatMap((t) => t.alert_rule_test);
    // Every alert is tested both ways.
    for (const { alert } of alerts) {
      expect(
        cases.some((c) => c.alertname === alert && c.exp_alerts.length > 0),
        `${alert} fires somewhere`,
      ).toBe(true);
      expect(
        cases.some((c) => c.alertname === alert && c.exp_alerts.length === 0),
        `${alert} is silent somewhere`,
      ).toBe(true);
    }
    const r = await execFileAsync(join(binDir, "promtool"), ["test", "rules", RULE_TESTS]).catch(
      (err: { stdout: string; stderr: string }) => err,
    );
    expect(`${r.stdout}${r.stderr}`).toContain("SUCCESS");
    expect(`${r.stdout}${r.stderr}`).not.toContain("FAILED");
  });
});

describe("the chart", () => {
  it("renders the dashboard ConfigMap and the PrometheusRule from the shipped files", async () => {
    const helm = (
      await execFileAsync("bash", [repoPath("test/env/obtain/helm.sh")], { maxBuffer: 1 << 20 })
    ).stdout.trim();
    const render = async (...flags: string[]) =>
      parseAllDocuments(
        (
          await execFileAsync(helm, ["template", "obs", CHART, "--namespace", "obs", ...flags], {
            maxBuffer: 16 << 20,
          })
        ).stdout,
      )
        .map(
          (d) =>
            d.toJSON() as {
              kind: string;
              metadata: { labels: Record<string, string> };
              [k: string]: unknown;
            },
        )
        .filter((o) => o);
    const defaults = await render();
    const configMap = defaults.find((o) => o.kind === "ConfigMap" && o.metadata.labels.grafana_dashboard);
    expect(configMap?.metadata.labels.grafana_dashboard).toBe("1");
    const data = configMap!.data as Record<string, string>;
    expect(JSON.parse(data["syncgov.json"]!)).toEqual(dashboard);
    expect(defaults.some((o) => o.kind === "PrometheusRule")).toBe(false);

    const withRules = await render(
      "--set",
      "prometheusRule.enabled=true",
      "--set",
      "prometheusRule.labels.release=kps",
      "--set",
      "dashboards.enabled=false",
    );
    const rule = withRules.find((o) => o.kind === "PrometheusRule")!;
    expect(rule).toMatchObject({
      apiVersion: "monitoring.coreos.com/v1",
      metadata: { labels: { release: "kps" } },
    });
    expect(rule.spec).toEqual(rules);
    expect(withRules.some((o) => o.kind === "ConfigMap")).toBe(false);
  });
});

/** Grafana's template variables, as the check substitutes them. */
function substitute(expr: string, vars: { namespace: string; job: string }): string {
  return expr
    .replaceAll("$__rate_interval", "1m")
    .replaceAll("$__interval", "15s")
    .replaceAll("$__range", "1h")
    .replace(/\$\{?namespace\}?/g, vars.namespace)
    .replace(/\$\{?job\}?/g, vars.job);
}

/**
 * Queries that may return nothing here: counters of what the test does not cause (reconcile errors,
 * work-queue retries, inserts retried as upserts), which exist only once it happened. A breaker that
 * never opened is present with state 0, so its panel is not listed.
 */
const MAY_BE_EMPTY = new Set<string>([
  'sum by (kind) (rate(syncgov_reconcile_total{result="error"}[1m]))',
  "sum(rate(syncgov_workqueue_retries_total[1m]))",
  "sum by (table) (rate(syncgov_target_insert_retries_total[1m]))",
]);

describe("a real Prometheus scraping a controller that runs a realtime job", () => {
  const namespace = uniqueName("prom");
  const topic = uniqueName("prom-orders");
  const table = `prom_${Date.now().toString(36)}`;
  const jobName = "orders";
  const pool = new pg.Pool({ connectionString: testEnv().databaseUrl, max: 2 });
  const kafka = new Kafka({
    clientId: "prom",
    brokers: testEnv().kafkaBrokers.split(","),
    logLevel: logLevel.WARN,
  });
  let controller: RunningController | undefined;
  let prometheus: { endpoint: PrometheusEndpoint; stop: () => Promise<void>; logs: string[] } | undefined;

  beforeAll(async () => {
    await installCrds();
    await kubectl(["create", "namespace", "syncgov-system"]);
    await kubectlOk(["create", "namespace", namespace]);
    await kubectlOk([
      "create",
      "secret",
      "generic",
      "warehouse",
      "-n",
      namespace,
      `--from-literal=url=${testEnv().databaseUrl}`,
    ]);
    await pool.query(
      `CREATE TABLE ${table} (order_id bigint PRIMARY KEY, status text NOT NULL, updated_at timestamptz NOT NULL)`,
    );
    const admin = kafka.admin();
    await admin.connect();
    await admin.createTopics({ topics: [{ topic, numPartitions: 3 }], waitForLeaders: true });
    await admin.disconnect();
    controller = await startController({
      identity: "prometheus",
      leaseName: uniqueName("lease"),
      extraArgs: ["--executor", "InProcess"],
    });
    const dir = join(testEnv().runDir, `prometheus-${namespace}`);
    mkdirSync(dir, { recursive: true });
    prometheus = await startLocalPrometheus(dir, {
      targets: [`127.0.0.1:${controller.port}`],
      interval: "1s",
      ruleFiles: [RULES],
      // As the chart's ServiceMonitor: Prometheus's ServiceAccount token, checked by the controller.
      bearerToken: await readerToken(),
    });
  }, 10 * 60_000);

  afterAll(async () => {
    await prometheus?.stop();
    await controller?.stop();
    await kubectl(["delete", "namespace", namespace, "--wait=false"]);
    await pool.query(`DROP TABLE IF EXISTS ${table}`);
    await pool.end();
  });

  it("answers every dashboard query and alert expression; the panels show the job's data", {
    timeout: 240_000,
  }, async () => {
    const url = prometheus!.endpoint.url;
    const job = {
      apiVersion: "syncgov.io/v1alpha1",
      kind: "SyncJob",
      metadata: { name: jobName, namespace },
      spec: {
        source: { kafka: { topic, startFrom: "earliest" } },
        target: { sql: { connectionSecretRef: { name: "warehouse" }, table, keyColumns: ["order_id"] } },
        mode: "realtime",
      },
    };
    await kubectlOk(["apply", "-f", "-"], stringify(job));
    const producer = kafka.producer();
    await producer.connect();
    await producer.send({
      topic,
      messages: Array.from({ length: 300 }, (_, i) => ({
        key: String(i + 1),
        value: JSON.stringify({ order_id: i + 1, status: "placed", updated_at: new Date().toISOString() }),
      })),
    });
    await producer.disconnect();
    await eventually(
      "300 rows in the target",
      async () => {
        const r = await pool.query<{ n: string }>(`SELECT count(*) AS n FROM ${table}`);
        return r.rows[0]!.n === "300" ? true : undefined;
      },
      120_000,
    );
    // A validation run (run-now): it finishes, so runs, durations and validation results are counted.
    await kubectlOk(["annotate", "syncjob", jobName, "-n", namespace, "syncgov.io/run-now=check-1"]);
    await eventually(
      "Validated=True",
      async () => {
        const j = JSON.parse(await kubectlOk(["get", "syncjob", jobName, "-n", namespace, "-o", "json"])) as {
          status?: { conditions?: { type: string; status: string }[] };
        };
        return j.status?.conditions?.some((c) => c.type === "Validated" && c.status === "True")
          ? true
          : undefined;
      },
      90_000,
    );
    // Prometheus has scraped the validation's counters, and a few scrapes more.
    await eventually(
      "the validation result in Prometheus",
      async () => {
        const r = await instantQuery(url, `syncgov_validation_results_total{namespace="${namespace}"}`);
        return (r.data?.result.length ?? 0) > 0 ? true : undefined;
      },
      30_000,
    );
    await eventually(
      "five scrapes of the controller",
      async () => {
        const r = await instantQuery(url, 'count_over_time(up{job="syncgov"}[1m])');
        return Number(r.data?.result[0]?.value[1] ?? 0) >= 5 ? true : undefined;
      },
      30_000,
    );
    const up = await instantQuery(url, 'up{job="syncgov"}');
    expect(up.data?.result[0]?.value[1], "the controller's /metrics scrapes successfully").toBe("1");
    await new Promise((r) => setTimeout(r, 3000));

    // Every dashboard query evaluates; those about what the test produced return series.
    const vars = { namespace, job: jobName };
    const empty: string[] = [];
    for (const q of panelQueries) {
      const expr = substitute(q.expr, vars);
      expect(expr, `${q.panel} ${q.refId}: no variable left`).not.toMatch(/\$/);
      const r = await instantQuery(url, expr);
      expect(r.status, `${q.panel} ${q.refId}: ${expr}: ${r.error}`).toBe("success");
      if ((r.data?.result.length ?? 0) === 0 && !MAY_BE_EMPTY.has(expr))
        empty.push(`${q.panel} ${q.refId}: ${expr}`);
    }
    expect(empty, "dashboard queries without data").toEqual([]);
    // The job's labels survive the scrape (honor_labels), as the variables' queries expect.
    for (const v of dashboard.templating.list.filter((t) => t.type === "query")) {
      const m = /^label_values\((.*), (\w+)\)$/.exec(v.definition ?? "");
      expect(m, v.name).not.toBeNull();
      const r = await instantQuery(url, `group by (${m![2]}) (${substitute(m![1]!, vars)})`);
      expect(r.status).toBe("success");
      expect(r.data!.result.map((s) => s.metric[m![2]!])).toContain(
        v.name === "namespace" ? namespace : jobName,
      );
    }

    // Every alert expression evaluates; on this healthy system none of the job's alerts holds.
    for (const a of alerts) {
      const r = await instantQuery(url, a.expr);
      expect(r.status, `${a.alert}: ${r.error}`).toBe("success");
    }
    const quiet = ["SyncgovNoLeader", "SyncgovBreakerOpen", "SyncgovValidationFailing", "SyncgovRunsFailing"];
    for (const name of quiet) {
      const r = await instantQuery(url, alerts.find((a) => a.alert === name)!.expr);
      expect(r.data?.result, name).toEqual([]);
    }
    // Prometheus loaded the very rules file and evaluates every rule without error.
    const loaded = (await (await fetch(`${url}/api/v1/rules?type=alert`)).json()) as {
      data: { groups: { rules: { name: string; health: string; lastError?: string }[] }[] };
    };
    const evaluated = loaded.data.groups.flatMap((g) => g.rules);
    expect(evaluated.map((r) => r.name).sort()).toEqual(alerts.map((a) => a.alert).sort());
    for (const r of evaluated) expect(r.health, `${r.name}: ${r.lastError}`).toBe("ok");
    writeFileSync(
      join(testEnv().runDir, `prometheus-${namespace}`, "metric-names.txt"),
      ((await (await fetch(`${url}/api/v1/label/__name__/values`)).json()) as { data: string[] }).data
        .filter((n) => n.startsWith("syncgov_"))
        .join("\n"),
    );
  });
});
