/**
 * Where a file source may read (docs/security.md, "File sources"). A runner reads files in a pod the
 * platform runs (the controller's, with the InProcess and ChildProcess executors), so a free path
 * would let a tenant load that pod's own files — its ServiceAccount token, its kubeconfig — into a
 * table it owns. A path must instead lie under a root the platform granted: SYNCGOV_FILE_ROOTS on
 * the controller and its runners (the chart's fileSources.roots; default /data, where the chart
 * mounts the platform's file volumes). The controller judges the spec (a condition naming
 * spec.source.file.path), `syncgov validate` does offline, and the runner checks the file itself
 * when it opens it (connectors/granted-file.ts: symlinks resolved, regular files only).
 */

import { posix } from "node:path";

/** The environment variable that lists the granted roots, separated by ':'. */
export const FILE_ROOTS_ENV = "SYNCGOV_FILE_ROOTS";
export const DEFAULT_FILE_ROOTS: readonly string[] = ["/data"];

/** The granted roots from the environment (SYNCGOV_FILE_ROOTS), or the default. Throws for a relative root. */
export function fileRoots(env: Readonly<Record<string, string | undefined>> = process.env): string[] {
  const text = env[FILE_ROOTS_ENV];
  if (text === undefined || text.trim() === "") return [...DEFAULT_FILE_ROOTS];
  const roots = text
    .split(":")
    .map((r) => r.trim())
    .filter((r) => r !== "");
  for (const root of roots) {
    if (!posix.isAbsolute(root)) throw new Error(`${FILE_ROOTS_ENV}: ${root} is not an absolute path`);
  }
  return roots.map((r) => (r.length > 1 ? r.replace(/\/+$/, "") : r));
}

/**
 * Why `path` may not be read, or undefined when it lies under one of `roots`. The path must be
 * written as it is meant (absolute, no `.` or `..` segment, no empty segment), so that the text a
 * reviewer reads is the file the runner opens.
 */
export function fileGrantRefusal(path: string, roots: readonly string[]): string | undefined {
  if (!posix.isAbsolute(path)) return "must be an absolute path";
  const segments = path.split("/").slice(1);
  if (segments.some((s) => s === "." || s === ".."))
    return "must not contain '.' or '..' segments: write the path to the file itself";
  if (segments.some((s) => s === "")) return "must not contain empty segments ('//') or end with '/'";
  if (roots.length === 0)
    return `file sources are not enabled here: the platform grants none (${FILE_ROOTS_ENV})`;
  const inside = roots.some((root) => root === "/" || path.startsWith(`${root}/`));
  return inside
    ? undefined
    : `is outside the storage the platform granted for file sources (${roots.join(", ")}); ask the platform team for a volume there`;
}
