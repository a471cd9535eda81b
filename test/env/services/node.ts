import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmdirSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { CoreV1Api, KubeConfig, type V1Node } from "@kubernetes/client-node";
import { obtainScript, type StartedService } from "./common.ts";
import { podmanOk } from "./image.ts";
import type { KubeEndpoint } from "./kube.ts";
import { freePort, type ProcessGroup, runCommand, tail, waitFor } from "./process.ts";

/**
 * A real node on a local control plane (ENVIRONMENT.md, "A real node"): kube-controller-manager (Jobs
 * get pods, namespaces get service accounts, tokens are signed), kube-scheduler, containerd with runc
 * from Debian, and a kubelet serving on 127.0.0.1, registered as one Node. Nothing can be pulled here:
 * images come from podman (importImage) and pods use `imagePullPolicy: Never`. There is no pod
 * network: pods run with `hostNetwork: true` (the runtime's only network is loopback-only, so that the
 * node reports Ready; a pod without host networking fails to start its sandbox).
 *
 * The control plane must be one of this process' own (startLocalKube with serviceAccountAdmission and
 * kubeletPreferredAddressTypes ["Hostname"]): the controller-manager acts on every object in it.
 * One node per machine at a time: the kubelet's device-plugin socket has a fixed path, and it sets
 * three sysctls (restored by stop()).
 */

export interface NodeEndpoint {
  /** The Node's name (metadata.name, and the kubelet's --hostname-override). */
  nodeName: string;
  /** containerd's socket (`ctr --address <it> -n k8s.io ...`). */
  containerdAddress: string;
  /** Imports a podman image (e.g. "localhost/syncgov:test-…") into the node's containerd. */
  importImage(podmanImageRef: string): Promise<void>;
}

/** The started node; stop() leaves nothing of it running or mounted. */
export type LocalNode = StartedService<NodeEndpoint> & { stop(): Promise<void> };

/** The node, or why one cannot run on this machine (tests skip with `reason`). */
export type LocalNodeResult = { ok: true; node: LocalNode } | { ok: false; reason: string };

export interface LocalNodeOptions {
  /**
   * The Node's name, default "localhost". The kubelet listens on 127.0.0.1 only (it lets anyone in),
   * and refuses a loopback --node-ip, so its InternalIP is the machine's own address, where nothing
   * answers; the API server reaches it (logs, exec) by its Hostname address, this name, which must
   * therefore resolve to 127.0.0.1 (kube-apiserver --kubelet-preferred-address-types=Hostname).
   */
  nodeName?: string;
  /** How long to wait for the Node to report Ready; default 120 s. */
  readyTimeoutMs?: number;
}

/** Exit code of node.sh when containerd, runc or the CNI plugins are missing and cannot be installed. */
const TOOLS_MISSING = 3;

/** Longest path a unix socket may have (sun_path is 108 bytes with its NUL), with room to spare. */
const SOCKET_PATH_MAX = 100;

/** The kubelet's longest socket below its root directory. */
const KUBELET_SOCKET = "pod-resources/kubelet.sock";

/**
 * What the kubelet changes on the machine whatever its root directory says: the device-plugin socket's
 * directory (a fixed path) and, unless protectKernelDefaults refuses to start on other values, these
 * sysctls. stop() restores them.
 */
const KUBELET_FIXED_DIR = "/var/lib/kubelet";
const KUBELET_SYSCTLS = ["vm/overcommit_memory", "kernel/panic", "kernel/panic_on_oops"];

/**
 * Files in a node's state directory: the pid of the process that started it; the sysctls before, and
 * whether KUBELET_FIXED_DIR was made by it.
 */
const OWNER_FILE = "owner.pid";
const SYSCTLS_FILE = "sysctls.json";

/** The shims' socket directory (fixed in containerd 1.6), emptied by the shims as they exit. */
const SHIM_SOCKET_DIRS = ["/run/containerd/s", "/run/containerd"];

/** node.sh's cache directory, or why a node cannot run here (containerd, runc or CNI plugins missing). */
export type NodeBinaries = { ok: true; binDir: string } | { ok: false; reason: string };

/**
 * Runs test/env/obtain/node.sh: installs containerd, runc and the CNI plugins when missing (as root,
 * with apt-get), builds kubelet, kube-scheduler, kube-controller-manager and the pause image once,
 * and returns their directory. Any failure other than missing tools throws.
 */
