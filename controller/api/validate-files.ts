import { readFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";
import { semanticErrors } from "./semantics.ts";
import type { SyncJobSpec } from "./syncjob.ts";
import type { SyncPolicySpec } from "./syncpolicy.ts";
import { describeErrors, type FieldError, validateManifest } from "./validate.ts";

/**
 * Validates every document of every file, as the API server and then the controller would judge it
 * (a SyncJob's semantic checks included, with `fileRoots` as the granted file storage; a
 * SyncPolicy's rules by `policyRules`, which the CLI gives: CEL rules that do not compile or pass
 * the cost budget, by field); prints one line per document; true when all are valid.
 */
export function validateFiles(
  files: string[],
  print: (line: string) => void,
  options: {
    fileRoots?: readonly string[];
    policyRules?: (spec: SyncPolicySpec) => FieldError[];
  } = {},
): boolean {
  let allValid = true;
  for (const file of files) {
    const docs = parseAllDocuments(readFileSync(file, "utf8"));
    docs.forEach((doc, i) => {
      if (doc.errors.length > 0) {
        allValid = false;
        print(`${file}#${i + 1}: not YAML: ${doc.errors[0]?.message}`);
        return;
      }
      const manifest = doc.toJS() as {
        kind?: string;
        metadata?: { name?: string; generateName?: string };
      } | null;
      if (manifest === null) return;
      const name = `${manifest.kind ?? "?"}/${manifest.metadata?.name ?? manifest.metadata?.generateName ?? "?"}`;
      const checked = validateManifest(manifest);
      const result =
        checked.ok && manifest.kind === "SyncJob"
          ? ((errors) => (errors.length === 0 ? checked : { ok: false as const, errors }))(
              semanticErrors((checked.value as { spec: SyncJobSpec }).spec, {
                ...(options.fileRoots ? { fileRoots: options.fileRoots } : {}),
                namespace: (manifest as { metadata?: { namespace?: string } }).metadata?.namespace,
              }),
            )
          : checked.ok && manifest.kind === "SyncPolicy" && options.policyRules
            ? ((errors) => (errors.length === 0 ? checked : { ok: false as const, errors }))(
                options.policyRules((checked.value as { spec: SyncPolicySpec }).spec),
              )
            : checked;
      if (result.ok) print(`${file}#${i + 1} ${name}: valid`);
      else {
        allValid = false;
        print(`${file}#${i + 1} ${name}: ${describeErrors(result.errors)}`);
      }
    });
  }
  return allValid;
}
