/**
 * A SyncRun executed against the API server: what `syncgov run <namespace>/<run>` does, and what the
 * in-process executor calls. It reads the SyncRun (with the policy the controller recorded when it
 * admitted it: required masking and breaker bounds) and its SyncJob, resolves the connection
 * Secrets and the cursor of the job's last successful run, runs ./run.ts, and reports into the
 * SyncRun's status (merge patches of the status subresource) and as events. It never reads
 * SyncPolicies.
 *
 * Status it writes: phase Running with startTime (kept if already set), attempts + 1 and the
 * OpenLineage runId (kept if already set) at the start; rowsRead/rowsWritten/rowsRejected at most once
 * per second; for a realtime session also rowsBuffered and breaker as they change; at the end phase
 * Succeeded/Failed/Cancelled, completionTime, counts, validation, cursor, message, and a condition
 * of the same name as the phase (plus Validated when validated). A run already finished is not run
 * again: its recorded phase is returned. Every message is scrubbed of the Secret values read.
 *
 * Unless the caller passes its own, runs of a job's Kafka side use the stream runner (./stream.ts)
 * with the Kafka bootstrap servers of the job (spec.source.kafka.brokers) or of the runner's
 * environment (KAFKA_BROKERS, which the controller sets), and lineage goes to the process's
 * OpenLineage sink (./lineage-sink.ts, configured by SYNCGOV_LINEAGE*; console by default).
 */

import { hostname } from "node:os";
import { CoreV1Api, CustomObjectsApi, type KubeConfig, type KubernetesObject } from "@kubernetes/client-node";
import { context } from "@opentelemetry/api";
import type { Condition } from "../api/common.ts";
import { isFinishedPhase, RUNNER_HEARTBEAT_INTERVAL_MS } from "../api/phases.ts";
import type { RunPhase, SyncRunStatus } from "../api/syncrun.ts";
import { describeErrors, validateSyncJob, validateSyncRun } from "../api/validate.ts";
import { type EventRecord, EventRecorder } from "../kube/events.ts";
import { describeApiError, isNotFound, SYNCJOBS, SYNCRUNS, statusCodeOf } from "../kube/resource.ts";
import { kubeTime, patchStatus, setCondition } from "../kube/status.ts";
import { isUuidV7, uuidv7 } from "../lineage/uuid.ts";
import type { MaskingRequirement } from "../masking/masking.ts";
import type { BreakerConfigInput } from "../resilience/breaker-config.ts";
import { writeTableOf } from "../shadow/state.ts";
import { contextFromTraceparent } from "../telemetry/trace-context.ts";
import type { LineageSink } from "./lineage.ts";
import { processLineageSink } from "./lineage-sink.ts";
import { executeRun } from "./run.ts";
import { scrubbedErrorMessage, secretScrubber } from "./secrets.ts";
import { shadowFillRunInput, specWritingTo } from "./shadow-fill.ts";
import { createStreamRunner } from "./stream.ts";
import { RunTelemetry } from "./telemetry.ts";
import type { RunInput, RunLogger, RunResult, StreamRunner, StreamStatus } from "./types.ts";

export interface RunRef {
  readonly namespace: string;
  readonly name: string;
}

/** "namespace/name" → RunRef; throws for anything else. */
export function parseRunRef(text: string): RunRef {
  const m = /^([a-z0-9]([-a-z0-9]*[a-z0-9])?)\/([a-z0-9]([-a-z0-9.]*[a-z0-9])?)$/.exec(text);
  if (!m) throw new Error(`expected <namespace>/<run>, got ${JSON.stringify(text)}`);
  return { namespace: m[1]!, name: m[3]! };
}

/**
 * Annotation on a SyncJob naming the Secret that holds the salt of its hash masking, as
 * `<secret>` (key "salt") or `<secret>/<key>`. Deprecated: spec.maskingKeySecretRef names the key
 * and takes precedence; only the spec field satisfies a policy that requires keyed hashing.
 */
export const MASKING_SALT_ANNOTATION = "syncgov.io/masking-salt-secret";

