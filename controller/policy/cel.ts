import { type CelInput, CelScalar, celEnv, celFunc, isCelError, parse, plan } from "@bufbuild/cel";
import { strings } from "@bufbuild/cel/ext";
import { CostMeter, estimateCost, PER_RULE_COST_LIMIT } from "./cel-cost.ts";

/**
 * CEL admission rules, evaluated as Kubernetes' ValidatingAdmissionPolicy evaluates them: the
 * variables are `object` (the SyncJob) and `namespaceObject` (its Namespace; `namespace` itself is a
 * reserved word in CEL), whole numbers are CEL ints, and a rule holds when it returns true.
 * The environment has the standard library plus the strings extension (split, lowerAscii, trim, ...),
 * which Kubernetes also provides, so a rule that runs here runs in the API server too.
 *
 * As in Kubernetes, a rule has a cost budget (cel-cost.ts): a rule whose estimated cost over the
 * largest inputs the schemas allow exceeds it does not compile, and a running rule is stopped with
 * an error when its metered cost passes it, so no rule can hold the controller's event loop.
 */
export type CompiledRule =
  | { ok: true; estimatedCost: number; evaluate: (bindings: RuleBindings) => RuleOutcome }
  | { ok: false; position: string | undefined; reason: string };

export interface CostLimits {
  /** The largest estimated cost a rule may have to compile; default PER_RULE_COST_LIMIT. */
  estimated?: number;
  /** The cost after which a running rule is stopped; default PER_RULE_COST_LIMIT. */
  runtime?: number;
}

export interface RuleBindings {
  object: unknown;
  namespaceObject: unknown;
}

export type RuleOutcome = { holds: boolean } | { error: string };

/** The variables a rule may reference. */
export const RULE_VARIABLES: readonly string[] = ["object", "namespaceObject"];

const env = celEnv({ funcs: strings });

/**
 * The meter of the rule being evaluated (evaluation is synchronous, so one at a time). The planned
 * program calls COST_FUNCTION in each comprehension's loop condition, before each iteration.
 */
let activeMeter: CostMeter | undefined;
/** Not a name a rule can write ('@' is not an identifier character), so only instrumentation calls it. */
const COST_FUNCTION = "@syncgov.cost";
const meteredEnv = celEnv({
  funcs: [
    ...strings,
    celFunc(COST_FUNCTION, [CelScalar.DYN, CelScalar.INT], CelScalar.DYN, (value, cost) => {
      activeMeter?.add(Number(cost));
      return value;
    }),
  ],
});

type ParsedRule = ReturnType<typeof parse>;
type Expr = ParsedRule["expr"];

export function compileRule(expression: string, limits: CostLimits = {}): CompiledRule {
  let parsed: ParsedRule;
  try {
    parsed = parse(expression);
    plan(env, parsed);
  } catch (err) {
    const text = err instanceof Error ? err.message : String(err);
    const m = /^<input>:(\d+):(\d+): (.*)$/s.exec(text);
    return m
      ? { ok: false, position: `${m[1]}:${m[2]}`, reason: m[3]! }
      : { ok: false, position: undefined, reason: text };
  }
  const unresolved = firstUnresolvedReference(parsed.expr, new Set(RULE_VARIABLES));
  if (unresolved) {
    const offset = parsed.sourceInfo?.positions[String(unresolved.id)];
    return {
      ok: false,
      position: offset === undefined ? undefined : lineColumn(expression, offset),
      reason: unresolved.reason,
    };
  }
  const estimate = estimateCost(parsed.expr);
  const estimatedLimit = limits.estimated ?? PER_RULE_COST_LIMIT;
  if (estimate.cost > estimatedLimit) {
    return {
      ok: false,
      position: undefined,
      reason: `estimated cost ${costText(estimate.cost)} exceeds the budget of ${estimatedLimit} per rule (over the largest inputs the schemas allow; a comprehension costs its list's maxItems times its body, so nested ones multiply)`,
    };
  }
  meterComprehensions(parsed.expr, estimate.iterationCost);
  const program = plan(meteredEnv, parsed);
  const runtimeLimit = limits.runtime ?? PER_RULE_COST_LIMIT;
  return {
    ok: true,
    estimatedCost: estimate.cost,
    evaluate: (bindings) => {
      const meter = new CostMeter(runtimeLimit);
      let result: ReturnType<typeof program>;
      activeMeter = meter;
      try {
        result = program({
          object: toCel(bindings.object),
          namespaceObject: toCel(bindings.namespaceObject),
        } as never);
      } catch (err) {
        return { error: err instanceof Error ? err.message : String(err) };
      } finally {
        activeMeter = undefined;
      }
      // The meter's error may be absorbed by && or ||; the rule was stopped all the same.
      if (meter.exceeded)
        return { error: `cost limit exceeded: stopped after ${meter.spent} of ${runtimeLimit}` };
      if (isCelError(result)) return { error: result.message };
      if (typeof result !== "boolean") return { error: `the rule returned ${typeof result}, not a bool` };
      return { holds: result };
    },
  };
}

