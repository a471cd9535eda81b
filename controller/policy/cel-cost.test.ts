import { parse } from "@bufbuild/cel";
import { describe, expect, it } from "vitest";
import { compileRule } from "./cel.ts";
import { estimateCost, PER_RULE_COST_LIMIT, type Shape } from "./cel-cost.ts";

const cost = (expression: string, vars?: Record<string, Shape>) =>
  estimateCost(parse(expression).expr, vars).cost;

/** `object.spec.masking.all(x0, object.spec.masking.all(x1, ... x0.column != '' && ...))`, as in the finding. */
function nestedAll(depth: number): string {
  const body = Array.from({ length: depth }, (_, i) => `x${i}.column != ''`).join(" && ");
  let e = body;
  for (let i = depth - 1; i >= 0; i--) e = `object.spec.masking.all(x${i}, ${e})`;
  return e;
}

const maskingJob = (n: number) => ({
  spec: { masking: Array.from({ length: n }, (_, i) => ({ column: `c${i}`, transform: "hash" })) },
});

describe("estimateCost (Kubernetes' CEL cost model)", () => {
  it("charges 1 per identifier and select, 0 per constant, and a list literal its base cost", () => {
    expect(cost("true")).toBe(0);
    expect(cost("object.spec.mode == 'batch'")).toBe(3 + 1 + 1); // ident, 2 selects, ==, 0.1 × 5
    expect(cost("[1, 2, 3].size() > 0")).toBe(10 + 1 + 1);
  });

  it("charges a comprehension its list's maxItems times its body, so nesting multiplies", () => {
    const one = cost("object.spec.masking.all(m, m.column != '')");
    const two = cost(nestedAll(2));
    // masking has maxItems 64 in the CRD
    expect(one).toBeGreaterThan(64);
    expect(two).toBeGreaterThan(64 * one - 64 * 64);
    expect(cost(nestedAll(4))).toBeGreaterThan(64 ** 4);
  });

  it("bounds what the schema leaves unbounded by the largest request (3 MiB)", () => {
    // metadata.labels has no maxProperties: about half a million entries fit in a request.
    expect(cost("object.metadata.labels.all(k, k != '')")).toBeGreaterThan(PER_RULE_COST_LIMIT);
    expect(cost("'team' in object.metadata.labels")).toBeLessThan(10);
  });

  it("follows string sizes through functions that grow them", () => {
    const table = "object.spec.target.sql.table";
    const once = cost(`${table}.replace('', ${table}).size() > 0`);
    const twice = cost(`${table}.replace('', ${table}).replace('', ${table}).size() > 0`);
    expect(twice).toBeGreaterThan(100 * once);
  });

  it("takes the dearer branch of a conditional, not both", () => {
    const dear = "object.spec.masking.all(m, m.column != '')";
    expect(cost(`object.spec.mode == 'batch' ? ${dear} : true`)).toBe(
      cost("object.spec.mode == 'batch'") + cost(dear),
    );
  });

  it("uses the shapes it is given for variables", () => {
    const list = (n: number): Shape => ({ kind: "list", maxSize: n, elem: { kind: "scalar", maxSize: 1 } });
    expect(cost("xs.all(x, x > 0)", { xs: list(10) })).toBeLessThan(
      cost("xs.all(x, x > 0)", { xs: list(1000) }),
    );
  });
});

describe("compileRule with the cost budget", () => {
  it("accepts every shipped kind of rule and two nested comprehensions over masking", () => {
    const c = compileRule(nestedAll(2));
    expect(c.ok).toBe(true);
    if (c.ok) expect(c.estimatedCost).toBeLessThan(PER_RULE_COST_LIMIT);
  });

  it.each([3, 4, 20])("refuses %i nested comprehensions, naming the budget", (depth) => {
    const c = compileRule(nestedAll(depth));
    expect(c).toMatchObject({ ok: false });
    if (!c.ok)
      expect(c.reason).toMatch(/^estimated cost (\d+|beyond 10\^15) exceeds the budget of 1000000 per rule/);
  });

  it("stops a rule at run time when its metered cost passes the budget, quickly", () => {
    // The estimate is lifted to reach the run-time meter, the second line of defence.
    const c = compileRule(nestedAll(4), { estimated: Number.POSITIVE_INFINITY });
    expect(c.ok).toBe(true);
    if (!c.ok) return;
    const started = performance.now();
    const outcome = c.evaluate({ object: maskingJob(50), namespaceObject: {} });
    const ms = performance.now() - started;
    expect(outcome).toMatchObject({
      error: expect.stringMatching(/^cost limit exceeded: stopped after \d+ of 1000000/),
    });
    // 50^4 iterations would take many seconds; the meter stops it within the budget.
    expect(ms).toBeLessThan(3_000);
  });

  it("stops a rule whose meter error a logical operator would absorb", () => {
    // `false || error` would be the error, `true || error` true: the meter decides all the same.
    const c = compileRule(`true || ${nestedAll(3)}`, { estimated: Number.POSITIVE_INFINITY, runtime: 10 });
    expect(c.ok).toBe(true);
    if (c.ok) expect(c.evaluate({ object: maskingJob(5), namespaceObject: {} })).toEqual({ holds: true });
    const d = compileRule(`${nestedAll(3)} || true`, { estimated: Number.POSITIVE_INFINITY, runtime: 10 });
    expect(d.ok).toBe(true);
    if (d.ok)
      expect(d.evaluate({ object: maskingJob(5), namespaceObject: {} })).toMatchObject({
        error: expect.stringMatching(/cost limit exceeded/),
      });
  });

  it("evaluates a rule within the budget as before", () => {
    const c = compileRule(nestedAll(2));
    expect(c.ok && c.evaluate({ object: maskingJob(50), namespaceObject: {} })).toEqual({ holds: true });
    const d = compileRule("object.spec.masking.map(m, m.column).filter(c, c == 'c3').size() == 1");
    expect(d.ok && d.evaluate({ object: maskingJob(5), namespaceObject: {} })).toEqual({ holds: true });
  });
});
