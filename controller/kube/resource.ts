import {
  type ConfigurationOptions,
  type KubernetesObject,
  Observable,
  type ObservableMiddleware,
  type RequestContext,
  type ResponseContext,
} from "@kubernetes/client-node";
import { GROUP, VERSION } from "../api/common.ts";

/** A resource type as the API server serves it: `/api/v1/...` for the core group, `/apis/g/v/...` else. */
export interface ResourceType {
  /** "" for the core group. */
  group: string;
  version: string;
  /** Lower-case plural, as in the URL (e.g. "configmaps", "syncjobs"). */
  plural: string;
  namespaced: boolean;
}

/** The resources the controller and the runner read and write. */
export const SYNCJOBS: ResourceType = {
  group: GROUP,
  version: VERSION,
  plural: "syncjobs",
  namespaced: true,
};
export const SYNCRUNS: ResourceType = {
  group: GROUP,
  version: VERSION,
  plural: "syncruns",
  namespaced: true,
};
export const SYNCPOLICIES: ResourceType = {
  group: GROUP,
  version: VERSION,
  plural: "syncpolicies",
  namespaced: false,
};
export const NAMESPACES: ResourceType = { group: "", version: "v1", plural: "namespaces", namespaced: false };

export function apiVersionOf(type: ResourceType): string {
  return type.group === "" ? type.version : `${type.group}/${type.version}`;
}

/**
 * The URL path of a collection: all namespaces when `namespace` is absent (or the type is
 * cluster-scoped), else one namespace.
 */
export function collectionPath(type: ResourceType, namespace?: string): string {
  const root = type.group === "" ? `/api/${type.version}` : `/apis/${type.group}/${type.version}`;
  if (type.namespaced && namespace)
    return `${root}/namespaces/${encodeURIComponent(namespace)}/${type.plural}`;
  return `${root}/${type.plural}`;
}

/** client-go's MetaNamespaceKey: "namespace/name", or "name" for cluster-scoped objects. */
export function objectKey(object: KubernetesObject): string {
  const namespace = object.metadata?.namespace;
  const name = object.metadata?.name ?? "";
  return namespace ? `${namespace}/${name}` : name;
}

export function splitKey(key: string): { namespace?: string; name: string } {
  const slash = key.indexOf("/");
  return slash < 0 ? { name: key } : { namespace: key.slice(0, slash), name: key.slice(slash + 1) };
}

/**
 * The HTTP status of a failed API call: client-node's ApiException carries it as `code`, its Watch
 * as `statusCode`, and a watch ERROR event's Status object as `code`.
 */
export function statusCodeOf(error: unknown): number | undefined {
  if (typeof error !== "object" || error === null) return undefined;
  const { code, statusCode } = error as { code?: unknown; statusCode?: unknown };
  if (typeof code === "number") return code;
  if (typeof statusCode === "number") return statusCode;
  return undefined;
}

export const isNotFound = (error: unknown): boolean => statusCodeOf(error) === 404;
/** 409: a create found the name taken, or an update carried a stale resourceVersion. */
export const isConflict = (error: unknown): boolean => statusCodeOf(error) === 409;
/** 410 Gone: a resourceVersion or continue token older than the API server still has. */
export const isExpired = (error: unknown): boolean => statusCodeOf(error) === 410;

/**
 * A short, secret-free description of an API error for logs and conditions: status code and the
 * server's Status message. client-node's ApiException message embeds response headers and body,
 * which is noisy and may echo request content.
 */
export function describeApiError(error: unknown): string {
  const code = statusCodeOf(error);
  if (code === undefined) return error instanceof Error ? error.message : String(error);
  const body = (error as { body?: unknown }).body;
  let message: string | undefined;
  if (typeof body === "string") {
    try {
      message = (JSON.parse(body) as { message?: string }).message;
    } catch {
      message = undefined;
    }
  } else if (typeof body === "object" && body !== null) {
    message = (body as { message?: string }).message;
  } else if (
    !("headers" in (error as object)) &&
    typeof (error as { message?: unknown }).message === "string"
  ) {
    // A watch error or a Status object; an ApiException (which has headers) has a noisy message.
    message = (error as { message: string }).message;
  }
  return message ? `HTTP ${code}: ${message}` : `HTTP ${code}`;
}

/**
 * Request options that make a client-node API call abort with `signal` (a deadline, or shutdown).
 * The generated clients take no signal; a request middleware puts it on the fetch.
 */
export function abortable(signal: AbortSignal, options?: ConfigurationOptions): ConfigurationOptions {
  const middleware: ObservableMiddleware = {
    pre: (context: RequestContext) => {
      context.setSignal(signal);
      return new Observable(Promise.resolve(context));
    },
    post: (response: ResponseContext) => new Observable(Promise.resolve(response)),
  };
  return {
    ...options,
    middleware: [...(options?.middleware ?? []), middleware],
    middlewareMergeStrategy: "append",
  };
}
