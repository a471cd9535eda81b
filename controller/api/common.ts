import { z } from "zod";
import { DNS1123_SUBDOMAIN } from "./identifiers.ts";

export const GROUP = "syncgov.io";
export const VERSION = "v1alpha1";
export const API_VERSION = `${GROUP}/${VERSION}`;

/**
 * A cross-field rule, stated twice in agreement: as a CEL expression that the API server checks at
 * apply time (`x-kubernetes-validations` in the generated CRD) and as a TypeScript predicate that the
 * controller checks with zod. The table of invalid manifests in the tests holds the two together.
 */
export interface CrossFieldRule<T> {
  /** CEL over `self` (the object the rule is attached to). */
  cel: string;
  message: string;
  /** Field the error is reported on, relative to the object (e.g. "schedule"). */
  field?: string;
  holds: (self: T) => boolean;
}

/** Attaches cross-field rules to an object schema for both validators. */
export function withRules<S extends z.ZodType>(schema: S, rules: CrossFieldRule<z.output<S>>[]): S {
  return schema
    .superRefine((value, ctx) => {
      for (const rule of rules) {
        if (!rule.holds(value)) {
          ctx.addIssue({
            code: "custom",
            message: rule.message,
            path: rule.field ? rule.field.split(".") : [],
          });
        }
      }
    })
    .meta({
      "x-kubernetes-validations": rules.map((r) => ({
        rule: r.cel,
        message: r.message,
        ...(r.field ? { fieldPath: `.${r.field}` } : {}),
      })),
    }) as S;
}

export const objectName = z.string().max(253).regex(new RegExp(DNS1123_SUBDOMAIN), {
  message: "must be a lowercase DNS-1123 name (letters, digits, '-' and '.')",
});

export const SecretKeyRef = z
  .strictObject({
    name: objectName.describe("Name of a Secret in the SyncJob's namespace."),
    key: z
      .string()
      .max(253)
      .regex(/^[-._a-zA-Z0-9]+$/, { message: "must be a Secret data key" })
      .default("url")
      .describe(
        "Key in the Secret whose value is the connection URL (postgres://user:password@host:port/db). Default: url.",
      ),
  })
  .describe("A Secret holding connection credentials; its value never appears in status, events or logs.");

export const ConditionStatus = z.enum(["True", "False", "Unknown"]);

export const Condition = z
  .strictObject({
    type: z.string().max(316).describe("Type of the condition, in CamelCase (e.g. Valid, PolicyCompliant)."),
    status: ConditionStatus.describe("True, False or Unknown."),
    reason: z.string().max(1024).describe("CamelCase word a script can match, saying why."),
    message: z.string().max(32768).optional().describe("A sentence a person can act on."),
    observedGeneration: z
      .int()
      .min(0)
      .optional()
      .describe("The .metadata.generation the condition was set for."),
    lastTransitionTime: z.string().max(64).describe("When the status last changed (RFC 3339)."),
  })
  .describe("A standard Kubernetes condition.");
export type Condition = z.infer<typeof Condition>;

export const Conditions = z
  .array(Condition)
  .max(32)
  .meta({ "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"] })
  .describe("Current conditions, one per type.");

const labelKey = z
  .string()
  .max(317)
  .regex(/^([a-z0-9]([-a-z0-9.]*[a-z0-9])?\/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/, {
    message: "must be a label key",
  });
const labelValue = z
  .string()
  .max(63)
  .regex(/^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/, { message: "must be a label value" });

export const LabelSelector = z
  .strictObject({
    matchLabels: z
      .record(labelKey, labelValue.describe("The value the label must have."))
      .optional()
      .describe("Labels that must all be present with these values."),
    matchExpressions: z
      .array(
        z
          .strictObject({
            key: labelKey.describe("Label key the requirement applies to."),
            operator: z
              .enum(["In", "NotIn", "Exists", "DoesNotExist"])
              .describe("In, NotIn, Exists or DoesNotExist."),
            values: z
              .array(labelValue.describe("A label value."))
              .max(64)
              .optional()
              .describe("Values for In and NotIn; empty otherwise."),
          })
          .describe("A requirement on one label key."),
      )
      .max(16)
      .optional()
      .describe("Requirements that must all hold."),
  })
  .describe("A Kubernetes label selector; an empty selector matches everything.");
export type LabelSelector = z.infer<typeof LabelSelector>;
