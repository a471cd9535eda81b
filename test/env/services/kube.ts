import { generateKeyPairSync } from "node:crypto";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { request } from "node:https";
import { join } from "node:path";
import { obtainScript, type StartedService } from "./common.ts";
import { execFileAsync, freePort, type ProcessGroup, waitFor } from "./process.ts";

export interface KubeEndpoint {
  kubeconfig: string;
  server: string;
  /** etcd's client URL (tests compact it to force 410 Gone on watches). */
  etcd: string;
  /** The throwaway PKI's files, when this process made it (a node's controller-manager needs them). */
  pki?: KubePkiFiles;
}

export interface KubePkiFiles {
  /** The CA that signed the API server's certificate and the admin client certificate (PEM). */
  caCert: string;
  caKey: string;
  /** The key that signs service-account tokens (PKCS#8 PEM); the API server verifies with its public half. */
  serviceAccountKey: string;
}

/** What a caller may change in the control plane; the defaults are the shared suite environment's. */
export interface LocalKubeOptions {
  /**
   * Enables the ServiceAccount admission plugin (off by default: without a controller-manager no
   * namespace gets its `default` service account, and the plugin would reject every pod).
   */
  serviceAccountAdmission?: boolean;
  /** --kubelet-preferred-address-types, e.g. ["Hostname"] for a node named "localhost" (node.ts). */
  kubeletPreferredAddressTypes?: string[];
}

/**
 * Starts an envtest-style control plane: etcd and kube-apiserver as local processes, TLS with a
 * throwaway CA, RBAC authorization, and an admin client certificate (group system:masters) written
 * into a kubeconfig. There is no kubelet or controller-manager: nothing runs pods, and no garbage
 * collector deletes dependents (node.ts adds them to a control plane of its own).
 */
export async function startLocalKube(
  group: ProcessGroup,
  runDir: string,
  options: LocalKubeOptions = {},
): Promise<StartedService<KubeEndpoint>> {
  const began = Date.now();
  const binDir = (
    await execFileAsync("bash", [obtainScript("kube.sh")], { maxBuffer: 1 << 20 })
  ).stdout.trim();
  const dir = join(runDir, "kube");
  const certs = join(dir, "certs");
  mkdirSync(certs, { recursive: true });
  const pki = await makePki(certs);

  const [etcdPort, peerPort, apiPort] = [await freePort(), await freePort(), await freePort()];
  const etcdUrl = `http://127.0.0.1:${etcdPort}`;
  const etcdLog = join(runDir, "etcd.log");
  const etcd = group.start({
    name: "etcd",
    command: join(binDir, "etcd"),
    args: [
      "--name=syncgov",
      `--data-dir=${join(dir, "etcd")}`,
      `--listen-client-urls=${etcdUrl}`,
      `--advertise-client-urls=${etcdUrl}`,
      `--listen-peer-urls=http://127.0.0.1:${peerPort}`,
      `--initial-advertise-peer-urls=http://127.0.0.1:${peerPort}`,
      `--initial-cluster=syncgov=http://127.0.0.1:${peerPort}`,
      "--unsafe-no-fsync=true",
      "--log-level=warn",
    ],
    logFile: etcdLog,
  });
  const etcdReady = (check?: () => void) =>
    waitFor(
      `etcd on ${etcdUrl} (log ${etcdLog})`,
      async () => (await fetch(`${etcdUrl}/health`)).ok,
      30_000,
      check,
    );
  await etcdReady(() => group.assertAlive(etcd, "etcd", etcdLog));

  const server = `https://127.0.0.1:${apiPort}`;
  const apiLog = join(runDir, "kube-apiserver.log");
  const api = group.start({
    name: "kube-apiserver",
    command: join(binDir, "kube-apiserver"),
    args: [
      `--etcd-servers=${etcdUrl}`,
      `--cert-dir=${certs}`,
      `--tls-cert-file=${pki.serverCert}`,
      `--tls-private-key-file=${pki.serverKey}`,
      `--client-ca-file=${pki.caCert}`,
      `--secure-port=${apiPort}`,
      "--bind-address=127.0.0.1",
      "--advertise-address=127.0.0.1",
      "--service-cluster-ip-range=10.0.0.0/24",
      "--allow-privileged=true",
      ...(options.serviceAccountAdmission ? [] : ["--disable-admission-plugins=ServiceAccount"]),
      ...(options.kubeletPreferredAddressTypes
        ? [`--kubelet-preferred-address-types=${options.kubeletPreferredAddressTypes.join(",")}`]
        : []),
      "--authorization-mode=RBAC",
      `--service-account-issuer=${server}`,
      `--service-account-key-file=${pki.saPublic}`,
      `--service-account-signing-key-file=${pki.saPrivate}`,
      "--v=0",
    ],
    logFile: apiLog,
  });
  const tls = { ca: pki.caPem, cert: pki.adminCertPem, key: pki.adminKeyPem };
  // One probe for start-up and for restarts in tests; at start-up a dead process fails it at once.
  const apiReady = (check?: () => void) =>
    waitFor(
      `kube-apiserver on ${server} (log ${apiLog})`,
      async () => (await httpsGet(`${server}/readyz`, tls)) === 200,
      90_000,
      check,
    );
  await apiReady(() => group.assertAlive(api, "kube-apiserver", apiLog));

  const kubeconfig = join(dir, "kubeconfig");
  writeFileSync(kubeconfig, kubeconfigYaml(server, tls), { mode: 0o600 });
  const version = await serverVersion(server, tls);
  return {
    endpoint: {
      kubeconfig,
      server,
      etcd: etcdUrl,
      pki: { caCert: pki.caCert, caKey: join(certs, "ca.key"), serviceAccountKey: pki.saPrivate },
    },
    description: `kube-apiserver ${version} + etcd at ${server}`,
    seconds: (Date.now() - began) / 1000,
    logs: [etcdLog, apiLog],
    processes: ["etcd", "kube-apiserver"],
    ready: (name) => (name === "etcd" ? etcdReady() : apiReady()),
  };
}

