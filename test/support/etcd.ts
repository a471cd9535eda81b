import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { testEnv } from "./env.ts";

/** Compacts etcd at its current revision: every older resourceVersion is gone from etcd. */
export async function compactEtcd(): Promise<string> {
  const etcd = testEnv().etcd;
  const range = await fetch(`${etcd}/v3/kv/range`, { method: "POST", body: JSON.stringify({ key: "AA==" }) });
  const revision = ((await range.json()) as { header: { revision: string } }).header.revision;
  const compaction = await fetch(`${etcd}/v3/kv/compaction`, {
    method: "POST",
    body: JSON.stringify({ revision, physical: true }),
  });
  if (compaction.status !== 200) throw new Error(`etcd compaction failed: ${await compaction.text()}`);
  return revision;
}

/** The API server's host and port, from the test kubeconfig. */
export function apiServerAddress(): { host: string; port: number } {
  const m = /server: https:\/\/([\d.]+):(\d+)/.exec(readFileSync(testEnv().kubeconfig, "utf8"));
  if (!m) throw new Error("no server in the test kubeconfig");
  return { host: m[1]!, port: Number(m[2]) };
}

/** A copy of the test kubeconfig whose server is 127.0.0.1:<port> (e.g. a fault proxy). */
export function kubeconfigVia(port: number, name: string): string {
  const text = readFileSync(testEnv().kubeconfig, "utf8").replace(
    /server: https:\/\/[\d.]+:\d+/,
    `server: https://127.0.0.1:${port}`,
  );
  const path = join(testEnv().runDir, `kubeconfig-${name}`);
  writeFileSync(path, text, { mode: 0o600 });
  return path;
}
