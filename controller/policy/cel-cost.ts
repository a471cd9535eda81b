import type { parse } from "@bufbuild/cel";
import { z } from "zod";
import { SyncJob } from "../api/syncjob.ts";

/**
 * The cost of a CEL rule, as Kubernetes bounds the CEL of a ValidatingAdmissionPolicy or a CRD
 * validation rule (k8s.io/apiserver pkg/apis/cel, cel-go checker/cost.go):
 *
 * - Estimated before a rule is used, from the expression and the largest inputs the schemas allow:
 *   lists are bounded by the CRD's maxItems, strings by maxLength, maps by maxProperties; what the
 *   schema leaves unbounded is bounded by the largest request the API server accepts (3 MiB), as
 *   Kubernetes does. A comprehension (all, exists, map, filter, ...) costs the largest size of its
 *   range times the cost of its body, so nesting multiplies. A rule whose estimate exceeds
 *   PER_RULE_COST_LIMIT (Kubernetes' PerCallLimit, 10^6) does not compile.
 * - Enforced while a rule runs: every iteration of a comprehension adds its body's own estimated
 *   cost to a meter, and the evaluation stops with an error when the meter passes the same limit
 *   (Kubernetes' runtime cost tracker and interrupt check). Outside comprehensions a rule does a
 *   bounded amount of work per node of its syntax tree, which the estimate covers.
 *
 * Written here because @bufbuild/cel (0.6.1) has neither a cost estimator nor a cost limit or an
 * interrupt hook, and Kubernetes' estimator is Go; the constants below are cel-go's.
 */

/** Kubernetes' PerCallLimit: the cost one expression may have, estimated and at run time. */
export const PER_RULE_COST_LIMIT = 1_000_000;

/**
 * Kubernetes' RuntimeCELCostBudget: what all rules of one policy may cost together for one job
 * (estimated; each rule is also held to PER_RULE_COST_LIMIT at run time).
 */
export const PER_POLICY_COST_LIMIT = 10_000_000;

/** Kubernetes' MaxRequestSizeBytes: what bounds the inputs a schema leaves unbounded. */
const MAX_REQUEST_SIZE_BYTES = 3 * 1024 * 1024;

// cel-go's cost constants (common/costs.go).
const SELECT_AND_IDENT_COST = 1;
const CONST_COST = 0;
const CALL_COST = 1;
const LIST_CREATE_BASE_COST = 10;
const MAP_CREATE_BASE_COST = 30;
const STRING_TRAVERSAL_COST_FACTOR = 0.1;
const REGEX_STRING_LENGTH_COST_FACTOR = 0.25;

type Expr = NonNullable<ReturnType<typeof parse>["expr"]>;

/** What the estimator knows of a value: its kind, its largest size and the shape of its parts. */
export interface Shape {
  kind: "string" | "list" | "map" | "object" | "scalar" | "dyn";
  /** Length of a string, items of a list, entries of a map or object. */
  maxSize: number;
  /** List items, map values. */
  elem?: Shape;
  /** Map keys. */
  key?: Shape;
  /** Object fields. */
  fields?: Readonly<Record<string, Shape>>;
}

const SCALAR: Shape = { kind: "scalar", maxSize: 1 };
/** A value of unknown type: as large as a request allows, of parts equally unknown. */
const DYN: Shape = { kind: "dyn", maxSize: MAX_REQUEST_SIZE_BYTES };

/** The largest number of items of a list (or entries of a map) that fits in a request. */
function itemsPerRequest(minItemBytes: number): number {
  return Math.floor((MAX_REQUEST_SIZE_BYTES - 2) / (minItemBytes + 1));
}

const unboundedString = (): Shape => ({ kind: "string", maxSize: MAX_REQUEST_SIZE_BYTES - 2 });

