import { readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative, resolve } from "node:path";
import { parseAllDocuments } from "yaml";
import type { SyncJob } from "../api/syncjob.ts";
import type { SyncPolicy } from "../api/syncpolicy.ts";
import { describeErrors, validateSyncJob, validateSyncPolicy } from "../api/validate.ts";
import type { NamedPolicy } from "./effective.ts";
import { ruleProblems } from "./effective.ts";

/**
 * Reading SyncPolicy and SyncJob manifests from YAML files, as `syncgov policy test` and
 * `syncgov policy export` need them: every document validated by the zod schemas, every problem
 * reported with the file, the document and the field.
 */

/** One YAML document: where it came from and what it holds. */
export interface ManifestDocument {
  file: string;
  /** 1-based position of the document in its file. */
  index: number;
  manifest: unknown;
  /** How problems name the document when not by file and index (e.g. inline in a test). */
  label?: string;
}

/** `policies/x.yaml#2` — how problems name a document. */
export function documentLabel(doc: { file: string; index: number }): string {
  return `${displayPath(doc.file)}#${doc.index}`;
}

/** A path as the user reads it: relative to the working directory when it lies below it. */
export function displayPath(file: string): string {
  const rel = relative(process.cwd(), file);
  return rel && !rel.startsWith("..") ? rel : file;
}

/** Reads every non-empty document of a YAML file; a document that is not YAML is a problem. */
export function readDocuments(file: string): { documents: ManifestDocument[]; problems: string[] } {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    return { documents: [], problems: [`${displayPath(file)}: ${unreadable(err)}`] };
  }
  const documents: ManifestDocument[] = [];
  const problems: string[] = [];
  parseAllDocuments(text).forEach((doc, i) => {
    const index = i + 1;
    if (doc.errors.length > 0) {
      problems.push(`${documentLabel({ file, index })}: not YAML: ${doc.errors[0]!.message}`);
      return;
    }
    const manifest: unknown = doc.toJS();
    if (manifest !== null && manifest !== undefined) documents.push({ file, index, manifest });
  });
  return { documents, problems };
}

/** Why a path cannot be read, without the stack of system-call details. */
export function unreadable(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code;
  if (code === "ENOENT") return "no such file or directory";
  if (code === "EACCES") return "permission denied";
  return `cannot read: ${err instanceof Error ? err.message : String(err)}`;
}

/** The YAML files below a directory (or the file itself), in a stable order. */
export function yamlFilesUnder(path: string): string[] {
  if (!statSync(path).isDirectory()) return [path];
  return readdirSync(path, { recursive: true, encoding: "utf8" })
    .filter((f) => /\.ya?ml$/.test(f))
    .map((f) => join(path, f))
    .filter((f) => statSync(f).isFile())
    .sort();
}

export function kindOf(manifest: unknown): string | undefined {
  const kind = (manifest as { kind?: unknown } | null)?.kind;
  return typeof kind === "string" ? kind : undefined;
}

function nameOf(manifest: unknown): string {
  const name = (manifest as { metadata?: { name?: unknown } } | null)?.metadata?.name;
  return typeof name === "string" ? name : "?";
}

/** A SyncPolicy read from a file and validated. */
export interface LoadedPolicy extends NamedPolicy {
  file: string;
  index: number;
  manifest: SyncPolicy;
}

/** Validates a document as a SyncPolicy with a name. */
export function toPolicy(doc: ManifestDocument): { policy: LoadedPolicy } | { problem: string } {
  const label = `${doc.label ?? documentLabel(doc)} ${kindOf(doc.manifest) ?? "?"}/${nameOf(doc.manifest)}`;
  if (kindOf(doc.manifest) !== "SyncPolicy") return { problem: `${label}: kind: must be SyncPolicy` };
  const result = validateSyncPolicy(doc.manifest);
  if (!result.ok) return { problem: `${label}: ${describeErrors(result.errors)}` };
  const name = result.value.metadata.name;
  if (!name) return { problem: `${label}: metadata.name: required` };
  return {
    policy: { name, spec: result.value.spec, file: doc.file, index: doc.index, manifest: result.value },
  };
}