export interface ClusterRunOptions {
  readonly kubeConfig: KubeConfig;
  readonly signal?: AbortSignal | undefined;
  readonly log?: RunLogger | undefined;
  /** Default: the process's OpenLineage sink, configured from the environment. */
  readonly lineage?: LineageSink | undefined;
  /** Default: the stream runner of ./stream.ts. */
  readonly stream?: StreamRunner | undefined;
  /** Kafka bootstrap servers for jobs that name none; default KAFKA_BROKERS (comma-separated). */
  readonly kafkaBrokers?: readonly string[] | undefined;
  readonly progressIntervalMs?: number;
  readonly batchSize?: number;
  /** Reported as events.k8s.io reportingInstance; default the host name. */
  readonly instance?: string;
  /** How often the runner writes status.heartbeatTime while it runs; default RUNNER_HEARTBEAT_INTERVAL_MS (10 s). */
  readonly heartbeatIntervalMs?: number;
  /**
   * How long the final status write is retried while the API server is away (connection errors,
   * 429, 5xx); default FINAL_STATUS_TIMEOUT_MS (15 min), or SYNCGOV_FINAL_STATUS_TIMEOUT_SECONDS.
   * The runner does not return (and `syncgov run` does not exit) before the write landed or this passed.
   */
  readonly finalStatusTimeoutMs?: number;
}

/**
 * The default bound on retrying the final status write: longer than any API server restart or
 * control-plane upgrade we expect, shorter than a runner Job's usual activeDeadlineSeconds.
 */
export const FINAL_STATUS_TIMEOUT_MS = 900_000;

function finalStatusTimeout(options: ClusterRunOptions): number {
  if (options.finalStatusTimeoutMs !== undefined) return options.finalStatusTimeoutMs;
  const seconds = Number(process.env.SYNCGOV_FINAL_STATUS_TIMEOUT_SECONDS);
  return Number.isFinite(seconds) && seconds > 0 ? seconds * 1000 : FINAL_STATUS_TIMEOUT_MS;
}

export interface ClusterRunOutcome {
  readonly phase: RunPhase;
  /** Absent when the run had finished before and was not run again, or failed before it began. */
  readonly result?: RunResult | undefined;
  readonly alreadyFinished: boolean;
  readonly message: string;
}

const FIELD_MANAGER = "syncgov-runner";
/** How long a finished run waits for its lineage events to be delivered. */
const LINEAGE_FLUSH_MS = 10_000;
const defaultStreamRunner = createStreamRunner();

/** A step before the data moves failed; the message is for status. */
class PreparationError extends Error {
  override readonly name = "PreparationError";
  readonly reason: string;
  constructor(reason: string, message: string) {
    super(message);
    this.reason = reason;
  }
}