/** The fewest bytes a value of this schema takes in JSON, for bounding unbounded lists. */
function minJsonBytes(schema: JsonSchema | undefined): number {
  switch (schema?.type) {
    case "string":
      return 2;
    case "boolean":
      return 4;
    case "integer":
    case "number":
      return 1;
    default:
      return 2; // {} or []
  }
}

type JsonSchema = {
  type?: string;
  properties?: Record<string, JsonSchema>;
  items?: JsonSchema;
  additionalProperties?: JsonSchema | boolean;
  maxItems?: number;
  maxLength?: number;
  maxProperties?: number;
  enum?: unknown[];
};

/** A structural (CRD) JSON schema as a Shape. */
export function shapeOfSchema(schema: JsonSchema | undefined): Shape {
  if (!schema) return DYN;
  switch (schema.type) {
    case "string": {
      const enumMax = schema.enum?.every((v) => typeof v === "string")
        ? Math.max(...(schema.enum as string[]).map((v) => v.length))
        : undefined;
      return { kind: "string", maxSize: schema.maxLength ?? enumMax ?? unboundedString().maxSize };
    }
    case "integer":
    case "number":
    case "boolean":
      return SCALAR;
    case "array":
      return {
        kind: "list",
        maxSize: schema.maxItems ?? itemsPerRequest(minJsonBytes(schema.items)),
        elem: shapeOfSchema(schema.items),
      };
    case "object": {
      if (schema.properties) {
        const fields = Object.fromEntries(
          Object.entries(schema.properties).map(([k, v]) => [k, shapeOfSchema(v)]),
        );
        return { kind: "object", maxSize: Object.keys(fields).length, fields };
      }
      const values =
        typeof schema.additionalProperties === "object" ? schema.additionalProperties : undefined;
      return {
        kind: "map",
        maxSize: schema.maxProperties ?? itemsPerRequest(2 + 1 + minJsonBytes(values)),
        key: unboundedString(),
        elem: shapeOfSchema(values),
      };
    }
    default:
      return DYN;
  }
}

/**
 * ObjectMeta as the API server bounds it: names of up to 253 characters, label keys of up to 317
 * (prefix/name) and values of up to 63; annotations of at most 256 KiB together. How many labels
 * an object has is bounded only by the request.
 */
function labelsShape(): Shape {
  return {
    kind: "map",
    maxSize: itemsPerRequest(2 + 1 + 2),
    key: { kind: "string", maxSize: 317 },
    elem: { kind: "string", maxSize: 63 },
  };
}
const ANNOTATIONS_BYTES = 256 * 1024;
function metadataShape(): Shape {
  const name: Shape = { kind: "string", maxSize: 253 };
  const fields: Record<string, Shape> = {
    name,
    generateName: name,
    namespace: { kind: "string", maxSize: 63 },
    uid: { kind: "string", maxSize: 36 },
    resourceVersion: unboundedString(),
    generation: SCALAR,
    creationTimestamp: { kind: "string", maxSize: 32 },
    deletionTimestamp: { kind: "string", maxSize: 32 },
    labels: labelsShape(),
    annotations: {
      kind: "map",
      maxSize: Math.floor(ANNOTATIONS_BYTES / 2),
      key: { kind: "string", maxSize: 317 },
      elem: { kind: "string", maxSize: ANNOTATIONS_BYTES },
    },
    finalizers: { kind: "list", maxSize: itemsPerRequest(2), elem: name },
  };
  return { kind: "object", maxSize: Object.keys(fields).length, fields };
}

let variables: Record<string, Shape> | undefined;

/** The shapes of the variables a rule sees: `object` (a SyncJob) and `namespaceObject`. */
export function ruleVariableShapes(): Record<string, Shape> {
  if (!variables) {
    const job = shapeOfSchema(
      z.toJSONSchema(SyncJob, { target: "openapi-3.0", io: "input", unrepresentable: "any" }) as JsonSchema,
    );
    variables = {
      object: { ...job, fields: { ...job.fields, metadata: metadataShape() } },
      namespaceObject: {
        kind: "object",
        maxSize: 1,
        fields: {
          metadata: {
            kind: "object",
            maxSize: 2,
            fields: { name: { kind: "string", maxSize: 63 }, labels: labelsShape() },
          },
        },
      },
    };
  }
  return variables;
}