export async function obtainNodeBinaries(): Promise<NodeBinaries> {
  const { code, stdout, stderr } = await runCommand("bash", [obtainScript("node.sh")]);
  const lines = stderr.trim().split("\n");
  if (code === 0) return { ok: true, binDir: stdout.trim() };
  if (code === TOOLS_MISSING) return { ok: false, reason: `cannot run a node here: ${lines.at(-1) ?? ""}` };
  throw new Error(`node.sh failed (exit code ${code}):\n${lines.slice(-40).join("\n")}`);
}

/**
 * Starts the node's processes in `group` (so that its reaper stops them if this process dies) and
 * waits until the Node is Ready. Logs go to `<runDir>/node/*.log`; the node's state (containerd's
 * root and state, the kubelet's root) is under `<runDir>/node/state`, or under /tmp when that path is
 * too long for the sockets in it, and is removed by stop().
 */
export async function startLocalNode(
  group: ProcessGroup,
  runDir: string,
  kube: KubeEndpoint,
  options: LocalNodeOptions = {},
): Promise<LocalNodeResult> {
  const began = Date.now();
  const obtained = await obtainNodeBinaries();
  if (!obtained.ok) return obtained;
  const binDir = obtained.binDir;
  if (!kube.pki) throw new Error("startLocalNode needs a control plane started by startLocalKube (its PKI)");
  const pki = kube.pki;

  await removeOrphanedNodes();
  const nodeName = options.nodeName ?? "localhost";
  const dir = join(runDir, "node");
  mkdirSync(dir, { recursive: true });
  let state = join(dir, "state");
  if (join(state, "kubelet", KUBELET_SOCKET).length > SOCKET_PATH_MAX) {
    state = mkdtempSync("/tmp/syncgov-node-");
    symlinkSync(state, join(dir, "state"));
  } else {
    mkdirSync(state);
  }
  // For the clean-up after a test process that was killed (removeOrphanedNodes).
  writeFileSync(join(state, OWNER_FILE), String(process.pid));
  const containerdDir = join(state, "containerd");
  const kubeletDir = join(state, "kubelet");
  const socket = join(state, "containerd.sock");
  const log = (name: string) => join(dir, `${name}.log`);
  const logs = ["kube-controller-manager", "kube-scheduler", "containerd", "kubelet"].map(log);
  const started: { name: string; child: ReturnType<ProcessGroup["start"]> }[] = [];
  const start = (name: string, command: string, args: string[]) => {
    const child = group.start({ name, command, args, logFile: log(name) });
    started.push({ name, child });
    return child;
  };
  const alive = () => {
    for (const s of started) group.assertAlive(s.child, s.name, log(s.name));
  };
  const ctr = (...args: string[]) =>
    runCommand("ctr", ["--address", socket, "--namespace", "k8s.io", ...args]);

  const hadKubeletDir = existsSync(KUBELET_FIXED_DIR);
  const sysctls = KUBELET_SYSCTLS.map((name) => ({ name, value: readSysctl(name) }));
  writeFileSync(join(state, SYSCTLS_FILE), JSON.stringify({ sysctls, madeKubeletDir: !hadKubeletDir }));

  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    const child = (name: string) => started.find((s) => s.name === name)?.child;
    const kubelet = child("kubelet");
    if (kubelet) await group.stopOne(kubelet, 15_000);
    const containerd = child("containerd");
    // The kubelet leaves its pods' containers running: kill and delete every task and container while
    // containerd still answers (their shims outlive containerd otherwise).
    if (containerd && containerd.exitCode === null && containerd.signalCode === null) {
      await removeTasks(ctr);
      await group.stopOne(containerd, 15_000);
    }
    killShims(socket);
    await unmountUnder(state);
    for (const name of ["kube-scheduler", "kube-controller-manager"]) {
      const c = child(name);
      if (c) await group.stopOne(c);
    }
    removeKubeletCgroups();
    if (!hadKubeletDir) rmSync(KUBELET_FIXED_DIR, { recursive: true, force: true });
    restoreSysctls(sysctls);
    for (const d of SHIM_SOCKET_DIRS) removeIfEmpty(d);
    // Keep the logs; drop the images, snapshots and volumes.
    rmSync(state, { recursive: true, force: true });
    rmSync(join(dir, "state"), { recursive: true, force: true });
  };

  try {
    // --- control plane: controller-manager and scheduler ------------------------------------------
    const [kcmPort, schedulerPort, kubeletPort, kubeletHealthz] = [
      await freePort(),
      await freePort(),
      await freePort(),
      await freePort(),
    ];
    const delegated = [
      `--authentication-kubeconfig=${kube.kubeconfig}`,
      `--authorization-kubeconfig=${kube.kubeconfig}`,
      "--bind-address=127.0.0.1",
    ];
    start("kube-controller-manager", join(binDir, "kube-controller-manager"), [
      `--kubeconfig=${kube.kubeconfig}`,
      ...delegated,
      `--secure-port=${kcmPort}`,
      "--leader-elect=false",
      "--controllers=*",
      `--service-account-private-key-file=${pki.serviceAccountKey}`,
      `--root-ca-file=${pki.caCert}`,
      `--cluster-signing-cert-file=${pki.caCert}`,
      `--cluster-signing-key-file=${pki.caKey}`,
      "--use-service-account-credentials=false",
      "--v=1",
    ]);
    start("kube-scheduler", join(binDir, "kube-scheduler"), [
      `--kubeconfig=${kube.kubeconfig}`,
      ...delegated,
      `--secure-port=${schedulerPort}`,
      "--leader-elect=false",
      "--v=1",
    ]);

    // --- containerd -----------------------------------------------------------------------------------
    const pauseRef = readFileSync(join(binDir, "pause-image.ref"), "utf8").trim();
    const cniConf = join(state, "cni");
    mkdirSync(cniConf, { recursive: true });
    // A loopback-only network: the runtime then reports its network ready (the Node's Ready condition
    // needs it); pods use the host's network.
    writeFileSync(
      join(cniConf, "10-loopback.conflist"),
      JSON.stringify({ cniVersion: "1.0.0", name: "syncgov-loopback", plugins: [{ type: "loopback" }] }),
    );
    const config = join(dir, "containerd.toml");
    writeFileSync(config, containerdConfig({ containerdDir, socket, pauseRef, cniConf }));
    const containerd = start("containerd", "containerd", ["--config", config]);
    await waitFor(
      `containerd on ${socket} (log ${log("containerd")})`,
      async () => (await ctr("version")).code === 0,
      30_000,
      () => group.assertAlive(containerd, "containerd", log("containerd")),
    );
    await ctrOk(ctr, "images", "import", join(binDir, "pause-image.tar"));

    // --- kubelet ----------------------------------------------------------------------------------------
    const kubeletConfig = join(dir, "kubelet.yaml");
    writeFileSync(
      kubeletConfig,
      kubeletConfigYaml({
        socket,
        port: kubeletPort,
        healthzPort: kubeletHealthz,
        podLogsDir: join(state, "pod-logs"),
      }),
    );
    start("kubelet", join(binDir, "kubelet"), [
      `--config=${kubeletConfig}`,
      `--kubeconfig=${kube.kubeconfig}`,
      `--root-dir=${kubeletDir}`,
      `--cert-dir=${join(kubeletDir, "pki")}`,
      `--hostname-override=${nodeName}`,
      "--v=1",
    ]);

    const kc = new KubeConfig();
    kc.loadFromFile(kube.kubeconfig);
    const core = kc.makeApiClient(CoreV1Api);
    let last: V1Node | undefined;
    await waitFor(
      `Node ${nodeName} to be Ready (logs ${dir}/kubelet.log, containerd.log)`,
      async () => {
        last = await core.readNode({ name: nodeName });
        return last.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True") ?? false;
      },
      options.readyTimeoutMs ?? 120_000,
      alive,
    ).catch((error: unknown) => {
      const conditions = last?.status?.conditions?.map((c) => `${c.type}=${c.status} ${c.message ?? ""}`);
      throw new Error(
        `${String(error)}\nconditions: ${conditions?.join("; ") ?? "(no Node)"}\nkubelet log:\n${tail(log("kubelet"))}`,
      );
    });
    const version = last?.status?.nodeInfo?.kubeletVersion ?? "unknown";
    const runtime = last?.status?.nodeInfo?.containerRuntimeVersion ?? "unknown";

    return {
      ok: true,
      node: {
        endpoint: {
          nodeName,
          containerdAddress: socket,
          importImage: async (ref) => {
            const archive = join(state, `import-${Date.now()}.tar`);
            try {
              await podmanOk(["save", "--format", "docker-archive", "-o", archive, ref]);
              await ctrOk(ctr, "images", "import", archive);
            } finally {
              rmSync(archive, { force: true });
            }
          },
        },
        description: `node ${nodeName}: kubelet ${version}, ${runtime}, kube-scheduler and kube-controller-manager`,
        seconds: (Date.now() - began) / 1000,
        logs,
        processes: started.map((s) => s.name),
        stop,
      },
    };
  } catch (error) {
    await stop();
    throw error;
  }
}

