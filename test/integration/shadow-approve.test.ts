import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CoreV1Api, CustomObjectsApi, KubeConfig, RbacAuthorizationV1Api } from "@kubernetes/client-node";
import { Command } from "commander";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse, stringify } from "yaml";
import { registerShadowCommands, requestShadowChange } from "../../controller/cli/approve.ts";
import { SYNCJOBS } from "../../controller/kube/resource.ts";
import { patchStatus } from "../../controller/kube/status.ts";
import { retiredTableName } from "../../controller/shadow/names.ts";
import { APPROVE_SWAP_ANNOTATION, ROLLBACK_ANNOTATION } from "../../controller/shadow/state.ts";
import { kubeConfig, testEnv, uniqueName } from "../support/env.ts";
import { installCrds } from "../support/kubectl.ts";
import { baseJob } from "../support/manifests.ts";

/**
 * `syncgov approve` and `syncgov rollback` against a real API server: the request is an annotation
 * patched with the caller's own credentials, so RBAC decides. The admin kubeconfig of the test
 * environment is system:masters; "jane" is the same client certificate impersonating a user whose
 * only permission is get on syncjobs.
 */
const kc = kubeConfig();
const core = kc.makeApiClient(CoreV1Api);
const custom = kc.makeApiClient(CustomObjectsApi);
const rbac = kc.makeApiClient(RbacAuthorizationV1Api);
const JOBS = { group: SYNCJOBS.group, version: SYNCJOBS.version, plural: SYNCJOBS.plural };
const namespace = uniqueName("shadow-approve");
const dir = mkdtempSync(join(tmpdir(), "syncgov-approve-"));
const janeKubeconfig = join(dir, "jane.kubeconfig");

/** A kubeconfig as a user would have it: the admin's, with `as: jane` on the user. */
function writeJaneKubeconfig(): KubeConfig {
  const config = parse(readFileSync(testEnv().kubeconfig, "utf8")) as {
    users: { user: Record<string, unknown> }[];
  };
  for (const u of config.users) u.user.as = "jane";
  writeFileSync(janeKubeconfig, stringify(config), { mode: 0o600 });
  const jane = new KubeConfig();
  jane.loadFromFile(janeKubeconfig);
  return jane;
}

async function createJob(name: string, shadow?: Record<string, unknown>): Promise<void> {
  const job = baseJob() as { metadata: Record<string, unknown>; spec: Record<string, unknown> };
  job.metadata = { name };
  job.spec.shadow = { retiredTableTtlSeconds: 3600 };
  await custom.createNamespacedCustomObject({ ...JOBS, namespace, body: job });
  if (shadow) await patchStatus(custom, { resource: SYNCJOBS, namespace, name }, { shadow });
}

async function annotations(name: string): Promise<Record<string, string>> {
  const job = (await custom.getNamespacedCustomObject({ ...JOBS, namespace, name })) as {
    metadata: { annotations?: Record<string, string> };
  };
  return job.metadata.annotations ?? {};
}

/** Runs the registered commands as `syncgov <args>` would, capturing their lines and exit code. */
async function cli(args: string[]): Promise<{ out: string[]; err: string[]; exitCode: number }> {
  const out: string[] = [];
  const err: string[] = [];
  const program = new Command().exitOverride();
  registerShadowCommands(program, { out: (l) => out.push(l), err: (l) => err.push(l) });
  const before = process.exitCode;
  process.exitCode = 0;
  try {
    await program.parseAsync(args, { from: "user" });
    return { out, err, exitCode: Number(process.exitCode ?? 0) };
  } finally {
    process.exitCode = before;
  }
}

const retired = retiredTableName("analytics.customers", new Date());

beforeAll(async () => {
  await installCrds();
  await core.createNamespace({ body: { metadata: { name: namespace } } });
  await createJob("awaiting", { state: "AwaitingApproval", table: "analytics.customers__shadow" });
  await createJob("filling", { state: "Filling", table: "analytics.customers__shadow" });
  await createJob("swapped", { state: "Swapped", retiredTable: retired });
  await createJob("plain");
  await rbac.createNamespacedRole({
    namespace,
    body: {
      metadata: { name: "syncjob-reader" },
      rules: [{ apiGroups: ["syncgov.io"], resources: ["syncjobs"], verbs: ["get"] }],
    },
  });
  await rbac.createNamespacedRoleBinding({
    namespace,
    body: {
      metadata: { name: "jane-reads-syncjobs" },
      roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "Role", name: "syncjob-reader" },
      subjects: [{ apiGroup: "rbac.authorization.k8s.io", kind: "User", name: "jane" }],
    },
  });
});

