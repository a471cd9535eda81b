import type { KubernetesObject } from "@kubernetes/client-node";
import { afterAll, afterEach, beforeAll } from "vitest";
import type { SyncPolicy } from "../../controller/api/syncpolicy.ts";
import type { SyncRunSpec, SyncRunStatus } from "../../controller/api/syncrun.ts";
import { validateSyncPolicy } from "../../controller/api/validate.ts";
import { ensureTopic, jobConsumerGroup, produceJson } from "../../controller/connectors/kafka/cluster.ts";
import { SYNCJOBS, SYNCPOLICIES, SYNCRUNS } from "../../controller/kube/resource.ts";
import { patchStatus } from "../../controller/kube/status.ts";
import { admittedPolicy } from "../../controller/policy/admitted.ts";
import { jobPolicyView } from "../../controller/policy/job-view.ts";
import {
  type ClusterRunOptions,
  type ClusterRunOutcome,
  type RunRef,
  runSyncRun,
} from "../../controller/runner/cluster.ts";
import { eventually } from "./controller.ts";
import { testEnv, uniqueName } from "./env.ts";
import type { KafkaToPostgres } from "./kafka.ts";
import { type KubeClients, kubeClients } from "./kube.ts";
import { installCrds } from "./kubectl.ts";

/** The Secret every RunNamespace holds from the start: `url`, the test database's connection URL. */
export const DATABASE_SECRET = "db";

/**
 * A namespace on the test API server where a test file creates SyncJobs and SyncRuns and reads the
 * runs' statuses. The name is fixed at construction, before the namespace exists, so that a file can
 * name its logs and Kafka groups after it at its top level.
 */
export class RunNamespace {
  readonly name: string;
  readonly clients: KubeClients;

  constructor(prefix: string, clients: KubeClients = kubeClients()) {
    this.name = uniqueName(prefix);
    this.clients = clients;
  }

  /** Installs the CRDs, creates the namespace and its DATABASE_SECRET. */
  async create(): Promise<void> {
    await installCrds();
    await this.clients.core.createNamespace({ body: { metadata: { name: this.name } } });
    await this.secret(DATABASE_SECRET, { url: testEnv().databaseUrl });
  }

  /**
   * Deletes the namespace, ignoring failure. The test control plane has no namespace controller:
   * the namespace stays, its contents are tiny.
   */
  async delete(): Promise<void> {
    await this.clients.core.deleteNamespace({ name: this.name }).catch(() => {});
  }

  async secret(name: string, stringData: Record<string, string>): Promise<void> {
    await this.clients.core.createNamespacedSecret({
      namespace: this.name,
      body: { metadata: { name }, stringData },
    });
  }

  /** Creates the SyncJob `name` with `spec`; returns its name. */
  async createJob(
    name: string,
    spec: Record<string, unknown>,
    annotations?: Record<string, string>,
  ): Promise<string> {
    await this.clients.custom.createNamespacedCustomObject({
      ...SYNCJOBS,
      namespace: this.name,
      body: {
        apiVersion: "syncgov.io/v1alpha1",
        kind: "SyncJob",
        metadata: { name, ...(annotations ? { annotations } : {}) },
        spec,
      },
    });
    return name;
  }

  /**
   * Creates a SyncRun of the job, named uniquely after its type and the job, and admits it as the
   * controller's scheduler does: its status records the job's effective policy (status.policy),
   * computed from the SyncPolicies in the cluster and the namespace's labels by the same functions.
   * The runner executes only runs that carry that record.
   */
  async createRun(jobName: string, spec: Partial<Omit<SyncRunSpec, "jobName">> = {}): Promise<RunRef> {
    const name = uniqueName(`${(spec.type ?? "run").toLowerCase()}-${jobName}`.slice(0, 40));
    await this.clients.custom.createNamespacedCustomObject({
      ...SYNCRUNS,
      namespace: this.name,
      body: {
        apiVersion: "syncgov.io/v1alpha1",
        kind: "SyncRun",
        metadata: { name },
        spec: { jobName, ...spec },
      },
    });
    const ref = { namespace: this.name, name };
    await this.admit(ref, jobName);
    return ref;
  }

