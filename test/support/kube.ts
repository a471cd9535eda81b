import {
  CoordinationV1Api,
  CoreV1Api,
  CustomObjectsApi,
  EventsV1Api,
  KubeConfig,
  PatchStrategy,
  setHeaderOptions,
} from "@kubernetes/client-node";
import { kubeConfig, uniqueName } from "./env.ts";
import { kubeconfigVia } from "./etcd.ts";

/** The API clients the integration tests use, all on one KubeConfig. */
export interface KubeClients {
  kubeConfig: KubeConfig;
  core: CoreV1Api;
  custom: CustomObjectsApi;
  events: EventsV1Api;
  leases: CoordinationV1Api;
}

/** Clients on kc, by default the test kubeconfig (the test API server, as cluster admin). */
export function kubeClients(kc: KubeConfig = kubeConfig()): KubeClients {
  return {
    kubeConfig: kc,
    core: kc.makeApiClient(CoreV1Api),
    custom: kc.makeApiClient(CustomObjectsApi),
    events: kc.makeApiClient(EventsV1Api),
    leases: kc.makeApiClient(CoordinationV1Api),
  };
}

/**
 * The namespaces a test file creates, each named uniquely after a prefix and labelled with labels.
 * deleteAll() deletes them and ignores failures: a namespace already being deleted is no reason to
 * fail a clean-up.
 */
export class ScratchNamespaces {
  readonly #core: CoreV1Api;
  readonly #labels: Record<string, string> | undefined;
  readonly #names: string[] = [];

  constructor(core: CoreV1Api, labels?: Record<string, string>) {
    this.#core = core;
    this.#labels = labels;
  }

  async create(prefix: string): Promise<string> {
    const name = uniqueName(prefix);
    await this.#core.createNamespace({ body: { metadata: { name, labels: this.#labels } } });
    this.#names.push(name);
    return name;
  }

  async deleteAll(): Promise<void> {
    for (const name of this.#names) await this.#core.deleteNamespace({ name }).catch(() => undefined);
  }
}

/** Request options that send a patch as a JSON merge patch (RFC 7386). */
export const mergePatch = setHeaderOptions("Content-Type", PatchStrategy.MergePatch);

/**
 * A KubeConfig for the test API server reached at 127.0.0.1:port, such as a FaultProxy in front of
 * it, so that a test can partition the client from the server. TLS passes through a TCP proxy
 * untouched: the server certificate names 127.0.0.1. name tells the written kubeconfig file apart.
 */
export function kubeConfigThrough(proxy: { port: number }, name: string): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromFile(kubeconfigVia(proxy.port, name));
  return kc;
}
