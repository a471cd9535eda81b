import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { execFileAsync } from "../env/services/process.ts";
import { testEnv } from "./env.ts";
import { repoPath } from "./manifests.ts";

export interface CommandResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface Helm {
  run(args: string[]): Promise<CommandResult>;
  /** Like run, but throws with helm's output when it fails. */
  ok(args: string[]): Promise<string>;
}

/**
 * Helm against the test control plane, built once from the Go module proxy and cached
 * (test/env/obtain/helm.sh), with its config, cache and data directories under `workDir`.
 */
export async function obtainHelm(workDir: string): Promise<Helm> {
  mkdirSync(workDir, { recursive: true });
  const binary = (
    await execFileAsync("bash", [repoPath("test/env/obtain/helm.sh")], { maxBuffer: 1 << 20 })
  ).stdout.trim();
  const run = async (args: string[]): Promise<CommandResult> => {
    try {
      const { stdout, stderr } = await execFileAsync(binary, args, {
        maxBuffer: 16 << 20,
        env: {
          PATH: process.env.PATH ?? "",
          HOME: workDir,
          KUBECONFIG: testEnv().kubeconfig,
          HELM_CACHE_HOME: join(workDir, "helm-cache"),
          HELM_CONFIG_HOME: join(workDir, "helm-config"),
          HELM_DATA_HOME: join(workDir, "helm-data"),
        },
      });
      return { code: 0, stdout, stderr };
    } catch (error) {
      const e = error as { code?: number; stdout?: string; stderr?: string };
      return {
        code: typeof e.code === "number" ? e.code : -1,
        stdout: e.stdout ?? "",
        stderr: e.stderr ?? "",
      };
    }
  };
  return {
    run,
    ok: async (args) => {
      const r = await run(args);
      if (r.code !== 0) throw new Error(`helm ${args.join(" ")} failed (${r.code}): ${r.stderr}${r.stdout}`);
      return r.stdout;
    },
  };
}