  /** Records the job's effective policy on the run, as admission does (an empty one for an invalid job). */
  async admit(ref: RunRef, jobName: string): Promise<void> {
    const { custom, core } = this.clients;
    const job = (await custom
      .getNamespacedCustomObject({ ...SYNCJOBS, namespace: this.name, name: jobName })
      .catch(() => undefined)) as KubernetesObject | undefined;
    const list = (await whileBusy(() => custom.listClusterCustomObject({ ...SYNCPOLICIES }))) as {
      items: KubernetesObject[];
    };
    const policies = list.items.flatMap((p) => {
      const parsed = validateSyncPolicy(p);
      return parsed.ok ? [{ name: p.metadata?.name ?? "", spec: (parsed.value as SyncPolicy).spec }] : [];
    });
    const ns = await whileBusy(() => core.readNamespace({ name: this.name }));
    const view = job
      ? jobPolicyView(job, policies, {
          name: this.name,
          labels: { "kubernetes.io/metadata.name": this.name, ...(ns.metadata?.labels ?? {}) },
        })
      : undefined;
    const policy = view?.effective
      ? admittedPolicy(view.effective)
      : { policies: [], requiredMasking: [], breaker: {} };
    await patchStatus(custom, { resource: SYNCRUNS, namespace: this.name, name: ref.name }, { policy });
  }

  /** The run's status; empty while the runner has written none. */
  async runStatus(ref: RunRef): Promise<SyncRunStatus> {
    const run = (await this.clients.custom.getNamespacedCustomObject({ ...SYNCRUNS, ...ref })) as {
      status?: SyncRunStatus;
    };
    return run.status ?? {};
  }
}

/** A RunNamespace created in a beforeAll and deleted in an afterAll of the calling test file. */
export function runNamespace(prefix: string): RunNamespace {
  const namespace = new RunNamespace(prefix);
  beforeAll(() => namespace.create(), 120_000);
  afterAll(() => namespace.delete());
  return namespace;
}

/** A realtime SyncJob reading `topic` (3 partitions) into `table`, which has an `id` key column. */
export interface RealtimeJob {
  readonly job: string;
  readonly topic: string;
  readonly table: string;
}

/** A realtime session running in process; stop() cancels it and returns its outcome. */
export interface RealtimeSession {
  readonly ref: RunRef;
  readonly done: Promise<ClusterRunOutcome>;
  stop(): Promise<ClusterRunOutcome>;
}

/** What runSyncRun gets besides the run, its KubeConfig, its signal and the test Kafka brokers. */
export type InProcessRunOptions = Omit<ClusterRunOptions, "kubeConfig" | "signal" | "kafkaBrokers">;

/**
 * Runs SyncRuns of realtime jobs in this process with runSyncRun (as the in-process executor does),
 * against the test Kafka and PostgreSQL of `streams`, in `namespace`.
 */
export class RealtimeRuns {
  readonly #namespace: RunNamespace;
  readonly #streams: KafkaToPostgres;
  readonly #options: InProcessRunOptions;
  readonly #sessions: RealtimeSession[] = [];

  constructor(namespace: RunNamespace, streams: KafkaToPostgres, options: InProcessRunOptions) {
    this.#namespace = namespace;
    this.#streams = streams;
    this.#options = options;
  }