interface Pki {
  caCert: string;
  caPem: string;
  serverCert: string;
  serverKey: string;
  adminCertPem: string;
  adminKeyPem: string;
  saPublic: string;
  saPrivate: string;
}

/** A throwaway CA, the API server's serving certificate and an admin client certificate. */
async function makePki(dir: string): Promise<Pki> {
  const p = (f: string) => join(dir, f);
  const openssl = (...args: string[]) => execFileAsync("openssl", args);
  await openssl(
    "req",
    "-x509",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-days",
    "30",
    "-keyout",
    p("ca.key"),
    "-out",
    p("ca.crt"),
    "-subj",
    "/CN=syncgov-local-ca",
  );
  const issue = async (name: string, subject: string, ext: string) => {
    writeFileSync(p(`${name}.ext`), ext);
    await openssl(
      "req",
      "-newkey",
      "rsa:2048",
      "-nodes",
      "-keyout",
      p(`${name}.key`),
      "-out",
      p(`${name}.csr`),
      "-subj",
      subject,
    );
    await openssl(
      "x509",
      "-req",
      "-in",
      p(`${name}.csr`),
      "-CA",
      p("ca.crt"),
      "-CAkey",
      p("ca.key"),
      "-CAcreateserial",
      "-days",
      "30",
      "-out",
      p(`${name}.crt`),
      "-extfile",
      p(`${name}.ext`),
    );
  };
  await issue(
    "apiserver",
    "/CN=kube-apiserver",
    "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth\n",
  );
  await issue("admin", "/O=system:masters/CN=syncgov-admin", "extendedKeyUsage=clientAuth\n");
  const sa = generateKeyPairSync("rsa", {
    modulusLength: 2048,
    publicKeyEncoding: { type: "spki", format: "pem" },
    privateKeyEncoding: { type: "pkcs8", format: "pem" },
  });
  writeFileSync(p("sa.pub"), sa.publicKey);
  writeFileSync(p("sa.key"), sa.privateKey, { mode: 0o600 });
  return {
    caCert: p("ca.crt"),
    caPem: readFileSync(p("ca.crt"), "utf8"),
    serverCert: p("apiserver.crt"),
    serverKey: p("apiserver.key"),
    adminCertPem: readFileSync(p("admin.crt"), "utf8"),
    adminKeyPem: readFileSync(p("admin.key"), "utf8"),
    saPublic: p("sa.pub"),
    saPrivate: p("sa.key"),
  };
}

interface Tls {
  ca: string;
  cert: string;
  key: string;
}

function httpsGet(url: string, tls: Tls): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(url, { ...tls, timeout: 2000 }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on("error", reject);
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.end();
  });
}

async function serverVersion(server: string, tls: Tls): Promise<string> {
  return new Promise((resolve) => {
    const req = request(`${server}/version`, tls, (res) => {
      let body = "";
      res.on("data", (c) => {
        body += c;
      });
      res.on("end", () => {
        try {
          resolve((JSON.parse(body) as { gitVersion: string }).gitVersion);
        } catch {
          resolve("unknown");
        }
      });
    });
    req.on("error", () => resolve("unknown"));
    req.end();
  });
}

function kubeconfigYaml(server: string, tls: Tls): string {
  const b64 = (s: string) => Buffer.from(s).toString("base64");
  return [
    "apiVersion: v1",
    "kind: Config",
    "clusters:",
    "- name: syncgov-local",
    "  cluster:",
    `    server: ${server}`,
    `    certificate-authority-data: ${b64(tls.ca)}`,
    "users:",
    "- name: syncgov-admin",
    "  user:",
    `    client-certificate-data: ${b64(tls.cert)}`,
    `    client-key-data: ${b64(tls.key)}`,
    "contexts:",
    "- name: syncgov-local",
    "  context: {cluster: syncgov-local, user: syncgov-admin}",
    "current-context: syncgov-local",
    "",
  ].join("\n");
}
