/**
 * `syncgov approve <namespace>/<job>` and `syncgov rollback <namespace>/<job>`: a person's requests
 * to swap a filled shadow table in, or to swap the retired table back. Each reads the SyncJob, says
 * what will happen (or why nothing can), and sets the request annotation to a fresh value, with the
 * caller's name in syncgov.io/requested-by, using the caller's own kubeconfig: the API server admits
 * it only from a user with the RBAC verb approve (rollback) on the job (api/admission.ts). The
 * controller acts on the annotation; the command does not touch the database.
 */

import { randomBytes } from "node:crypto";
import {
  AuthenticationV1Api,
  CustomObjectsApi,
  KubeConfig,
  type KubernetesObject,
  PatchStrategy,
  setHeaderOptions,
} from "@kubernetes/client-node";
import type { Command } from "commander";
import { GROUP, VERSION } from "../api/common.ts";
import { describeApiError, isConflict, statusCodeOf } from "../kube/resource.ts";
import {
  planRequest,
  requestPatch,
  requestToken,
  type ShadowJobView,
  type ShadowRequestKind,
  shadowJobView,
} from "../shadow/requests.ts";

const SYNCJOBS = { group: GROUP, version: VERSION, plural: "syncjobs" };
const JOB_REF = /^([a-z0-9]([-a-z0-9]*[a-z0-9])?)\/([a-z0-9]([-a-z0-9.]*[a-z0-9])?)$/;
const ATTEMPTS = 3;

export interface JobRef {
  readonly namespace: string;
  readonly name: string;
}

/** "namespace/name" → JobRef; throws for anything else. */
export function parseJobRef(text: string): JobRef {
  const m = JOB_REF.exec(text);
  if (!m) throw new Error(`expected <namespace>/<job>, got ${JSON.stringify(text)}`);
  return { namespace: m[1]!, name: m[3]! };
}

export interface ShadowRequestOptions {
  /** The requester's credentials: the patch is made as this user. */
  readonly kubeConfig: KubeConfig;
  /** Say what would happen, change nothing. */
  readonly dryRun?: boolean;
  readonly now?: () => Date;
}

export interface ShadowRequestResult {
  /** True when the annotation was set (or, with dryRun, would be). */
  readonly accepted: boolean;
  /** What will happen, or why nothing can; sentences for a person. */
  readonly lines: readonly string[];
  /** The annotation value written. */
  readonly token?: string | undefined;
}

/**
 * Makes an approve or rollback request. Refuses (accepted false, with the reason) when the job is not
 * in a state where the controller would act on it, when the job does not exist, and when the API
 * server forbids the patch. A job that changes between the read and the patch is read again.
 */
export async function requestShadowChange(
  kind: ShadowRequestKind,
  ref: JobRef,
  options: ShadowRequestOptions,
): Promise<ShadowRequestResult> {
  const api = options.kubeConfig.makeApiClient(CustomObjectsApi);
  const key = `${ref.namespace}/${ref.name}`;
  const verb = kind === "approve" ? "approve the swap of" : "roll back";
  for (let attempt = 1; ; attempt++) {
    let job: ShadowJobView;
    try {
      const object = (await api.getNamespacedCustomObject({
        ...SYNCJOBS,
        namespace: ref.namespace,
        name: ref.name,
      })) as KubernetesObject;
      job = shadowJobView(object);
    } catch (error) {
      return { accepted: false, lines: [`Cannot ${verb} ${key}: ${readProblem(error, key)}.`] };
    }
    const now = options.now?.() ?? new Date();
    const plan = planRequest(kind, job, now);
    if (!plan.allowed) {
      return { accepted: false, lines: [`Cannot ${verb} ${key}: ${plan.refusal}.`] };
    }
    const heading =
      kind === "approve" ? `Approving the shadow-table swap of ${key}:` : `Rolling back the swap of ${key}:`;
    const lines = [heading, ...plan.plan.map((line) => `  ${line}`)];
    if (options.dryRun) {
      return { accepted: true, lines: [...lines, "Dry run: nothing was changed."] };
    }
    const token = requestToken(now, randomBytes(4).toString("hex"));
    let user: string;
    try {
      user = await whoAmI(options.kubeConfig);
    } catch (error) {
      return {
        accepted: false,
        lines: [...lines, `Not done: the API server did not say who you are (${describeApiError(error)}).`],
      };
    }
    try {
      await api.patchNamespacedCustomObject(
        {
          ...SYNCJOBS,
          namespace: ref.namespace,
          name: ref.name,
          body: requestPatch(job, plan.annotation, token, user),
        },
        setHeaderOptions("Content-Type", PatchStrategy.MergePatch),
      );
    } catch (error) {
      if (isConflict(error) && attempt < ATTEMPTS) continue; // changed since read: plan again
      return {
        accepted: false,
        lines: [...lines, `Not done: the API server refused the change (${describeApiError(error)}).`],
      };
    }
    return {
      accepted: true,
      token,
      lines: [
        ...lines,
        `Set ${plan.annotation}=${token} on SyncJob ${key}; the controller acts on it and records an event (kubectl describe syncjob ${ref.name} -n ${ref.namespace}).`,
      ],
    };
  }
}

