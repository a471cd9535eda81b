import { writeFileSync } from "node:fs";
import type { Command } from "commander";

/**
 * `syncgov policy test <paths...>` and `syncgov policy export <paths...>`. Both set the exit code to
 * 1 when something is wrong, and neither talks to a cluster.
 */
export function registerPolicyCommands(program: Command): void {
  const policy = program
    .command("policy")
    .description("Test SyncPolicies against example jobs, and export them as ValidatingAdmissionPolicies.");

  policy
    .command("test")
    .description(
      "Run the PolicyTest files found in the given files and directories (e.g. policies/); fails on a wrong verdict, an invalid manifest or a rule that does not compile.",
    )
    .argument("<paths...>", "PolicyTest files or directories to search for them")
    .action(async (paths: string[]) => {
      const { runPolicyTests } = await import("./policy-tests.ts");
      const report = runPolicyTests(paths, (line) => console.log(line));
      process.exitCode = report.ok ? 0 : 1;
    });

  policy
    .command("export")
    .description(
      "Write a ValidatingAdmissionPolicy and binding for each SyncPolicy, so the API server rejects violating SyncJobs at apply time.",
    )
    .argument("<paths...>", "SyncPolicy files, or directories whose SyncPolicies to export")
    .option("-o, --output <file>", "write the YAML to a file instead of standard output")
    .action(async (paths: string[], opts: { output?: string }) => {
      const { loadPolicies } = await import("./policy-files.ts");
      const { admissionPoliciesYaml } = await import("./admission-export.ts");
      const { policies, problems } = loadPolicies(paths);
      if (problems.length > 0 || policies.length === 0) {
        for (const p of problems) console.error(`ERROR ${p}`);
        if (policies.length === 0 && problems.length === 0)
          console.error(`ERROR no SyncPolicy in ${paths.join(", ")}`);
        process.exitCode = 1;
        return;
      }
      const yaml = admissionPoliciesYaml(policies);
      if (opts.output) {
        writeFileSync(opts.output, yaml);
        console.error(
          `wrote ${policies.length * 2} objects for ${policies.length} SyncPolicies to ${opts.output}`,
        );
      } else {
        process.stdout.write(yaml);
      }
    });
}