export async function runSyncRun(ref: RunRef, options: ClusterRunOptions): Promise<ClusterRunOutcome> {
  const { kubeConfig } = options;
  const custom = kubeConfig.makeApiClient(CustomObjectsApi);
  const core = kubeConfig.makeApiClient(CoreV1Api);
  const events = new EventRecorder({
    kubeConfig,
    controller: "syncgov.io/runner",
    instance: options.instance ?? hostname(),
    onError: (error) =>
      options.log?.warn(
        { run: `${ref.namespace}/${ref.name}`, error: describeApiError(error) },
        "event not recorded",
      ),
  });
  const runKey = `${ref.namespace}/${ref.name}`;
  const secrets: string[] = [];
  let scrub = secretScrubber(secrets);

  const raw = (await withRetries(() =>
    custom.getNamespacedCustomObject({ ...SYNCRUNS, namespace: ref.namespace, name: ref.name }),
  )) as KubernetesObject & { status?: SyncRunStatus };
  const status = new StatusWriter(custom, ref, raw.status?.conditions);
  const recordedPhase = raw.status?.phase;
  if (isFinishedPhase(recordedPhase)) {
    const message = `SyncRun ${runKey} already finished (${recordedPhase}); not running it again`;
    options.log?.info({ run: runKey, phase: recordedPhase }, message);
    return { phase: recordedPhase, alreadyFinished: true, message };
  }

  // The run's span is a child of the admission span recorded on the run; every span and log line of
  // the run is made inside its context.
  const telemetry = new RunTelemetry(ref, contextFromTraceparent(raw.status?.traceContext));
  const spec = (raw as { spec?: { jobName?: string; type?: string } }).spec;
  telemetry.describe(spec?.jobName ?? "", spec?.type ?? "Batch");
  return context.with(telemetry.context, async (): Promise<ClusterRunOutcome> => {
    try {
      const event = (record: EventRecord) => events.record(raw, { ...record, note: scrub(record.note) });
      const attempts = (raw.status?.attempts ?? 0) + 1;
      const recordedRunId = raw.status?.lineageRunId;
      const lineageRunId = recordedRunId && isUuidV7(recordedRunId) ? recordedRunId : uuidv7();
      const lineage = options.lineage ?? processLineageSink();
      await status.write({
        phase: "Running",
        startTime: raw.status?.startTime ?? kubeTime(new Date()),
        completionTime: null,
        attempts,
        rowsRead: 0,
        rowsWritten: 0,
        rowsRejected: 0,
        rowsBuffered: null,
        breaker: null,
        lineageRunId,
        heartbeatTime: new Date().toISOString(),
        nextAttemptTime: null,
        message: `running (attempt ${attempts})`,
      });
      // Liveness: the controller fails or retries a run whose runner stopped beating (finding 1).
      status.heartbeat(options.heartbeatIntervalMs ?? RUNNER_HEARTBEAT_INTERVAL_MS);
      await event({ type: "Normal", reason: "RunStarted", note: `Runner started attempt ${attempts}.` });

      let result: RunResult | undefined;
      let failure: { reason: string; message: string } | undefined;
      try {
        const run = validateSyncRun(raw);
        if (!run.ok)
          throw new PreparationError("InvalidRun", `the SyncRun is invalid: ${describeErrors(run.errors)}`);
        const jobRaw = await readOrExplain(
          () =>
            custom.getNamespacedCustomObject({
              ...SYNCJOBS,
              namespace: ref.namespace,
              name: run.value.spec.jobName,
            }),
          "JobNotFound",
          `SyncJob ${ref.namespace}/${run.value.spec.jobName}`,
        );
        const job = validateSyncJob(jobRaw);
        if (!job.ok)
          throw new PreparationError("InvalidJob", `the SyncJob is invalid: ${describeErrors(job.errors)}`);
        // In shadow mode the job writes to the shadow table: the runner is pointed at the table the
        // job's shadow state names (controller/shadow/state.ts), and a ShadowFill run is a full copy there.
        const shadow = job.value.status?.shadow;
        const writeTable = writeTableOf(
          shadow?.state ?? "None",
          job.value.spec.target.sql.table,
          shadow?.table,
        );
        const spec = specWritingTo(job.value.spec, writeTable);

        const secret = (name: string, key: string) => readSecretValue(core, ref.namespace, name, key);
        const target = await secret(
          spec.target.sql.connectionSecretRef.name,
          spec.target.sql.connectionSecretRef.key,
        );
        secrets.push(target);
        const source = spec.source.sql
          ? await secret(spec.source.sql.connectionSecretRef.name, spec.source.sql.connectionSecretRef.key)
          : undefined;
        if (source) secrets.push(source);
        const keyRef = job.value.spec.maskingKeySecretRef;
        const saltRef = job.value.metadata.annotations?.[MASKING_SALT_ANNOTATION];
        const maskingSalt = keyRef
          ? await secret(keyRef.name, keyRef.key)
          : saltRef
            ? await secret(...splitSaltRef(saltRef))
            : undefined;
        if (maskingSalt) secrets.push(maskingSalt);
        scrub = secretScrubber(secrets);

        // Policy is decided once, by the controller: the scheduler recorded the job's effective policy
        // on the run when it admitted it (docs/architecture.md). A run without that record was not
        // admitted, and runs nothing: the masking it would have to apply is unknown.
        const admitted = run.value.status?.policy;
        if (!admitted)
          throw new PreparationError(
            "NotAdmitted",
            "the run carries no admitted policy (status.policy): the syncgov controller records it when it admits the run, and only admitted runs are executed (if the controller did admit it, the SyncRun CRD may predate status.policy and the API server dropped it: run `syncgov crds apply`)",
          );
        const requiredMasking: MaskingRequirement[] = admitted.requiredMasking.map((r) => ({ ...r }));
        const breakerBounds: BreakerConfigInput[] = [admitted.breaker];
        const previousCursor = run.value.spec.incremental
          ? await lastCursor(custom, ref, run.value.spec.jobName)
          : undefined;

        const kafkaBrokers = spec.source.kafka?.brokers ?? options.kafkaBrokers ?? brokersFromEnvironment();
        const prepared = (input: RunInput): RunInput =>
          run.value.spec.type === "ShadowFill" ? shadowFillRunInput(input, writeTable) : input;
        result = await executeRun(
          prepared({
            run: { namespace: ref.namespace, name: ref.name, uid: raw.metadata?.uid },
            job: { namespace: ref.namespace, name: run.value.spec.jobName, spec },
            spec: run.value.spec,
            connections: { source, target, kafkaBrokers },
            maskingSalt,
            requiredMasking,
            hashKeyRequired: admitted.hashKeyRequired === true,
            breakerBounds,
            lineageRunId,
            previousCursor,
            signal: options.signal,
          }),
          {
            onProgress: (counts) => {
              telemetry.progress(counts);
              status.progress({ ...counts });
            },
            onStreamStatus: (stream) => {
              telemetry.stream(stream);
              status.progress(streamStatusPatch(stream));
            },
            // Breaker transitions concern the job: `kubectl describe syncjob` shows them.
            onEvent: (record) => void events.record(jobRaw, { ...record, note: scrub(record.note) }),
            lineage,
            stream: options.stream ?? defaultStreamRunner,
            log: options.log,
            progressIntervalMs: options.progressIntervalMs,
            batchSize: options.batchSize,
          },
        );
      } catch (error) {
        failure = {
          reason: error instanceof PreparationError ? error.reason : "PreparationFailed",
          message: `SyncRun ${runKey} could not start: ${scrubbedErrorMessage(error, scrub)}`,
        };
        options.log?.warn({ run: runKey, reason: failure.reason }, failure.message);
      }

      const phase: RunPhase = result ? result.phase : "Failed";
      const reason = result ? result.reason : failure!.reason;
      const message = result ? result.message : failure!.message;
      const finalStatus: Record<string, unknown> = {
        phase,
        // Millisecond precision (still RFC 3339): validations are ordered by when their runs finished,
        // and two runs of a job can finish within one second.
        completionTime: new Date().toISOString(),
        rowsRead: result?.counts.rowsRead ?? 0,
        rowsWritten: result?.counts.rowsWritten ?? 0,
        rowsRejected: result?.counts.rowsRejected ?? 0,
        cursor: result?.phase === "Succeeded" && result.cursor !== undefined ? result.cursor : null,
        ...(result?.stream ? streamStatusPatch(result.stream) : {}),
        validation: result?.validation
          ? {
              result: result.validation.result,
              sourceRows: result.validation.sourceRows,
              targetRows: result.validation.targetRows,
              sourceChecksum: result.validation.sourceChecksum,
              targetChecksum: result.validation.targetChecksum,
            }
          : null,
        message,
      };
      const observedGeneration = raw.metadata?.generation;
      await status.finish(finalStatus, finalStatusTimeout(options), [
        { type: phase, status: "True", reason, message, observedGeneration },
        ...(result?.validation
          ? [
              {
                type: "Validated",
                status: result.validation.result === "Passed" ? ("True" as const) : ("False" as const),
                reason: result.validation.result === "Passed" ? "ChecksumsMatch" : "ChecksumsDiffer",
                message: `source ${result.validation.sourceRows} rows (${result.validation.sourceChecksum}), target ${result.validation.targetRows} rows (${result.validation.targetChecksum})`,
                observedGeneration,
              },
            ]
          : []),
      ]);
      await event({
        type: phase === "Succeeded" ? "Normal" : "Warning",
        reason: phase === "Succeeded" ? "RunSucceeded" : phase === "Cancelled" ? "RunCancelled" : "RunFailed",
        note: message,
      });
      if (result?.validation?.result === "Failed") {
        await event({ type: "Warning", reason: "ValidationFailed", note: message });
      }
      await flushLineage(lineage);
      telemetry.finish(phase, result, message);
      return { phase, result, alreadyFinished: false, message };
    } catch (error) {
      // Only API failures reach here; the run's own failures end in its status above.
      telemetry.finish("Failed", undefined, describeApiError(error));
      throw error;
    }
  });
}

