import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import {
  HttpMethod,
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

/**
 * Discovery (is this kind namespaced?) and a server-side apply that sends the object as it was read.
 * KubernetesObjectApi.patch serializes a known kind through client-node's typed model, which expects
 * the model's property names (xKubernetesValidations) and silently drops the wire names a manifest
 * holds (x-kubernetes-validations, x-kubernetes-list-type, ...): a CRD applied that way lost its CEL
 * rules. Here the body is the manifest's own JSON, as kubectl sends it.
 */
class ApplyClient extends KubernetesObjectApi {
  async namespaced(object: KubernetesObject): Promise<boolean> {
    return (await this.resource(object.apiVersion!, object.kind!))?.namespaced ?? false;
  }

  async apply(object: KubernetesObject, fieldManager: string): Promise<KubernetesObject> {
    const path = await this.specUriPath(object, "patch");
    const request = this.configuration.baseServer.makeRequestContext(path, HttpMethod.PATCH);
    request.setHeaderParam("Accept", "application/json");
    request.setHeaderParam("Content-Type", PatchStrategy.ServerSideApply);
    request.setQueryParam("fieldManager", fieldManager);
    request.setQueryParam("force", "true");
    request.setBody(JSON.stringify(object));
    return this.requestPromise(request);
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
    applied.push(await api.apply(spec, options.fieldManager ?? "syncgov"));
  }
  return applied;
}
