/**
 * The admission decision: which pending SyncRuns may start now, which wait (and why), which are
 * skipped or replace a running run of their job. A pure function of one consistent view of the
 * registry, so that it is unit-tested without I/O and so that its result can be committed with a
 * compare-and-swap on the view's version: two schedulers deciding on the same version cannot both
 * commit, which is what keeps concurrent reconciles from over-admitting.
 */

export interface PendingRun {
  /** Registry key of the run. */
  key: string;
  namespace: string;
  name: string;
  jobName: string;
  /** Identity of the target (connection Secret and table) for the per-target limit. */
  target: string;
  priority: number;
  /** Creation time in ms; earlier runs go first among equal priorities. */
  createdAt: number;
  concurrencyPolicy: "Allow" | "Forbid" | "Replace";
  limits: Limits;
  /** A Realtime session: one per job at a time, whoever created it. */
  realtime?: boolean;
  /** A batch window rule that keeps the run from starting now, if any. */
  outsideWindow?: string | undefined;
}

export interface Limits {
  maxRunsPerNamespace?: number | undefined;
  maxRunsPerTarget?: number | undefined;
  maxRunsGlobal?: number | undefined;
}

export interface RunningRun {
  key: string;
  namespace: string;
  jobName: string;
  target: string;
  realtime?: boolean;
}

export interface AdmissionInput {
  pending: readonly PendingRun[];
  running: readonly RunningRun[];
}

export type Decision =
  | { kind: "Admit"; run: PendingRun }
  | { kind: "Queue"; run: PendingRun; reason: string; message: string }
  | { kind: "Skip"; run: PendingRun; message: string }
  | { kind: "Replace"; run: PendingRun; cancel: string[] };

/** Queue order: higher priority first, then older, then by name for a total order. */
export function queueOrder(a: PendingRun, b: PendingRun): number {
  return b.priority - a.priority || a.createdAt - b.createdAt || a.key.localeCompare(b.key);
}

/**
 * Decides every pending run. Best-effort order: a run held back by its own namespace or target does
 * not hold back runs of other namespaces or targets behind it (as Kueue's BestEffortFIFO).
 */
export function decideAdmissions(input: AdmissionInput): Decision[] {
  const byNamespace = new Map<string, number>();
  const byTarget = new Map<string, number>();
  const activeByJob = new Map<string, { key: string; target: string; realtime?: boolean | undefined }[]>();
  const inc = (m: Map<string, number>, k: string, d = 1) => m.set(k, (m.get(k) ?? 0) + d);
  for (const r of input.running) {
    inc(byNamespace, r.namespace);
    inc(byTarget, r.target);
    const jobKey = `${r.namespace}/${r.jobName}`;
    activeByJob.set(jobKey, [
      ...(activeByJob.get(jobKey) ?? []),
      { key: r.key, target: r.target, realtime: r.realtime },
    ]);
  }
  let global = input.running.length;

  const decisions: Decision[] = [];
  for (const run of [...input.pending].sort(queueOrder)) {
    const jobKey = `${run.namespace}/${run.jobName}`;
    const active = activeByJob.get(jobKey) ?? [];
    // A job streams through one session: a second Realtime run (a tenant's extra one, say) would
    // double its reads and writes and escape the limits the first one holds.
    const session = run.realtime ? active.find((a) => a.realtime) : undefined;
    if (session) {
      decisions.push({
        kind: "Skip",
        run,
        message: `job ${run.jobName} already has a realtime session (${session.key}); a job streams through one session at a time`,
      });
      continue;
    }
    // concurrencyPolicy governs the job's runs beside each other, never its standing session.
    const batches = active.filter((a) => !a.realtime);
    if (batches.length > 0 && run.concurrencyPolicy === "Forbid") {
      const keys = batches.map((a) => a.key).join(", ");
      decisions.push({
        kind: "Skip",
        run,
        message: `job ${run.jobName} already has a run (${keys}); concurrencyPolicy is Forbid`,
      });
      continue;
    }
    if (run.outsideWindow) {
      decisions.push({ kind: "Queue", run, reason: "OutsideBatchWindow", message: run.outsideWindow });
      continue;
    }
    // A replacing run frees its job's slots, so the limits are checked as if they were free. A job's
    // own realtime session does not hold back the job's other runs (a hybrid job's compare).
    const replaced = run.concurrencyPolicy === "Replace" ? batches : [];
    const freed = [...replaced, ...(run.realtime ? [] : active.filter((a) => a.realtime))];
    const ns = (byNamespace.get(run.namespace) ?? 0) - freed.length;
    const tgt = (byTarget.get(run.target) ?? 0) - freed.filter((a) => a.target === run.target).length;
    const glob = global - freed.length;
    const { maxRunsPerNamespace: nsMax, maxRunsPerTarget: tgtMax, maxRunsGlobal: globMax } = run.limits;
    if (globMax !== undefined && glob >= globMax) {
      decisions.push({
        kind: "Queue",
        run,
        reason: "GlobalLimit",
        message: `${glob}/${globMax} running in the cluster`,
      });
      continue;
    }
    if (nsMax !== undefined && ns >= nsMax) {
      decisions.push({
        kind: "Queue",
        run,
        reason: "NamespaceLimit",
        message: `${ns}/${nsMax} running in namespace ${run.namespace}`,
      });
      continue;
    }
    if (tgtMax !== undefined && tgt >= tgtMax) {
      decisions.push({
        kind: "Queue",
        run,
        reason: "TargetLimit",
        message: `${tgt}/${tgtMax} running on target ${run.target}`,
      });
      continue;
    }
    if (replaced.length > 0) {
      decisions.push({ kind: "Replace", run, cancel: replaced.map((a) => a.key) });
      for (const a of replaced) {
        inc(byNamespace, run.namespace, -1);
        inc(byTarget, a.target, -1);
        global -= 1;
      }
      activeByJob.set(
        jobKey,
        active.filter((a) => a.realtime),
      );
    } else {
      decisions.push({ kind: "Admit", run });
    }
    inc(byNamespace, run.namespace);
    inc(byTarget, run.target);
    global += 1;
    activeByJob.set(jobKey, [
      ...(activeByJob.get(jobKey) ?? []),
      { key: run.key, target: run.target, realtime: run.realtime },
    ]);
  }
  return decisions;
}