/** A realtime session's status as a merge patch: rates it cannot tell yet are removed, not kept. */
function streamStatusPatch(stream: StreamStatus): Record<string, unknown> {
  return {
    rowsBuffered: stream.rowsBuffered,
    breaker: { slowCallRate: null, failureRate: null, ...stream.breaker },
  };
}

function brokersFromEnvironment(): string[] | undefined {
  const brokers = (process.env.KAFKA_BROKERS ?? "")
    .split(",")
    .map((b) => b.trim())
    .filter((b) => b !== "");
  return brokers.length > 0 ? brokers : undefined;
}

/** Lineage never holds up the runner for long: delivery is bounded, and its failures are the sink's to log. */
async function flushLineage(lineage: LineageSink | undefined): Promise<void> {
  if (!lineage?.flush) return;
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    lineage.flush().catch(() => {}),
    new Promise<void>((resolve) => {
      timer = setTimeout(resolve, LINEAGE_FLUSH_MS);
    }),
  ]);
  clearTimeout(timer);
}

/**
 * Serialises status writes: progress patches never overlap, only the latest pending counts are
 * sent, and nothing is sent after the final write. Progress write failures are ignored (the next
 * one, or the final write, carries the counts); the start and final writes are retried.
 */
class StatusWriter {
  #chain: Promise<void> = Promise.resolve();
  #pending: Record<string, unknown> | undefined;
  #finished = false;
  #heartbeat: NodeJS.Timeout | undefined;
  #conditions: Condition[] | undefined;
  readonly #api: CustomObjectsApi;
  readonly #ref: RunRef;