/** A SyncJob read from a file (or inline in a test) and validated, with defaults applied. */
export interface LoadedJob {
  namespace: string;
  name: string;
  job: SyncJob;
}

/**
 * Validates a document as a SyncJob. The value keeps the schema defaults, as the API server stores
 * them (the CRDs carry the same defaults), so rules see what they would see in the cluster.
 */
export function toJob(
  doc: ManifestDocument,
  namespace: string | undefined,
): { job: LoadedJob } | { problem: string } {
  const label = `${doc.label ?? documentLabel(doc)} ${kindOf(doc.manifest) ?? "?"}/${nameOf(doc.manifest)}`;
  if (kindOf(doc.manifest) !== "SyncJob") return { problem: `${label}: kind: must be SyncJob` };
  const result = validateSyncJob(doc.manifest);
  if (!result.ok) return { problem: `${label}: ${describeErrors(result.errors)}` };
  const job = result.value;
  const name = job.metadata.name;
  if (!name) return { problem: `${label}: metadata.name: required` };
  const ns = namespace ?? job.metadata.namespace ?? "default";
  return { job: { namespace: ns, name, job: { ...job, metadata: { ...job.metadata, namespace: ns } } } };
}

/** A rule of a policy that does not compile, or over the cost budget (effective.ts, ruleProblems). */
export interface RuleCompileError {
  policy: string;
  rule: string;
  /** spec.rules[i].expression */
  field: string;
  /** line:column in the expression, when the compiler says. */
  position: string | undefined;
  reason: string;
}

export function ruleCompileErrors(policy: NamedPolicy): RuleCompileError[] {
  return ruleProblems(policy.spec).map((p) => ({ policy: policy.name, ...p }));
}

/** "SyncPolicy/baseline spec.rules[3].expression (rule team-label): 1:7: undeclared reference to 'objct'" */
export function describeCompileError(e: RuleCompileError): string {
  return `SyncPolicy/${e.policy} ${e.field} (rule ${e.rule}): ${e.position ? `${e.position}: ` : ""}${e.reason}`;
}

/**
 * The SyncPolicies in the given files and directories. A named file must hold only SyncPolicies; in
 * a directory, documents of other kinds (tests, jobs) are passed over. Problems include invalid
 * policies, names defined twice and rules that do not compile.
 */
export function loadPolicies(paths: readonly string[]): { policies: LoadedPolicy[]; problems: string[] } {
  const policies = new Map<string, LoadedPolicy>();
  const problems: string[] = [];
  for (const path of paths) {
    let files: string[];
    let named: boolean;
    try {
      named = !statSync(path).isDirectory();
      files = yamlFilesUnder(path);
    } catch (err) {
      problems.push(`${displayPath(path)}: ${unreadable(err)}`);
      continue;
    }
    for (const file of files.map((f) => resolve(f))) {
      const read = readDocuments(file);
      problems.push(...read.problems);
      for (const doc of read.documents) {
        if (!named && kindOf(doc.manifest) !== "SyncPolicy") continue;
        const loaded = toPolicy(doc);
        if ("problem" in loaded) {
          problems.push(loaded.problem);
          continue;
        }
        const twin = policies.get(loaded.policy.name);
        if (twin && twin.file === doc.file && twin.index === doc.index) continue; // named twice
        if (twin) {
          problems.push(
            `${documentLabel(doc)}: SyncPolicy/${loaded.policy.name} is also defined in ${documentLabel(twin)}`,
          );
          continue;
        }
        policies.set(loaded.policy.name, loaded.policy);
        for (const e of ruleCompileErrors(loaded.policy))
          problems.push(`${documentLabel(doc)} ${describeCompileError(e)}`);
      }
    }
  }
  return { policies: [...policies.values()], problems };
}