/** The caller's user name as the API server authenticates it (SelfSubjectReview). */
async function whoAmI(kc: KubeConfig): Promise<string> {
  const review = await kc
    .makeApiClient(AuthenticationV1Api)
    .createSelfSubjectReview({ body: { apiVersion: "authentication.k8s.io/v1", kind: "SelfSubjectReview" } });
  const user = review.status?.userInfo?.username;
  if (!user) throw new Error("SelfSubjectReview returned no user name");
  return user;
}

function readProblem(error: unknown, key: string): string {
  if (statusCodeOf(error) === 404) return `SyncJob ${key} not found`;
  if (statusCodeOf(error) !== undefined)
    return `the API server refused to read it (${describeApiError(error)})`;
  return error instanceof Error ? error.message : String(error);
}

/** Where a command's lines go; the defaults are standard output and standard error. */
export interface CommandOutput {
  out(line: string): void;
  err(line: string): void;
}

const standardOutput: CommandOutput = {
  out: (line) => console.log(line),
  err: (line) => console.error(line),
};

interface KubeOptions {
  kubeconfig?: string;
  context?: string;
  dryRun?: boolean;
}

/** The caller's kubeconfig: --kubeconfig, else KUBECONFIG, else ~/.kube/config (or in-cluster). */
function callerKubeConfig(opts: KubeOptions): KubeConfig {
  const kc = new KubeConfig();
  if (opts.kubeconfig) kc.loadFromFile(opts.kubeconfig);
  else kc.loadFromDefault();
  if (opts.context) kc.setCurrentContext(opts.context);
  return kc;
}

/** Registers `approve` and `rollback`. Both exit 1 when the request is refused. */
export function registerShadowCommands(program: Command, output: CommandOutput = standardOutput): void {
  const add = (kind: ShadowRequestKind, description: string) =>
    program
      .command(kind)
      .description(description)
      .argument("<job>", "the SyncJob, as <namespace>/<job>")
      .option("--kubeconfig <path>", "kubeconfig file (default: KUBECONFIG, then ~/.kube/config)")
      .option("--context <name>", "kubeconfig context to use")
      .option("--dry-run", "say what would happen, change nothing")
      .action(async (job: string, opts: KubeOptions) => {
        let ref: JobRef;
        try {
          ref = parseJobRef(job);
        } catch (error) {
          output.err(`syncgov ${kind}: ${(error as Error).message}`);
          process.exitCode = 1;
          return;
        }
        const result = await requestShadowChange(kind, ref, {
          kubeConfig: callerKubeConfig(opts),
          dryRun: opts.dryRun === true,
        });
        for (const line of result.lines) (result.accepted ? output.out : output.err)(line);
        if (!result.accepted) process.exitCode = 1;
      });
  add(
    "approve",
    "Approve the pending shadow-table swap of a SyncJob in AwaitingApproval (needs the RBAC verbs patch and approve on syncjobs).",
  );
  add(
    "rollback",
    "Swap the retired table of a Swapped SyncJob back in, while it is kept (needs the RBAC verbs patch and rollback on syncjobs).",
  );
}
