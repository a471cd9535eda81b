import { createHash } from "node:crypto";
import { writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { obtainScript } from "./common.ts";
import { type CommandOutput, runCommand } from "./process.ts";

/**
 * The container image built from the repository's Dockerfile, and the podman that builds and runs
 * it. No registry is reachable from these machines: the image is built on a local base made by
 * test/env/obtain/image-base.sh (Debian minbase with Node 24 and npm), the same Dockerfile that users
 * build on the public node image. podman's layer cache keys each step by its inputs, so a rebuild with
 * an unchanged package-lock.json and controller/ takes seconds.
 */

const repoRoot = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");

/**
 * podman's global flags on these machines (ENVIRONMENT.md): runc, because crun refuses the kernel's
 * hybrid cgroup v1 mode, and cgroupfs rather than systemd.
 */
export const PODMAN_GLOBAL: readonly string[] = [
  "--runtime",
  "/usr/sbin/runc",
  "--cgroup-manager",
  "cgroupfs",
];

/**
 * Flags of every build and run: runc here cannot raise the default rlimits, so they are set within
 * the limits, and the host network lets `npm ci` reach the registry and containers reach the test
 * servers on 127.0.0.1.
 */
export const CONTAINER_FLAGS: readonly string[] = [
  "--ulimit",
  "nofile=1024:1024",
  "--ulimit",
  "nproc=1024:1024",
  "--network",
  "host",
];

export type CommandResult = CommandOutput;

/** Runs `podman <global flags> ...args`; resolves with its exit code and output, whatever the code. */
export function podman(args: readonly string[], input?: string): Promise<CommandResult> {
  return runCommand("podman", [...PODMAN_GLOBAL, ...args], input === undefined ? {} : { input });
}

/** Like podman(), but throws with the command and its stderr unless it exits 0. */
export async function podmanOk(args: readonly string[]): Promise<string> {
  const result = await podman(args);
  if (result.code !== 0)
    throw new Error(`podman ${args.join(" ")} failed (exit code ${result.code}):\n${result.stderr}`);
  return result.stdout;
}

/** The local base image, or why it cannot be had here (podman, runc or mmdebstrap missing). */
export type ImageBase =
  | { readonly ok: true; readonly image: string; readonly seconds: number }
  | { readonly ok: false; readonly missing: string };

/** Exit code of image-base.sh when the tools are missing and cannot be installed. */
const TOOLS_MISSING = 3;

/**
 * Runs test/env/obtain/image-base.sh: installs podman, runc and mmdebstrap when missing (as root, with
 * apt-get), makes the base once and prints it. Any failure other than missing tools throws.
 */
export async function obtainImageBase(): Promise<ImageBase> {
  const began = Date.now();
  const { code, stdout, stderr } = await runCommand("bash", [obtainScript("image-base.sh")]);
  const lines = stderr.trim().split("\n");
  if (code === 0) return { ok: true, image: stdout.trim(), seconds: (Date.now() - began) / 1000 };
  if (code === TOOLS_MISSING) return { ok: false, missing: lines.at(-1) ?? "" };
  throw new Error(`image-base.sh failed (exit code ${code}):\n${lines.slice(-40).join("\n")}`);
}

/**
 * The tag the tests give the image: one per checkout, so that two checkouts on one machine do not
 * retag each other's image mid-run (they share the layer cache all the same).
 */
export function testImageTag(): string {
  return `localhost/syncgov:test-${createHash("sha256").update(repoRoot).digest("hex").slice(0, 12)}`;
}

/** Label of the containers tests start: the pid of the test process that started them. */
export const OWNER_LABEL = "io.syncgov.test.owner";

/** `--label` flags that mark a container as started by this process. */
export function ownerLabel(): string[] {
  return ["--label", `${OWNER_LABEL}=${process.pid}`];
}

/**
 * Removes the containers of test processes that are gone: a test killed before its clean-up leaves
 * its detached containers running (podman's conmon, not the test, is their parent).
 */
export async function removeOrphanedContainers(): Promise<void> {
  const list = await podman([
    "ps",
    "-a",
    "--filter",
    `label=${OWNER_LABEL}`,
    "--format",
    `{{.ID}} {{index .Labels "${OWNER_LABEL}"}}`,
  ]);
  for (const line of list.stdout.split("\n")) {
    const [id, owner] = line.trim().split(" ");
    if (id && !processAlive(Number(owner))) await podman(["rm", "-f", "-t", "0", id]);
  }
}

function processAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

export interface BuiltImage {
  readonly image: string;
  readonly seconds: number;
}

/**
 * Builds the repository's Dockerfile on `base` as `tag`; the whole build output goes to `logFile`.
 * Throws with the output's tail when the build fails.
 */
export async function buildImage(options: {
  base: string;
  tag: string;
  logFile: string;
}): Promise<BuiltImage> {
  const began = Date.now();
  const args = [
    "build",
    ...CONTAINER_FLAGS,
    "--build-arg",
    `BASE=${options.base}`,
    "-t",
    options.tag,
    "-f",
    join(repoRoot, "Dockerfile"),
    repoRoot,
  ];
  const result = await podman(args);
  writeFileSync(options.logFile, `${result.stdout}\n--- stderr ---\n${result.stderr}`);
  if (result.code !== 0) {
    const tail = `${result.stdout}\n${result.stderr}`.trim().split("\n").slice(-40).join("\n");
    throw new Error(`podman build failed (exit code ${result.code}); log ${options.logFile}:\n${tail}`);
  }
  return { image: options.tag, seconds: (Date.now() - began) / 1000 };
}