export interface CostEstimate {
  /** The largest cost the expression can have. */
  cost: number;
  /**
   * Per comprehension (by expression id): the estimated cost of one iteration of its body, not
   * counting the comprehensions nested in it (they are metered on their own).
   */
  iterationCost: Map<bigint, number>;
}

interface Estimate {
  cost: number;
  shape: Shape;
  /** The part of cost spent in comprehensions. */
  loops: number;
}

const traverse = (size: number) => Math.ceil(STRING_TRAVERSAL_COST_FACTOR * size);

function join(a: Shape, b: Shape): Shape {
  if (a.kind !== b.kind) return a.kind === "dyn" ? a : b.kind === "dyn" ? b : { ...DYN };
  return {
    ...a,
    maxSize: Math.max(a.maxSize, b.maxSize),
    ...(a.elem && b.elem ? { elem: join(a.elem, b.elem) } : {}),
  };
}

/** Estimates the largest cost of an expression whose free variables have the given shapes. */
export function estimateCost(
  expr: Expr | undefined,
  vars: Readonly<Record<string, Shape>> = ruleVariableShapes(),
): CostEstimate {
  const iterationCost = new Map<bigint, number>();
  const scope = new Map(Object.entries(vars));
  const estimate = (e: Expr | undefined): Estimate => {
    if (!e) return { cost: 0, shape: SCALAR, loops: 0 };
    const kind = e.exprKind;
    switch (kind.case) {
      case "constExpr": {
        const c = kind.value.constantKind;
        const size = c.case === "stringValue" || c.case === "bytesValue" ? c.value.length : 1;
        return {
          cost: CONST_COST,
          shape: c.case === "stringValue" ? { kind: "string", maxSize: size } : SCALAR,
          loops: 0,
        };
      }
      case "identExpr":
        return { cost: SELECT_AND_IDENT_COST, shape: scope.get(kind.value.name) ?? DYN, loops: 0 };
      case "selectExpr": {
        const operand = estimate(kind.value.operand);
        return {
          cost: operand.cost + SELECT_AND_IDENT_COST,
          shape: kind.value.testOnly ? SCALAR : member(operand.shape, kind.value.field),
          loops: operand.loops,
        };
      }
      case "listExpr": {
        const elements = kind.value.elements.map(estimate);
        return {
          cost: LIST_CREATE_BASE_COST + sum(elements.map((x) => x.cost)),
          shape: {
            kind: "list",
            maxSize: elements.length,
            elem: elements.map((x) => x.shape).reduce(join, elements[0]?.shape ?? SCALAR),
          },
          loops: sum(elements.map((x) => x.loops)),
        };
      }
      case "structExpr": {
        const parts = kind.value.entries.flatMap((entry) => [
          estimate(entry.keyKind.case === "mapKey" ? entry.keyKind.value : undefined),
          estimate(entry.value),
        ]);
        const values = kind.value.entries.map((entry) => estimate(entry.value).shape);
        return {
          cost: MAP_CREATE_BASE_COST + sum(parts.map((x) => x.cost)),
          shape: {
            kind: "map",
            maxSize: kind.value.entries.length,
            key: DYN,
            elem: values.reduce(join, values[0] ?? SCALAR),
          },
          loops: sum(parts.map((x) => x.loops)),
        };
      }
      case "comprehensionExpr": {
        const c = kind.value;
        const range = estimate(c.iterRange);
        const init = estimate(c.accuInit);
        const n = range.shape.maxSize;
        const item = range.shape.kind === "map" ? (range.shape.key ?? DYN) : (range.shape.elem ?? DYN);
        // The accumulator of map() and filter() grows to one item per iteration at most.
        const accu: Shape =
          init.shape.kind === "list"
            ? { kind: "list", maxSize: init.shape.maxSize + n, elem: DYN }
            : init.shape;
        const bound = [c.iterVar, c.iterVar2, c.accuVar].filter((v): v is string => !!v);
        const saved = new Map(bound.map((v) => [v, scope.get(v)]));
        if (c.iterVar2) {
          // Two-variable forms: index and item of a list, key and value of a map.
          scope.set(c.iterVar, range.shape.kind === "map" ? item : SCALAR);
          scope.set(c.iterVar2, range.shape.elem ?? DYN);
        } else scope.set(c.iterVar, item);
        scope.set(c.accuVar, accu);
        const cond = estimate(c.loopCondition);
        const step = estimate(c.loopStep);
        for (const v of bound) scope.delete(v);
        scope.set(c.accuVar, accu);
        const result = estimate(c.result);
        for (const [v, shape] of saved) {
          if (shape) scope.set(v, shape);
          else scope.delete(v);
        }
        const body = cond.cost + step.cost;
        iterationCost.set(e.id, Math.max(1, body - cond.loops - step.loops));
        return {
          cost: range.cost + init.cost + result.cost + n * body,
          shape: result.shape,
          // Every iteration is loop work, and so is what comprehensions around it nest.
          loops: n * body + range.loops + init.loops + result.loops,
        };
      }
      case "callExpr": {
        const call = kind.value;
        const target = call.target ? estimate(call.target) : undefined;
        const args = call.args.map(estimate);
        const parts = [...(target ? [target] : []), ...args];
        const loops = sum(parts.map((x) => x.loops));
        const operands = sum(parts.map((x) => x.cost));
        const self = callCost(call.function, target?.shape, args);
        return { cost: operands + self.cost, shape: self.shape, loops };
      }
      default:
        return { cost: 0, shape: DYN, loops: 0 };
    }
  };
  return { cost: estimate(expr).cost, iterationCost };
}

