/**
 * A real node: pods of the syncgov image run for real, on a kubelet with containerd and runc, scheduled
 * by kube-scheduler, Job pods made by kube-controller-manager (test/env/services/node.ts).
 *
 * The file starts a control plane of its own (etcd + kube-apiserver, with the ServiceAccount admission
 * plugin) rather than using the suite's: a controller-manager there would make pods for every Job the
 * other files create. The image is built from the repository's Dockerfile as image.test.ts builds it,
 * then imported into the node's containerd (nothing can be pulled: `imagePullPolicy: Never`). There is
 * no pod network: pods use the host's.
 *
 * Without podman, runc or mmdebstrap, or containerd or the CNI plugins (and no way to install them:
 * not root, or apt-get failed) the file is skipped with a message naming what is missing.
 */

import { mkdirSync } from "node:fs";
import { join } from "node:path";
import {
  BatchV1Api,
  CoreV1Api,
  KubeConfig,
  type V1Container,
  type V1Pod,
  type V1PodSpec,
} from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildImage, obtainImageBase, testImageTag } from "../env/services/image.ts";
import { startLocalKube } from "../env/services/kube.ts";
import { type LocalNode, obtainNodeBinaries, startLocalNode } from "../env/services/node.ts";
import { ProcessGroup, waitFor } from "../env/services/process.ts";
import { testEnv, uniqueName } from "../support/env.ts";

const base = await obtainImageBase();
const binaries = await obtainNodeBinaries();
const skipReason = !base.ok ? base.missing : !binaries.ok ? binaries.reason : "";
if (skipReason) console.warn(`node tests skipped: ${skipReason}`);

/** The chart's pod security: user 65532, read-only root, no capabilities, host network. */
function restrictedPod(containers: V1Container[], extra: Partial<V1PodSpec> = {}): V1PodSpec {
  return {
    hostNetwork: true,
    restartPolicy: "Never",
    securityContext: { runAsUser: 65532, runAsGroup: 65532, runAsNonRoot: true },
    containers: containers.map((c) => ({
      imagePullPolicy: "Never",
      securityContext: {
        readOnlyRootFilesystem: true,
        allowPrivilegeEscalation: false,
        capabilities: { drop: ["ALL"] },
      },
      ...c,
    })),
    ...extra,
  };
}