function costText(cost: number): string {
  return Number.isFinite(cost) && cost < 1e15 ? String(Math.ceil(cost)) : "beyond 10^15";
}

/**
 * Wraps each comprehension's loop condition in COST_FUNCTION(condition, cost of one iteration):
 * the meter charges every iteration before its body runs, and stops the fold by throwing (the
 * planner turns that into an error, which ends the fold) once the budget is spent.
 */
function meterComprehensions(expr: Expr | undefined, iterationCost: ReadonlyMap<bigint, number>): void {
  if (!expr) return;
  const kind = expr.exprKind;
  switch (kind.case) {
    case "selectExpr":
      meterComprehensions(kind.value.operand, iterationCost);
      return;
    case "callExpr":
      meterComprehensions(kind.value.target, iterationCost);
      for (const arg of kind.value.args) meterComprehensions(arg, iterationCost);
      return;
    case "listExpr":
      for (const element of kind.value.elements) meterComprehensions(element, iterationCost);
      return;
    case "structExpr":
      for (const entry of kind.value.entries) {
        if (entry.keyKind.case === "mapKey") meterComprehensions(entry.keyKind.value, iterationCost);
        meterComprehensions(entry.value, iterationCost);
      }
      return;
    case "comprehensionExpr": {
      const c = kind.value;
      for (const part of [c.iterRange, c.accuInit, c.loopCondition, c.loopStep, c.result])
        meterComprehensions(part, iterationCost);
      const charge = parse(`f(true, ${Math.ceil(iterationCost.get(expr.id) ?? 1)})`).expr!;
      if (charge.exprKind.case !== "callExpr") return;
      charge.exprKind.value.function = COST_FUNCTION;
      if (c.loopCondition) charge.exprKind.value.args[0] = c.loopCondition;
      c.loopCondition = charge;
      return;
    }
    default:
      return;
  }
}

/** JSON → CEL input: whole numbers become ints (bigint), as in Kubernetes' CEL. */
export function toCel(value: unknown): CelInput {
  if (typeof value === "number") return Number.isInteger(value) ? BigInt(value) : value;
  if (Array.isArray(value)) return value.map(toCel);
  if (value !== null && typeof value === "object") {
    return new Map(Object.entries(value as Record<string, unknown>).map(([k, v]) => [k, toCel(v)]));
  }
  return value as CelInput;
}

/** Calls the planner evaluates itself rather than through the function table. */
const PLANNER_OPERATORS = new Set([
  "_[_]",
  "_[?_]",
  "_?._",
  "_?_:_",
  "_&&_",
  "_||_",
  "@not_strictly_false",
  "__not_strictly_false__",
]);

interface Unresolved {
  id: bigint;
  reason: string;
}

/**
 * The library's planner accepts unknown names and fails only when evaluation reaches them (and its
 * type checker does not cover whole expressions yet), so a misspelt variable or function would pass
 * as a rule and then judge every job as violating. This walk finds such names at compile time, as
 * the Kubernetes CEL compiler does.
 */