async function ctrOk(
  ctr: (...args: string[]) => ReturnType<typeof runCommand>,
  ...args: string[]
): Promise<string> {
  const r = await ctr(...args);
  if (r.code !== 0) throw new Error(`ctr ${args.join(" ")} failed (exit code ${r.code}):\n${r.stderr}`);
  return r.stdout;
}

/** Kills and deletes every task, then every container, in containerd's k8s.io namespace. */
async function removeTasks(ctr: (...args: string[]) => ReturnType<typeof runCommand>): Promise<void> {
  const ids = async (...args: string[]) =>
    (await ctr(...args, "--quiet")).stdout
      .split("\n")
      .map((l) => l.trim())
      .filter(Boolean);
  for (const id of await ids("tasks", "list")) {
    await ctr("tasks", "kill", "--signal", "SIGKILL", "--all", id);
    await ctr("tasks", "delete", "--force", id);
  }
  for (const id of await ids("containers", "list")) await ctr("containers", "delete", id);
}

/** The containerd-shim processes of this machine, with the containerd socket each serves. */
function shims(): { pid: number; address: string }[] {
  const found: { pid: number; address: string }[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    let argv: string[];
    try {
      argv = readFileSync(`/proc/${entry}/cmdline`, "utf8").split("\0");
    } catch {
      continue;
    }
    if (!argv[0]?.includes("containerd-shim")) continue;
    const at = argv.indexOf("-address");
    if (at >= 0 && argv[at + 1]) found.push({ pid: Number(entry), address: argv[at + 1]! });
  }
  return found;
}

