import { runCommand } from "../env/services/process.ts";
import { repoPath } from "./manifests.ts";

/**
 * Runs `syncgov <args>` from the source tree as a user would, with `env` over this process's
 * environment; resolves with its exit code and its stdout and stderr together.
 */
export async function syncgovCli(
  args: readonly string[],
  env: NodeJS.ProcessEnv = {},
): Promise<{ code: number; out: string }> {
  const r = await runCommand(process.execPath, [repoPath("controller/cli.ts"), ...args], {
    env: { ...process.env, ...env },
  });
  return { code: r.code ?? -1, out: `${r.stdout}${r.stderr}` };
}