  constructor(api: CustomObjectsApi, ref: RunRef, conditions: Condition[] | undefined) {
    this.#api = api;
    this.#ref = ref;
    this.#conditions = conditions;
  }

  /** A status write that must land: retried on transient errors, after any progress write in flight. */
  write(status: Record<string, unknown>): Promise<void> {
    const next = this.#chain.then(() => withRetries(() => this.#patch(status)));
    this.#chain = next.catch(() => {});
    return next;
  }

  /**
   * Writes status.heartbeatTime every intervalMs until finish(), in the same chain as progress (a
   * beat never overlaps another write); a beat that fails is not retried, the next one follows.
   */
  heartbeat(intervalMs: number): void {
    clearInterval(this.#heartbeat);
    this.#heartbeat = setInterval(() => {
      if (this.#finished) return;
      this.#chain = this.#chain.then(async () => {
        if (this.#finished) return;
        await this.#patch({ heartbeatTime: new Date().toISOString() }).catch(() => {});
      });
    }, intervalMs);
    this.#heartbeat.unref();
  }

  /** Progress fields (counts, a session's buffer and breaker); pending ones merge, the latest value wins. */
  progress(fields: Record<string, unknown>): void {
    if (this.#finished) return;
    const idle = this.#pending === undefined;
    this.#pending = { ...this.#pending, ...fields };
    if (!idle) return;
    this.#chain = this.#chain.then(async () => {
      const latest = this.#pending;
      this.#pending = undefined;
      if (!latest || this.#finished) return;
      await this.#patch({ ...latest }).catch(() => {});
    });
  }

  /**
   * The final write: retried on transient errors (the API server away, restarting, overloaded) for
   * up to timeoutMs, every 250 ms doubling to 5 s, so the result lands once the API server is back.
   */
  async finish(
    status: Record<string, unknown>,
    timeoutMs: number,
    conditions: Parameters<typeof setCondition>[1][],
  ): Promise<void> {
    this.#finished = true;
    clearInterval(this.#heartbeat);
    const now = new Date();
    let list = this.#conditions;
    for (const c of conditions) list = setCondition(list, c, now).conditions;
    const body = { ...status, heartbeatTime: null, conditions: list };
    const deadline = Date.now() + timeoutMs;
    const next = this.#chain.then(() => untilWritten(() => this.#patch(body), deadline));
    this.#chain = next.catch(() => {});
    await next;
  }

  async #patch(status: Record<string, unknown>): Promise<void> {
    await patchStatus(
      this.#api,
      { resource: SYNCRUNS, namespace: this.#ref.namespace, name: this.#ref.name },
      status,
      { fieldManager: FIELD_MANAGER },
    );
  }
}

