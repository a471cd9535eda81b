import { spawn } from "node:child_process";
import { testEnv } from "./env.ts";

export interface KubectlResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the machine's kubectl against the test control plane. */
export function kubectl(args: string[], input?: string): Promise<KubectlResult> {
  return new Promise((resolve, reject) => {
    const child = spawn("kubectl", ["--kubeconfig", testEnv().kubeconfig, ...args], { stdio: "pipe" });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (c) => {
      stdout += c;
    });
    child.stderr.on("data", (c) => {
      stderr += c;
    });
    child.on("error", reject);
    child.on("close", (code) => resolve({ code: code ?? -1, stdout, stderr: dropSkewWarning(stderr) }));
    child.stdin.end(input ?? "");
  });
}

/** Like kubectl, but throws with stderr when the command fails. */
export async function kubectlOk(args: string[], input?: string): Promise<string> {
  const r = await kubectl(args, input);
  if (r.code !== 0) throw new Error(`kubectl ${args.join(" ")} failed (${r.code}): ${r.stderr}`);
  return r.stdout;
}

function dropSkewWarning(stderr: string): string {
  return stderr
    .split("\n")
    .filter((l) => !l.startsWith("WARNING: version difference"))
    .join("\n");
}

/**
 * Installs the generated CRDs (idempotent; from crds/ unless another folder is given, e.g. the Helm
 * chart's copy) through the installer `npm run dev` uses (controller/kube/apply.ts), so every suite
 * runs on CRDs installed the way the product installs them, and waits until the API server serves them.
 */
export async function installCrds(dir?: string): Promise<void> {
  const { repoPath } = await import("./manifests.ts");
  const { applyManifests, readManifests } = await import("../../controller/kube/apply.ts");
  const { kubeConfig } = await import("./env.ts");
  await applyManifests(kubeConfig(), readManifests([dir ?? repoPath("crds")]));
  await kubectlOk([
    "wait",
    "--for=condition=Established",
    "--timeout=60s",
    "crd/syncjobs.syncgov.io",
    "crd/syncruns.syncgov.io",
    "crd/syncpolicies.syncgov.io",
  ]);
}
