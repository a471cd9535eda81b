/**
 * `<job>-<kind><unix seconds>`: deterministic per trigger (a cron fire, a manual request), so a
 * reconcile repeated before the run shows up in the informer creates no duplicate (the create
 * answers 409 AlreadyExists).
 */
export function runName(job: string, kind: string, at: Date): string {
  const suffix = `-${kind}${Math.floor(at.getTime() / 1000).toString(36)}`;
  return `${job.slice(0, 253 - suffix.length)}${suffix}`;
}