/**
 * Calls the API, retrying what a moment's wait can fix: 429 (throttled, or a CRD's storage still
 * initialising), 5xx, and connection errors; up to 6 attempts over about 6 s.
 */
async function withRetries<T>(call: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await call();
    } catch (error) {
      const code = statusCodeOf(error);
      const transient =
        code === undefined ? !(error instanceof PreparationError) : code === 429 || code >= 500;
      if (!transient || attempt >= 6) throw error;
      await new Promise((resolve) => setTimeout(resolve, 100 * 2 ** attempt));
    }
  }
}

/** Whether an API error is one a wait can fix: no answer at all, 429, or 5xx. */
function isTransient(error: unknown): boolean {
  const code = statusCodeOf(error);
  return code === undefined ? !(error instanceof PreparationError) : code === 429 || code >= 500;
}

/**
 * Calls the API until it answers or the deadline passes, retrying transient errors every 250 ms
 * doubling to 5 s: for the one write the runner must not lose, its result.
 */
async function untilWritten<T>(call: () => Promise<T>, deadline: number): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await call();
    } catch (error) {
      const wait = Math.min(250 * 2 ** attempt, 5000);
      if (!isTransient(error) || Date.now() + wait > deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, wait));
    }
  }
}

async function readOrExplain<T>(read: () => Promise<T>, reason: string, what: string): Promise<T> {
  try {
    return await withRetries(read);
  } catch (error) {
    if (isNotFound(error)) throw new PreparationError(reason, `${what} does not exist`);
    throw new PreparationError("ApiError", `cannot read ${what}: ${describeApiError(error)}`);
  }
}

/** The decoded value of one key of a Secret; errors name the Secret and key, never a value. */
async function readSecretValue(
  core: CoreV1Api,
  namespace: string,
  name: string,
  key: string,
): Promise<string> {
  const secret = await readOrExplain(
    () => core.readNamespacedSecret({ namespace, name }),
    "SecretNotFound",
    `Secret ${namespace}/${name}`,
  );
  const encoded = secret.data?.[key];
  if (encoded === undefined) {
    throw new PreparationError("SecretKeyMissing", `Secret ${namespace}/${name} has no key ${key}`);
  }
  const value = Buffer.from(encoded, "base64").toString("utf8");
  if (value === "")
    throw new PreparationError("SecretKeyMissing", `Secret ${namespace}/${name} key ${key} is empty`);
  return value;
}

function splitSaltRef(ref: string): [string, string] {
  const slash = ref.indexOf("/");
  return slash < 0 ? [ref, "salt"] : [ref.slice(0, slash), ref.slice(slash + 1)];
}

/**
 * The cursor of the job's latest Succeeded run that recorded one (by completionTime). Runs removed
 * by TTL or history limits take their cursors with them; a run that finds none copies incrementally
 * from the start, which upserts make correct, only slower.
 */
async function lastCursor(
  custom: CustomObjectsApi,
  ref: RunRef,
  jobName: string,
): Promise<string | undefined> {
  let list: {
    items?: { metadata?: { name?: string }; spec?: { jobName?: string }; status?: SyncRunStatus }[];
  };
  try {
    list = (await withRetries(() =>
      custom.listNamespacedCustomObject({ ...SYNCRUNS, namespace: ref.namespace }),
    )) as typeof list;
  } catch (error) {
    throw new PreparationError(
      "ApiError",
      `cannot list SyncRuns to find the last cursor: ${describeApiError(error)}`,
    );
  }
  let best: { time: string; cursor: string } | undefined;
  for (const item of list.items ?? []) {
    if (item.metadata?.name === ref.name || item.spec?.jobName !== jobName) continue;
    const s = item.status;
    if (s?.phase !== "Succeeded" || s.cursor === undefined) continue;
    const time = s.completionTime ?? "";
    if (!best || time > best.time) best = { time, cursor: s.cursor };
  }
  return best?.cursor;
}
