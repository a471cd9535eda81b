import { z } from "zod";
import { GROUP, VERSION } from "./common.ts";
import type { ResourceDefinition } from "./resources.ts";

type JsonSchema = { [key: string]: unknown };

const SAFE = Number.MAX_SAFE_INTEGER;

/**
 * zod's OpenAPI output is close to, but not, a structural CRD schema: objects carry
 * `additionalProperties: false`, records carry `propertyNames`, and integers carry the safe-integer
 * bounds. This rewrites it: closed objects become plain objects (the API server prunes unknown
 * fields, kubectl rejects them), records keep `additionalProperties` as maps with their key pattern
 * turned into a CEL rule, and the implicit integer bounds go.
 */
export function toStructural(schema: JsonSchema): JsonSchema {
  const out: JsonSchema = {};
  const keyRules: { rule: string; message: string }[] = [];
  for (const [key, value] of Object.entries(schema)) {
    if (key === "$schema") continue;
    if (key === "additionalProperties" && value === false) continue;
    if ((key === "maximum" && value === SAFE) || (key === "minimum" && value === -SAFE)) continue;
    if (key === "propertyNames") {
      const pattern = (value as JsonSchema).pattern;
      if (typeof pattern === "string") {
        keyRules.push({
          rule: `self.all(k, k.matches(${JSON.stringify(pattern)}))`,
          message: `keys must match ${pattern}`,
        });
      }
      continue;
    }
    if (key === "properties") {
      out.properties = Object.fromEntries(
        Object.entries(value as Record<string, JsonSchema>).map(([k, v]) => [k, toStructural(v)]),
      );
    } else if (
      (key === "items" || key === "additionalProperties") &&
      typeof value === "object" &&
      value !== null
    ) {
      out[key] = toStructural(value as JsonSchema);
    } else if (key === "anyOf" || key === "oneOf" || key === "allOf" || key === "not") {
      throw new Error(
        `schema uses ${key}, which a structural CRD schema cannot express; model it as optional members plus a rule`,
      );
    } else {
      out[key] = value;
    }
  }
  if (keyRules.length > 0) {
    out["x-kubernetes-validations"] = [
      ...((out["x-kubernetes-validations"] as unknown[] | undefined) ?? []),
      ...keyRules,
    ];
  }
  return out;
}

function openApi(schema: z.ZodType): JsonSchema {
  return toStructural(z.toJSONSchema(schema, { target: "openapi-3.0", io: "input" }) as JsonSchema);
}

/** The apiextensions.k8s.io/v1 CustomResourceDefinition of one kind. */
export function customResourceDefinition(def: ResourceDefinition): JsonSchema {
  return {
    apiVersion: "apiextensions.k8s.io/v1",
    kind: "CustomResourceDefinition",
    metadata: {
      name: `${def.plural}.${GROUP}`,
      labels: { "app.kubernetes.io/name": "syncgov", "app.kubernetes.io/part-of": "syncgov" },
    },
    spec: {
      group: GROUP,
      names: {
        kind: def.kind,
        listKind: `${def.kind}List`,
        plural: def.plural,
        singular: def.singular,
        shortNames: def.shortNames,
        categories: ["syncgov"],
      },
      scope: def.scope,
      versions: [
        {
          name: VERSION,
          served: true,
          storage: true,
          subresources: { status: {} },
          additionalPrinterColumns: def.printerColumns,
          schema: {
            openAPIV3Schema: {
              type: "object",
              description: def.description,
              properties: {
                apiVersion: { type: "string", description: "syncgov.io/v1alpha1" },
                kind: { type: "string", description: def.kind },
                metadata: { type: "object" },
                spec: openApi(def.spec),
                status: openApi(def.status),
              },
              required: ["spec"],
            },
          },
        },
      ],
    },
  };
}