function firstUnresolvedReference(
  expr: Expr | undefined,
  scope: ReadonlySet<string>,
): Unresolved | undefined {
  if (!expr) return undefined;
  const kind = expr.exprKind;
  switch (kind.case) {
    case "identExpr":
      return scope.has(kind.value.name)
        ? undefined
        : {
            id: expr.id,
            reason: `undeclared reference to '${kind.value.name}' (rules see ${RULE_VARIABLES.join(" and ")})`,
          };
    case "selectExpr":
      return firstUnresolvedReference(kind.value.operand, scope);
    case "callExpr": {
      const call = kind.value;
      const qualified = call.target ? qualifiedName(call.target) : undefined;
      if (qualified !== undefined && !scope.has(qualified.split(".")[0]!)) {
        // `math.greatest(...)`: a namespaced function, not a method on a variable.
        const name = `${qualified}.${call.function}`;
        if (!env.funcs.find(name)) {
          return env.funcs.find(call.function)
            ? firstUnresolvedReference(call.target, scope)
            : { id: expr.id, reason: `unknown function '${name}'` };
        }
      } else {
        if (!PLANNER_OPERATORS.has(call.function) && !env.funcs.find(call.function)) {
          return { id: expr.id, reason: `unknown function '${call.function}'` };
        }
        const inTarget = firstUnresolvedReference(call.target, scope);
        if (inTarget) return inTarget;
        const pattern = call.function === "matches" ? call.args.at(-1)?.exprKind : undefined;
        if (pattern?.case === "constExpr" && pattern.value.constantKind.case === "stringValue") {
          const invalid = regexError(pattern.value.constantKind.value);
          if (invalid) return { id: expr.id, reason: invalid };
        }
      }
      for (const arg of call.args) {
        const inArg = firstUnresolvedReference(arg, scope);
        if (inArg) return inArg;
      }
      return undefined;
    }
    case "listExpr":
      for (const element of kind.value.elements) {
        const inElement = firstUnresolvedReference(element, scope);
        if (inElement) return inElement;
      }
      return undefined;
    case "structExpr":
      for (const entry of kind.value.entries) {
        const inKey =
          entry.keyKind.case === "mapKey" ? firstUnresolvedReference(entry.keyKind.value, scope) : undefined;
        const found = inKey ?? firstUnresolvedReference(entry.value, scope);
        if (found) return found;
      }
      return undefined;
    case "comprehensionExpr": {
      const c = kind.value;
      const loopScope = new Set([...scope, c.iterVar, c.accuVar, ...(c.iterVar2 ? [c.iterVar2] : [])]);
      const resultScope = new Set([...scope, c.accuVar]);
      return (
        firstUnresolvedReference(c.iterRange, scope) ??
        firstUnresolvedReference(c.accuInit, scope) ??
        firstUnresolvedReference(c.loopCondition, loopScope) ??
        firstUnresolvedReference(c.loopStep, loopScope) ??
        firstUnresolvedReference(c.result, resultScope)
      );
    }
    default:
      return undefined;
  }
}

/** The pattern of `matches`, checked with the engine that evaluates it. */
const matchesProbe = plan(env, parse("''.matches(pattern)"));
function regexError(pattern: string): string | undefined {
  const result = matchesProbe({ pattern } as never);
  return isCelError(result) ? result.message : undefined;
}

function qualifiedName(expr: Expr): string | undefined {
  const kind = expr.exprKind;
  if (kind.case === "identExpr") return kind.value.name;
  if (kind.case === "selectExpr" && !kind.value.testOnly && kind.value.operand) {
    const parent = qualifiedName(kind.value.operand);
    return parent === undefined ? undefined : `${parent}.${kind.value.field}`;
  }
  return undefined;
}

/** 1-based line:column of an offset in the expression, as the parser reports its errors. */
function lineColumn(text: string, offset: number): string {
  const before = text.slice(0, offset);
  const line = before.split("\n").length;
  const column = offset - (before.lastIndexOf("\n") + 1) + 1;
  return `${line}:${column}`;
}
