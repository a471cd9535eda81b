import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { stringify } from "yaml";
import { requestPolicyObjects } from "./admission.ts";
import { customResourceDefinition } from "./crd.ts";
import { GROUP, RESOURCES } from "./resources.ts";

/** The repository (or installed package): above controller/api/, or above dist/controller/api/ in the build. */
const REPO_ROOT = join(
  dirname(fileURLToPath(import.meta.url)),
  ...(import.meta.url.endsWith(".ts") ? ["..", ".."] : ["..", "..", ".."]),
);

export const CRD_DIR = join(REPO_ROOT, "crds");
/** The Helm chart; its crds/ and policies/ hold copies that `npm run generate` keeps in step. */
export const CHART_DIR = join(REPO_ROOT, "charts", "syncgov");
/** Helm installs a chart's crds/ before its templates; the files are copies of crds/. */
export const CHART_CRD_DIR = join(CHART_DIR, "crds");
/** The shipped baseline SyncPolicies, the source of the chart's copies. */
export const BASELINE_POLICY_DIR = join(REPO_ROOT, "policies", "baseline");
/** A chart reads only files inside itself, so the baseline policies it can install are copied here. */
export const CHART_POLICY_DIR = join(CHART_DIR, "policies");

/** One file that `npm run generate` owns: its name inside `dir`, and its whole text. */
export interface GeneratedFile {
  dir: string;
  file: string;
  text: string;
}

/** File name and YAML text of every generated CRD. */
export function renderCrds(): { file: string; yaml: string }[] {
  return RESOURCES.map((def) => ({
    file: `${GROUP}_${def.plural}.yaml`,
    yaml: `# Generated from the zod schemas in controller/api by 'npm run generate'. Do not edit.\n${stringify(
      customResourceDefinition(def),
      { lineWidth: 0 },
    )}`,
  }));
}

/**
 * The admission policies that ship with the CRDs (./admission.ts), one multi-document file: Helm
 * installs it from the chart's crds/ with them, and `syncgov crds apply` applies both.
 */
export function renderAdmissionPolicies(): { file: string; yaml: string } {
  return {
    file: `${GROUP}_admission-policies.yaml`,
    yaml: `# Generated from controller/api/admission.ts by 'npm run generate'. Do not edit.\n${requestPolicyObjects()
      .map((o) => stringify(o, { lineWidth: 0 }))
      .join("---\n")}`,
  };
}

/** The chart's copies of the baseline policies: each file verbatim under a header naming its source. */
export function renderChartPolicies(sourceDir = BASELINE_POLICY_DIR): { file: string; yaml: string }[] {
  return readdirSync(sourceDir)
    .filter((file) => file.endsWith(".yaml"))
    .sort()
    .map((file) => ({
      file,
      yaml: `# Copied from policies/baseline/${file} by 'npm run generate'. Do not edit.\n${readFileSync(
        join(sourceDir, file),
        "utf8",
      )}`,
    }));
}

/**
 * Every file `npm run generate` writes: the CRDs in crds/ and in the chart, and the chart's copies of
 * the baseline policies. Each directory listed here is owned whole: a YAML file in it that is not
 * generated is stale.
 */
export function generatedFiles(): GeneratedFile[] {
  const crds = [...renderCrds(), renderAdmissionPolicies()];
  return [
    ...[CRD_DIR, CHART_CRD_DIR].flatMap((dir) => crds.map(({ file, yaml }) => ({ dir, file, text: yaml }))),
    ...renderChartPolicies().map(({ file, yaml }) => ({ dir: CHART_POLICY_DIR, file, text: yaml })),
  ];
}

/** The directories `npm run generate` owns whole; nothing else is ever removed. */
const OWNED_DIRS: readonly string[] = [CRD_DIR, CHART_CRD_DIR, CHART_POLICY_DIR];

/** YAML files that no entry of `files` accounts for, in those of their directories that are owned. */
export function staleFiles(files: GeneratedFile[] = generatedFiles()): string[] {
  const stale: string[] = [];
  for (const dir of new Set(files.map((f) => f.dir))) {
    if (!OWNED_DIRS.includes(dir)) continue;
    const expected = new Set(files.filter((f) => f.dir === dir).map((f) => f.file));
    let present: string[] = [];
    try {
      present = readdirSync(dir);
    } catch {
      // not written yet
    }
    for (const file of present)
      if (file.endsWith(".yaml") && !expected.has(file)) stale.push(join(dir, file));
  }
  return stale;
}

/**
 * Writes the files whose text differs and removes stale ones (only in the owned directories);
 * returns the paths that changed.
 */
export function writeGenerated(files: GeneratedFile[] = generatedFiles()): string[] {
  const changed: string[] = [];
  for (const { dir, file, text } of files) {
    mkdirSync(dir, { recursive: true });
    const path = join(dir, file);
    let current = "";
    try {
      current = readFileSync(path, "utf8");
    } catch {
      // new file
    }
    if (current !== text) {
      writeFileSync(path, text);
      changed.push(path);
    }
  }
  for (const path of staleFiles(files)) {
    rmSync(path);
    changed.push(path);
  }
  return changed;
}

/**
 * Writes the CRDs into `dir`, or, when no directory is given, into crds/ and the chart's crds/ (so
 * that `syncgov generate-crds` keeps the chart in step too). Returns the files that changed.
 */
export function writeCrds(dir?: string): string[] {
  const dirs = dir === undefined ? [CRD_DIR, CHART_CRD_DIR] : [dir];
  return writeGenerated(
    dirs.flatMap((d) => renderCrds().map(({ file, yaml }) => ({ dir: d, file, text: yaml }))),
  );
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const changed = writeGenerated();
  console.log(changed.length ? `wrote ${changed.join(", ")}` : "crds/ and the chart's copies are up to date");
}
