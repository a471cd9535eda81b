#!/usr/bin/env node
/**
 * The syncgov command line: the controller itself, the runner, and the tools platform teams use
 * (policy tests and exports, approvals, CRD generation).
 */
import { Command, InvalidArgumentError } from "commander";
import { registerShadowCommands } from "./cli/approve.ts";
import { registerPolicyCommands } from "./policy/cli.ts";
import { registerRunCommand } from "./runner/cli.ts";

const program = new Command()
  .name("syncgov")
  .description("Govern data-sync jobs on Kubernetes with policy as code.")
  .showHelpAfterError();

function intOption(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError("must be a whole number");
  return n;
}

program
  .command("controller")
  .description("Run the controller: informers, leader election, reconcilers, HTTP endpoints.")
  .option(
    "--kubeconfig <path>",
    "kubeconfig file (default: in-cluster, then KUBECONFIG, then ~/.kube/config)",
  )
  .option("--http-port <port>", "port of /healthz, /readyz, /metrics and /api/registry", intOption, 8080)
  .option(
    "--http-auth <mode>",
    "who may read /metrics and /api/registry: kubernetes (a bearer token, checked with TokenReview and SubjectAccessReview) or none",
    "kubernetes",
  )
  .option("--workers <n>", "concurrent reconciles", intOption, 4)
  .option("--lease-namespace <ns>", "namespace of the leader-election Lease", "syncgov-system")
  .option("--lease-name <name>", "name of the leader-election Lease", "syncgov-controller")
  .option("--lease-duration <s>", "leader lease duration in seconds", intOption, 15)
  .option("--renew-deadline <s>", "leader renew deadline in seconds", intOption, 10)
  .option("--retry-period <s>", "leader retry period in seconds", intOption, 2)
  .option("--identity <id>", "leader-election identity (default: hostname and pid)")
  .option(
    "--executor <kind>",
    "how runs are executed: InProcess, ChildProcess, Job, or External (left to an outside runner)",
    "ChildProcess",
  )
  .option("--runner-image <image>", "image of runner Jobs (Job executor)")
  .option(
    "--runner-host-network",
    "runner Jobs' pods use the node's network (Job executor; single-node or local clusters without a pod network)",
  )
  .option("--runner-log-dir <dir>", "directory of runner logs (ChildProcess executor)")
  .action(async (opts) => {
    const { runController } = await import("./manager.ts");
    await runController(opts);
  });

program
  .command("generate-crds")
  .description(
    "Write the CustomResourceDefinitions generated from the zod schemas into crds/ and the Helm chart's crds/.",
  )
  .action(async () => {
    const { writeCrds } = await import("./api/generate.ts");
    const changed = writeCrds();
    console.log(
      changed.length ? `wrote ${changed.join(", ")}` : "crds/ and the chart's crds/ are up to date",
    );
  });

const crds = program
  .command("crds")
  .description(
    "The CustomResourceDefinitions of this syncgov version (Helm installs them only on first install).",
  );
crds
  .command("apply")
  .description(
    "Server-side apply this version's CRDs and wait until they are served: run it before `helm upgrade`.",
  )
  .option(
    "--kubeconfig <path>",
    "kubeconfig file (default: KUBECONFIG, then ~/.kube/config, then in-cluster)",
  )
  .action(async (opts: { kubeconfig?: string }) => {
    const { KubeConfig } = await import("@kubernetes/client-node");
    const { applyCrds } = await import("./kube/crds.ts");
    const kc = new KubeConfig();
    if (opts.kubeconfig) kc.loadFromFile(opts.kubeconfig);
    else kc.loadFromDefault();
    for (const name of await applyCrds(kc))
      console.log(`customresourcedefinition.apiextensions.k8s.io/${name} applied`);
  });
crds
  .command("print")
  .description("Print this version's CRDs as YAML (e.g. for `kubectl apply --server-side -f -`).")
  .action(async () => {
    const { renderCrds } = await import("./api/generate.ts");
    console.log(
      renderCrds()
        .map((c) => c.yaml)
        .join("---\n"),
    );
  });

program
  .command("validate")
  .description("Validate SyncJob, SyncRun and SyncPolicy manifests (YAML, several documents per file).")
  .argument("<files...>", "manifest files")
  .option(
    "--file-root <dir>",
    "storage granted to file sources, as the controller's SYNCGOV_FILE_ROOTS (repeatable; default: that variable, else /data)",
    (dir: string, dirs: string[]) => [...dirs, dir],
    [] as string[],
  )
  .action(async (files: string[], options: { fileRoot: string[] }) => {
    const { validateFiles } = await import("./api/validate-files.ts");
    const { fileRoots } = await import("./api/file-grant.ts");
    const { ruleProblems } = await import("./policy/effective.ts");
    const roots = options.fileRoot.length > 0 ? options.fileRoot : fileRoots();
    // A policy's CEL rules as the controller judges them: compiled, within the cost budget.
    const policyRules = (spec: Parameters<typeof ruleProblems>[0]) =>
      ruleProblems(spec).map((p) => ({
        field: p.field,
        message: `rule ${p.rule}: ${p.position ? `${p.position}: ` : ""}${p.reason}`,
      }));
    process.exitCode = validateFiles(files, console.log, { fileRoots: roots, policyRules }) ? 0 : 1;
  });

registerPolicyCommands(program);
registerRunCommand(program);
registerShadowCommands(program);

await program.parseAsync(process.argv);