  /**
   * A topic, a target table made of `columns`, and a realtime SyncJob between them writing through
   * DATABASE_SECRET unless `secret` says otherwise. `target` adds to the job's target.sql, `spec` to
   * its spec. The topics and groups the job's runs make (buffer, dead letters, replay) are removed
   * after the file along with the table.
   */
  async createJob(
    prefix: string,
    options: {
      columns: string;
      secret?: string;
      target?: Record<string, unknown>;
      spec?: Record<string, unknown>;
    },
  ): Promise<RealtimeJob> {
    const namespace = this.#namespace.name;
    const job = uniqueName(prefix);
    const topic = `${job}.changes`;
    const { topics, groups, admin, tables } = this.#streams;
    topics.push(topic, `syncgov.buffer.${namespace}.${job}`, `syncgov.dlq.${namespace}.${job}`);
    groups.push(jobConsumerGroup(namespace, job), `syncgov.buffer.${namespace}.${job}.replay`);
    await ensureTopic(admin, topic, { partitions: 3 });
    const table = await tables.create(prefix, options.columns);
    await this.#namespace.createJob(job, {
      mode: "realtime",
      source: { kafka: { topic } },
      target: {
        sql: {
          connectionSecretRef: { name: options.secret ?? DATABASE_SECRET },
          table,
          keyColumns: ["id"],
          ...options.target,
        },
      },
      ...options.spec,
    });
    return { job, topic, table };
  }

  /** Produces each record as JSON keyed by its id, so that one key's records stay in order. */
  async produce(topic: string, records: readonly { readonly id: number }[]): Promise<void> {
    await produceJson(
      this.#streams.kafka,
      topic,
      records.map((r) => ({ key: String(r.id), value: r })),
    );
  }

  /** Executes the run to its end, or until `signal` cancels it. */
  execute(ref: RunRef, signal?: AbortSignal): Promise<ClusterRunOutcome> {
    return runSyncRun(ref, {
      ...this.#options,
      kubeConfig: this.#namespace.clients.kubeConfig,
      signal,
      kafkaBrokers: testEnv().kafkaBrokers.split(","),
    });
  }

  /** Starts a Realtime run of the job; stopSessions() stops it if the test does not. */
  async startSession(job: string): Promise<RealtimeSession> {
    const ref = await this.#namespace.createRun(job, { type: "Realtime" });
    const cancel = new AbortController();
    const done = this.execute(ref, cancel.signal);
    const session = {
      ref,
      done,
      stop: async () => {
        cancel.abort();
        return done;
      },
    };
    this.#sessions.push(session);
    return session;
  }

  /** Stops every session started so far that is not stopped yet. */
  async stopSessions(): Promise<void> {
    for (const session of this.#sessions.splice(0)) await session.stop();
  }

  /**
   * Waits until the session's status `holds` while it is Running; returns that status. A session
   * that is not Running does not count: on timeout the error names its phase and message.
   */
  until(
    ref: RunRef,
    what: string,
    holds: (status: SyncRunStatus) => boolean,
    timeoutMs = 60_000,
  ): Promise<SyncRunStatus> {
    return eventually(
      what,
      async () => {
        const status = await this.#namespace.runStatus(ref);
        if (status.phase !== "Running") throw new Error(`the session is ${status.phase}: ${status.message}`);
        return holds(status) ? status : undefined;
      },
      timeoutMs,
    );
  }
}

/** RealtimeRuns whose sessions are stopped after each test of the calling file, whatever its outcome. */
export function realtimeRuns(
  namespace: RunNamespace,
  streams: KafkaToPostgres,
  options: InProcessRunOptions,
): RealtimeRuns {
  const runs = new RealtimeRuns(namespace, streams, options);
  afterEach(() => runs.stopSessions());
  return runs;
}

/**
 * Retries a call the API server answers with 429 (its storage for a just-updated CRD is
 * re-initializing) or 5xx, as client-go's clients do, for up to 10 s.
 */
async function whileBusy<T>(call: () => Promise<T>): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await call();
    } catch (error) {
      const code = (error as { code?: number }).code ?? 0;
      if (attempt >= 20 || (code !== 429 && code < 500)) throw error;
    }
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
}