afterAll(async () => {
  await core.deleteNamespace({ name: namespace }).catch(() => undefined);
});

describe("syncgov approve", () => {
  it("sets a fresh approval token on a job in AwaitingApproval and says what will happen", async () => {
    const result = await requestShadowChange("approve", { namespace, name: "awaiting" }, { kubeConfig: kc });
    expect(result.accepted).toBe(true);
    expect(result.lines[0]).toBe(`Approving the shadow-table swap of ${namespace}/awaiting:`);
    expect(result.lines.join("\n")).toContain("analytics.customers__shadow to analytics.customers");
    expect(result.lines.join("\n")).toContain("kept for rollback for 1 hour");
    expect((await annotations("awaiting"))[APPROVE_SWAP_ANNOTATION]).toBe(result.token);

    const second = await requestShadowChange("approve", { namespace, name: "awaiting" }, { kubeConfig: kc });
    expect(second.token).not.toBe(result.token);
    expect((await annotations("awaiting"))[APPROVE_SWAP_ANNOTATION]).toBe(second.token);
  });

  it("refuses a job that is still filling, and leaves it unannotated", async () => {
    const result = await requestShadowChange("approve", { namespace, name: "filling" }, { kubeConfig: kc });
    expect(result).toEqual({
      accepted: false,
      lines: [
        `Cannot approve the swap of ${namespace}/filling: shadow table analytics.customers__shadow is still being filled; approve once the job is AwaitingApproval.`,
      ],
    });
    expect(await annotations("filling")).not.toHaveProperty(APPROVE_SWAP_ANNOTATION);
  });

  it("is refused by the API server for a user who may read but not patch syncjobs", async () => {
    const jane = writeJaneKubeconfig();
    // jane can read the job (the plan is made) ...
    const result = await requestShadowChange(
      "approve",
      { namespace, name: "awaiting" },
      { kubeConfig: jane },
    );
    expect(result.accepted).toBe(false);
    const last = result.lines.at(-1)!;
    expect(last).toContain("Not done: the API server refused the change (HTTP 403");
    expect(last).toContain('User "jane" cannot patch resource "syncjobs"');
    // ... and the approval stays what the admin set.
    const before = (await annotations("awaiting"))[APPROVE_SWAP_ANNOTATION];
    expect(before).toBeDefined();
    expect(before).not.toBe(result.token);
  });

  it("works as a command: --kubeconfig, --dry-run, exit code 1 on refusal", async () => {
    const before = await annotations("awaiting");
    const dry = await cli([
      "approve",
      `${namespace}/awaiting`,
      "--kubeconfig",
      testEnv().kubeconfig,
      "--dry-run",
    ]);
    expect(dry.exitCode).toBe(0);
    expect(dry.out.at(-1)).toBe("Dry run: nothing was changed.");
    expect(await annotations("awaiting")).toEqual(before);

    const denied = await cli(["approve", `${namespace}/awaiting`, "--kubeconfig", janeKubeconfig]);
    expect(denied.exitCode).toBe(1);
    expect(denied.err.at(-1)).toContain("HTTP 403");

    const missing = await cli(["approve", `${namespace}/no-such-job`, "--kubeconfig", testEnv().kubeconfig]);
    expect(missing.exitCode).toBe(1);
    expect(missing.err).toEqual([
      `Cannot approve the swap of ${namespace}/no-such-job: SyncJob ${namespace}/no-such-job not found.`,
    ]);

    const malformed = await cli(["approve", "no-namespace", "--kubeconfig", testEnv().kubeconfig]);
    expect(malformed.exitCode).toBe(1);
    expect(malformed.err[0]).toContain("expected <namespace>/<job>");
  });
});

describe("syncgov rollback", () => {
  it("sets the rollback token on a Swapped job whose retired table is kept", async () => {
    const result = await cli(["rollback", `${namespace}/swapped`, "--kubeconfig", testEnv().kubeconfig]);
    expect(result.exitCode).toBe(0);
    expect(result.out.join("\n")).toContain(`${retired} to analytics.customers`);
    const token = (await annotations("swapped"))[ROLLBACK_ANNOTATION];
    expect(result.out.at(-1)).toContain(`${ROLLBACK_ANNOTATION}=${token}`);
  });

  it("refuses a job without a retired table", async () => {
    const result = await cli(["rollback", `${namespace}/plain`, "--kubeconfig", testEnv().kubeconfig]);
    expect(result.exitCode).toBe(1);
    expect(result.err).toEqual([
      `Cannot roll back ${namespace}/plain: there is no retired table to roll back to (shadow state None).`,
    ]);
    expect(await annotations("plain")).not.toHaveProperty(ROLLBACK_ANNOTATION);
  });
});
