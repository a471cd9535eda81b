import { type CelInput, celEnv, isCelError, parse, plan } from "@bufbuild/cel";

/**
 * CEL admission rules, evaluated as Kubernetes' ValidatingAdmissionPolicy evaluates them: the
 * variables are `object` (the SyncJob) and `namespaceObject` (its Namespace; `namespace` itself is a
 * reserved word in CEL), whole numbers are CEL ints, and a rule holds when it returns true.
 */
export type CompiledRule =
  | { ok: true; evaluate: (bindings: RuleBindings) => RuleOutcome }
  | { ok: false; position: string | undefined; reason: string };

export interface RuleBindings {
  object: unknown;
  namespaceObject: unknown;
}

export type RuleOutcome = { holds: boolean } | { error: string };

const env = celEnv({});

export function compileRule(expression: string): CompiledRule {
  let program: ReturnType<typeof plan>;
  try {
    program = plan(env, parse(expression));
  } catch (err) {
    const text = err instanceof Error ? err.message : String(err);
    const m = /^<input>:(\d+):(\d+): (.*)$/s.exec(text);
    return m
      ? { ok: false, position: `${m[1]}:${m[2]}`, reason: m[3]! }
      : { ok: false, position: undefined, reason: text };
  }
  return {
    ok: true,
    evaluate: (bindings) => {
      const result = program({
        object: toCel(bindings.object),
        namespaceObject: toCel(bindings.namespaceObject),
      } as never);
      if (isCelError(result)) return { error: result.message };
      if (typeof result !== "boolean") return { error: `the rule returned ${typeof result}, not a bool` };
      return { holds: result };
    },
  };
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
