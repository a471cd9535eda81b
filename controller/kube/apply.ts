import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import {
  type KubeConfig,
  type KubernetesObject,
  KubernetesObjectApi,
  PatchStrategy,
} from "@kubernetes/client-node";
import { parseAllDocuments } from "yaml";

/** Every YAML document in the given files and directories (directories: *.yaml and *.yml, not recursive). */
export function readManifests(paths: string[]): KubernetesObject[] {
  const files = paths.flatMap((p) =>
    statSync(p).isDirectory()
      ? readdirSync(p)
          .filter((f) => /\.ya?ml$/.test(f))
          .sort()
          .map((f) => join(p, f))
      : [p],
  );
  return files.flatMap((f) =>
    parseAllDocuments(readFileSync(f, "utf8"))
      .map((d) => d.toJS() as KubernetesObject | null)
      .filter((o): o is KubernetesObject => o !== null && typeof o === "object" && "kind" in o),
  );
}

/** Exposes discovery (is this kind namespaced?) that KubernetesObjectApi keeps protected. */
class ApplyClient extends KubernetesObjectApi {
  async namespaced(object: KubernetesObject): Promise<boolean> {
    return (await this.resource(object.apiVersion!, object.kind!))?.namespaced ?? false;
  }
}

/**
 * Server-side apply (as `kubectl apply --server-side --force-conflicts`) of each object, in order;
 * `namespace` fills in namespaced objects that name none.
 */
export async function applyManifests(
  kc: KubeConfig,
  objects: KubernetesObject[],
  options: { namespace?: string; fieldManager?: string } = {},
): Promise<KubernetesObject[]> {
  const api = kc.makeApiClient(ApplyClient);
  const applied: KubernetesObject[] = [];
  for (const object of objects) {
    const spec = structuredClone(object);
    if (options.namespace && !spec.metadata?.namespace && (await api.namespaced(spec))) {
      spec.metadata = { ...spec.metadata, namespace: options.namespace };
    }
    applied.push(
      await api.patch(
        spec,
        undefined,
        undefined,
        options.fieldManager ?? "syncgov",
        true,
        PatchStrategy.ServerSideApply,
      ),
    );
  }
  return applied;
}