describe.skipIf(skipReason !== "")("a real node", () => {
  const image = testImageTag();
  const runDir = join(testEnv().runDir, "node-test");
  const group = new ProcessGroup(runDir);
  let node: LocalNode | undefined;
  let core: CoreV1Api;
  let batch: BatchV1Api;

  beforeAll(async () => {
    mkdirSync(runDir, { recursive: true });
    const kube = await startLocalKube(group, runDir, {
      serviceAccountAdmission: true,
      kubeletPreferredAddressTypes: ["Hostname"],
    });
    const kc = new KubeConfig();
    kc.loadFromFile(kube.endpoint.kubeconfig);
    core = kc.makeApiClient(CoreV1Api);
    batch = kc.makeApiClient(BatchV1Api);
    // The image build (seconds when podman's layer cache holds it) and the node start side by side.
    const [built, started] = await Promise.all([
      buildImage({
        base: base.ok ? base.image : "",
        tag: image,
        logFile: join(runDir, "image-build.log"),
      }),
      startLocalNode(group, runDir, kube.endpoint),
    ]);
    if (!started.ok) throw new Error(started.reason);
    node = started.node;
    console.log(`node: ${node.description}, Ready in ${node.seconds.toFixed(1)} s; logs in ${runDir}`);
    const importing = Date.now();
    await node.endpoint.importImage(built.image);
    console.log(
      `node: image ${image} built in ${built.seconds.toFixed(1)} s, imported in ${((Date.now() - importing) / 1000).toFixed(1)} s`,
    );
  }, 1_200_000);

  afterAll(async () => {
    const began = Date.now();
    await node?.stop();
    await group.stop();
    console.log(`node: stopped in ${((Date.now() - began) / 1000).toFixed(1)} s`);
  }, 120_000);

  /** A fresh namespace, once the controller-manager has given it its `default` service account. */
  async function namespace(prefix: string): Promise<string> {
    const name = uniqueName(prefix);
    await core.createNamespace({ body: { metadata: { name } } });
    await waitFor(
      `the default service account of ${name}`,
      async () => Boolean(await core.readNamespacedServiceAccount({ namespace: name, name: "default" })),
      30_000,
    );
    return name;
  }

  /** The pod once it has ended (Succeeded or Failed). */
  async function finished(namespace: string, name: string): Promise<V1Pod> {
    let pod: V1Pod | undefined;
    await waitFor(
      `pod ${namespace}/${name} to end`,
      async () => {
        pod = await core.readNamespacedPod({ namespace, name });
        return pod.status?.phase === "Succeeded" || pod.status?.phase === "Failed";
      },
      90_000,
    ).catch((error: unknown) => {
      throw new Error(`${String(error)}\nlast status: ${JSON.stringify(pod?.status)}`);
    });
    return pod!;
  }

  it("registers a Node that goes Ready", async () => {
    const current = await core.readNode({ name: node!.endpoint.nodeName });
    const ready = current.status?.conditions?.find((c) => c.type === "Ready");
    expect(ready?.status, JSON.stringify(current.status?.conditions)).toBe("True");
    expect(current.status?.nodeInfo?.kubeletVersion).toMatch(/^v1\.\d+\.\d+$/);
    expect(current.status?.nodeInfo?.containerRuntimeVersion).toMatch(/^containerd:\/\//);
    // The API server reaches the kubelet (logs) by this name, on 127.0.0.1.
    expect(current.status?.addresses).toContainEqual({ type: "Hostname", address: "localhost" });
  });

  it("runs the image as user 65532 on a read-only root: `syncgov --help` succeeds, its log read through the API", async () => {
    const ns = await namespace("node-pod");
    const name = "syncgov-help";
    await core.createNamespacedPod({
      namespace: ns,
      body: {
        metadata: { name },
        spec: restrictedPod([{ name: "syncgov", image, command: ["syncgov", "--help"] }]),
      },
    });
    const pod = await finished(ns, name);
    expect(pod.spec?.nodeName, "placed by the scheduler").toBe(node!.endpoint.nodeName);
    const log = await core.readNamespacedPodLog({ namespace: ns, name });
    expect(pod.status?.phase, `${JSON.stringify(pod.status)}\n${log}`).toBe("Succeeded");
    for (const command of ["controller", "run", "validate", "policy", "approve", "rollback"])
      expect(log).toMatch(new RegExp(`^  ${command}\\b`, "m"));
  });

  it("runs a Job: the controller-manager makes its pod, the scheduler places it, it runs under its service account's token", async () => {
    const ns = await namespace("node-job");
    const serviceAccount = "syncgov-runner";
    await core.createNamespacedServiceAccount({
      namespace: ns,
      body: { metadata: { name: serviceAccount } },
    });
    const tokenDir = "/var/run/secrets/kubernetes.io/serviceaccount";
    // Reads the projected token (as user 65532) and prints its subject.
    const script = `const fs = require("node:fs");
const token = fs.readFileSync("${tokenDir}/token", "utf8");
const claims = JSON.parse(Buffer.from(token.split(".")[1], "base64url").toString());
if (!fs.readFileSync("${tokenDir}/ca.crt", "utf8").includes("BEGIN CERTIFICATE")) process.exit(2);
console.log("subject " + claims.sub + " namespace " + fs.readFileSync("${tokenDir}/namespace", "utf8"));`;
    const name = "token-probe";
    await batch.createNamespacedJob({
      namespace: ns,
      body: {
        metadata: { name },
        spec: {
          backoffLimit: 0,
          template: {
            spec: restrictedPod([{ name: "probe", image, command: ["node", "-e", script] }], {
              serviceAccountName: serviceAccount,
            }),
          },
        },
      },
    });
    await waitFor(
      `Job ${ns}/${name} to complete`,
      async () => {
        const job = await batch.readNamespacedJob({ namespace: ns, name });
        const failed = job.status?.conditions?.find((c) => c.type === "Failed" && c.status === "True");
        if (failed) throw new Error(`the Job failed: ${failed.reason} ${failed.message}`);
        return job.status?.conditions?.some((c) => c.type === "Complete" && c.status === "True") ?? false;
      },
      120_000,
    );
    const pods = await core.listNamespacedPod({
      namespace: ns,
      labelSelector: `batch.kubernetes.io/job-name=${name}`,
    });
    expect(pods.items).toHaveLength(1);
    const pod = pods.items[0]!;
    expect(pod.spec?.nodeName).toBe(node!.endpoint.nodeName);
    expect(pod.spec?.serviceAccountName).toBe(serviceAccount);
    expect(pod.spec?.volumes?.some((v) => v.projected?.sources?.some((s) => s.serviceAccountToken))).toBe(
      true,
    );
    expect(pod.status?.phase).toBe("Succeeded");
    const log = await core.readNamespacedPodLog({ namespace: ns, name: pod.metadata!.name! });
    expect(log.trim()).toBe(`subject system:serviceaccount:${ns}:${serviceAccount} namespace ${ns}`);
  });
});