function member(shape: Shape, field: string): Shape {
  if (shape.kind === "object") return shape.fields?.[field] ?? DYN;
  if (shape.kind === "map") return shape.elem ?? DYN;
  return DYN;
}

const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);

/** The cost of one call, its operands apart, and the shape of its result (after cel-go's stdlib). */
function callCost(
  fn: string,
  target: Shape | undefined,
  args: readonly Estimate[],
): { cost: number; shape: Shape } {
  const a = args.map((x) => x.shape);
  const self = target ?? a[0];
  const size = self?.maxSize ?? 1;
  switch (fn) {
    case "_&&_":
    case "_||_":
    case "!_":
    case "@not_strictly_false":
    case "__not_strictly_false__":
      return { cost: 0, shape: SCALAR };
    case "_?_:_":
      // Only one branch runs: the condition plus the dearer branch (operands counted both; take back the cheaper).
      return {
        cost: -Math.min(args[1]?.cost ?? 0, args[2]?.cost ?? 0),
        shape: join(a[1] ?? SCALAR, a[2] ?? SCALAR),
      };
    case "_[_]":
    case "_[?_]":
      return { cost: CALL_COST, shape: self ? indexed(self) : DYN };
    case "_?._":
      return { cost: CALL_COST, shape: self ? indexed(self) : DYN };
    case "_==_":
    case "_!=_": {
      const m = Math.min(a[0]?.maxSize ?? 1, a[1]?.maxSize ?? 1);
      const deep = a[0]?.kind === "list" || a[0]?.kind === "map" || a[0]?.kind === "dyn";
      return { cost: CALL_COST + (deep ? m : a[0]?.kind === "string" ? traverse(m) : 0), shape: SCALAR };
    }
    case "_<_":
    case "_<=_":
    case "_>_":
    case "_>=_": {
      const m = Math.min(a[0]?.maxSize ?? 1, a[1]?.maxSize ?? 1);
      return { cost: CALL_COST + (a[0]?.kind === "scalar" ? 0 : traverse(m)), shape: SCALAR };
    }
    case "_+_": {
      const total = (a[0]?.maxSize ?? 1) + (a[1]?.maxSize ?? 1);
      if (a[0]?.kind === "string" || a[0]?.kind === "list" || a[0]?.kind === "dyn") {
        return {
          cost: CALL_COST + traverse(total),
          shape: { kind: a[0].kind, maxSize: total, elem: a[0].elem ?? DYN },
        };
      }
      return { cost: CALL_COST, shape: SCALAR };
    }
    case "@in": {
      const container = a[1];
      const linear = container?.kind === "list" || container?.kind === "dyn";
      return { cost: CALL_COST + (linear ? container.maxSize : 0), shape: SCALAR };
    }
    case "contains":
    case "startsWith":
    case "endsWith":
    case "indexOf":
    case "lastIndexOf":
      return { cost: CALL_COST + traverse(size) + traverse(a[0]?.maxSize ?? 1), shape: SCALAR };
    case "matches": {
      const pattern = fn === "matches" && target ? a[0] : a[1];
      const str = target ? target : a[0];
      return {
        cost:
          CALL_COST +
          traverse(str?.maxSize ?? 1) *
            Math.max(1, Math.ceil(REGEX_STRING_LENGTH_COST_FACTOR * (pattern?.maxSize ?? 1))),
        shape: SCALAR,
      };
    }
    case "lowerAscii":
    case "upperAscii":
    case "trim":
    case "substring":
    case "charAt":
    case "string":
      return { cost: CALL_COST + traverse(size), shape: { kind: "string", maxSize: size } };
    case "strings.quote":
      return { cost: CALL_COST + traverse(size), shape: { kind: "string", maxSize: 2 * size + 2 } };
    case "replace": {
      // Replacing '' inserts the replacement between every two characters.
      const by = a[1]?.maxSize ?? 1;
      return {
        cost: CALL_COST + traverse(size) * Math.max(1, by),
        shape: { kind: "string", maxSize: size + (size + 1) * by },
      };
    }
    case "split":
      return {
        cost: CALL_COST + traverse(size),
        shape: { kind: "list", maxSize: size + 1, elem: { kind: "string", maxSize: size } },
      };
    case "join": {
      const items = self?.maxSize ?? 1;
      const itemSize = self?.elem?.maxSize ?? DYN.maxSize;
      const total = items * itemSize + Math.max(0, items - 1) * (a[0]?.maxSize ?? 0);
      return { cost: CALL_COST + traverse(total), shape: { kind: "string", maxSize: total } };
    }
    case "format": {
      const list = a[0];
      const total = size + (list?.maxSize ?? 1) * (list?.elem?.maxSize ?? DYN.maxSize);
      return { cost: CALL_COST + traverse(total), shape: { kind: "string", maxSize: total } };
    }
    case "size":
      return { cost: CALL_COST, shape: SCALAR };
    default:
      return { cost: CALL_COST, shape: SCALAR };
  }
}

function indexed(shape: Shape): Shape {
  if (shape.kind === "list" || shape.kind === "map") return shape.elem ?? DYN;
  if (shape.kind === "object") {
    const fields = Object.values(shape.fields ?? {});
    return fields.reduce(join, fields[0] ?? DYN);
  }
  return DYN;
}

/** Counts cost while a rule runs and stops it, by throwing, when the limit is passed. */
export class CostMeter {
  spent = 0;
  exceeded = false;
  readonly limit: number;
  constructor(limit: number) {
    this.limit = limit;
  }
  add(cost: number): void {
    this.spent += cost;
    if (this.spent > this.limit) {
      this.exceeded = true;
      throw new Error(`the rule's cost passed the limit of ${this.limit} while it ran`);
    }
  }
}