/** Kills the shims of the containerd on `socket`, and the processes they hold (its containers). */
function killShims(socket: string): void {
  for (const shim of shims().filter((s) => s.address === socket)) killTree(shim.pid);
}

/** The state directory of a node this module started, from a path below it. */
function nodeStateOf(path: string): string | undefined {
  return /^(\/tmp\/syncgov-node-[^/]+|.*\/\.syncgov\/runs\/.*\/node\/state)(\/|$)/.exec(path)?.[1];
}

/**
 * Cleans up after nodes whose starting process is gone: a test process killed before its clean-up
 * leaves their shims (with the containers they hold) running, as shims do not die with containerd
 * (the process group's reaper stops the rest), their volumes and root filesystems mounted, and the
 * kubelet's sysctls changed.
 */
async function removeOrphanedNodes(): Promise<void> {
  const orphaned = (state: string) => {
    try {
      return !processAlive(Number(readFileSync(join(state, OWNER_FILE), "utf8")));
    } catch {
      return false;
    }
  };
  const states = new Set([
    ...shims().flatMap((s) => nodeStateOf(s.address) ?? []),
    ...mountPoints().flatMap((m) => nodeStateOf(m) ?? []),
    ...readdirSync("/tmp")
      .filter((d) => d.startsWith("syncgov-node-"))
      .map((d) => join("/tmp", d)),
  ]);
  for (const state of states) {
    if (!orphaned(state)) continue;
    for (const shim of shims()) if (nodeStateOf(shim.address) === state) killTree(shim.pid);
    await unmountUnder(state);
    try {
      const saved = JSON.parse(readFileSync(join(state, SYSCTLS_FILE), "utf8")) as {
        sysctls: { name: string; value?: string }[];
        madeKubeletDir: boolean;
      };
      restoreSysctls(saved.sysctls);
      if (saved.madeKubeletDir) rmSync(KUBELET_FIXED_DIR, { recursive: true, force: true });
    } catch {
      // the kubelet never started
    }
    rmSync(state, { recursive: true, force: true });
    for (const d of SHIM_SOCKET_DIRS) removeIfEmpty(d);
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

function killTree(pid: number): void {
  for (const child of children(pid)) killTree(child);
  try {
    process.kill(pid, "SIGKILL");
  } catch {
    // already gone
  }
}

function children(pid: number): number[] {
  try {
    const tasks = readdirSync(`/proc/${pid}/task`);
    return tasks.flatMap((t) =>
      readFileSync(`/proc/${pid}/task/${t}/children`, "utf8").split(" ").filter(Boolean).map(Number),
    );
  } catch {
    return [];
  }
}

/** The mount points of this machine (this process' mount namespace). */
function mountPoints(): string[] {
  const decode = (p: string) =>
    p.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(Number.parseInt(o, 8)));
  return readFileSync("/proc/self/mountinfo", "utf8")
    .split("\n")
    .map((line) => line.split(" ")[4])
    .filter((p): p is string => p !== undefined)
    .map(decode);
}

/** Unmounts every mount at or below `dir`, deepest first (volumes, overlay root filesystems). */
async function unmountUnder(dir: string): Promise<void> {
  for (let round = 0; round < 3; round++) {
    const mounts = mountPoints()
      .filter((p) => p === dir || p.startsWith(`${dir}/`))
      .sort((a, b) => b.length - a.length);
    if (mounts.length === 0) return;
    for (const m of mounts) {
      if ((await runCommand("umount", [m])).code !== 0) await runCommand("umount", ["--lazy", m]);
    }
  }
}

function readSysctl(name: string): string | undefined {
  try {
    return readFileSync(`/proc/sys/${name}`, "utf8").trim();
  } catch {
    return undefined;
  }
}

function restoreSysctls(saved: { name: string; value?: string }[]): void {
  for (const { name, value } of saved) if (value !== undefined) writeSysctl(name, value);
}

function writeSysctl(name: string, value: string): void {
  try {
    if (readSysctl(name) !== value) writeFileSync(`/proc/sys/${name}`, value);
  } catch {
    // not ours to change (not root)
  }
}

function removeIfEmpty(dir: string): void {
  try {
    rmdirSync(dir);
  } catch {
    // not empty, or not there
  }
}

/**
 * Removes the kubepods cgroups the kubelet made in each cgroup hierarchy, deepest first: once their
 * processes are gone they are empty, and an empty cgroup goes with rmdir. One still in use stays.
 */
function removeKubeletCgroups(): void {
  const root = "/sys/fs/cgroup";
  const remove = (path: string) => {
    let subdirs: string[];
    try {
      subdirs = readdirSync(path, { withFileTypes: true })
        .filter((e) => e.isDirectory())
        .map((e) => e.name);
    } catch {
      return;
    }
    for (const d of subdirs) remove(join(path, d));
    try {
      rmdirSync(path);
    } catch {
      // still in use
    }
  };
  let hierarchies: string[] = [];
  try {
    hierarchies = readdirSync(root);
  } catch {
    return;
  }
  for (const h of hierarchies) remove(join(root, h, "kubepods"));
}

function containerdConfig(o: {
  containerdDir: string;
  socket: string;
  pauseRef: string;
  cniConf: string;
}): string {
  const cri = '[plugins."io.containerd.grpc.v1.cri"';
  return `# containerd for one syncgov test node (written by test/env/services/node.ts)
version = 2
root = ${JSON.stringify(join(o.containerdDir, "root"))}
state = ${JSON.stringify(join(o.containerdDir, "state"))}

[grpc]
  address = ${JSON.stringify(o.socket)}

[ttrpc]
  address = ""

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = ${JSON.stringify(join(o.containerdDir, "opt"))}

${cri}]
  sandbox_image = ${JSON.stringify(o.pauseRef)}
  # This VM refuses to lower oom_score_adj: without this every sandbox fails in runc.
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

${cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

${cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

${cri}.containerd.runtimes.runc.options]
  BinaryName = "/usr/sbin/runc"
  Root = ${JSON.stringify(join(o.containerdDir, "runc"))}
  SystemdCgroup = false

${cri}.cni]
  bin_dir = "/usr/lib/cni"
  conf_dir = ${JSON.stringify(o.cniConf)}
`;
}

function kubeletConfigYaml(o: {
  socket: string;
  port: number;
  healthzPort: number;
  podLogsDir: string;
}): string {
  return `# kubelet for one syncgov test node (written by test/env/services/node.ts)
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# The kernel runs cgroups in hybrid v1 mode.
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://${o.socket}
failSwapOn: false
enforceNodeAllocatable: []
evictionHard: {}
localStorageCapacityIsolation: false
address: 127.0.0.1
port: ${o.port}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: ${o.healthzPort}
podLogsDir: ${JSON.stringify(o.podLogsDir)}
# A local node: the API server (and tests) reach it without credentials.
authentication:
  anonymous:
    enabled: true
  webhook:
    enabled: false
authorization:
  mode: AlwaysAllow
serializeImagePulls: false
maxPods: 30
`;
}
