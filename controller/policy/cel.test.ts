import { describe, expect, it } from "vitest";
import { compileRule, type RuleOutcome } from "./cel.ts";

const job = {
  metadata: { name: "orders", labels: { team: "payments" } },
  spec: {
    mode: "batch",
    priority: 5,
    schedule: "0 2 * * *",
    target: { sql: { table: "analytics.orders", keyColumns: ["order_id"] } },
  },
};
const namespaceObject = { metadata: { name: "payments", labels: { env: "prod" } } };

function run(expression: string): RuleOutcome {
  const compiled = compileRule(expression);
  if (!compiled.ok) throw new Error(`${expression}: ${compiled.position} ${compiled.reason}`);
  return compiled.evaluate({ object: job, namespaceObject });
}

function failure(expression: string): { position: string | undefined; reason: string } {
  const compiled = compileRule(expression);
  if (compiled.ok) throw new Error(`${expression} compiled`);
  return { position: compiled.position, reason: compiled.reason };
}

describe("compileRule", () => {
  it("evaluates over object and namespaceObject, with whole numbers as CEL ints", () => {
    expect(run("object.spec.priority == 5 && object.spec.priority + 1 == 6")).toEqual({ holds: true });
    expect(run("namespaceObject.metadata.labels['env'] == 'prod'")).toEqual({ holds: true });
    expect(run("'team' in object.metadata.labels && object.metadata.labels.team == 'crm'")).toEqual({
      holds: false,
    });
    expect(run("object.spec.target.sql.keyColumns.all(c, c.endsWith('_id'))")).toEqual({ holds: true });
  });

  it("has the strings extension that Kubernetes also provides", () => {
    expect(run("object.spec.schedule.split(' ')[1] == '2'")).toEqual({ holds: true });
    expect(run("object.spec.target.sql.table.upperAscii() == 'ANALYTICS.ORDERS'")).toEqual({ holds: true });
  });

  it("reports evaluation errors and non-bool results as errors, not as verdicts", () => {
    expect(run("object.spec.ttlSecondsAfterFinished > 0")).toHaveProperty("error");
    expect(run("object.spec.priority")).toEqual({ error: "the rule returned bigint, not a bool" });
  });

  it("rejects a syntax error with its line:column", () => {
    expect(failure("object.spec.mode ==")).toMatchObject({ position: "1:18" });
    expect(failure("object.spec.mode == 'batch' &&\n  object.spec.priority >")).toMatchObject({
      position: "2:24",
    });
  });

  it("rejects a reference to an undeclared variable with its position", () => {
    expect(failure("has(object.spec.schedule) && objct.spec.mode == 'batch'")).toEqual({
      position: "1:30",
      reason: "undeclared reference to 'objct' (rules see object and namespaceObject)",
    });
    // `namespace` is what the design first called the namespace; CEL reserves the word.
    expect(failure("namespace.metadata.name == 'x'").position).toBe("1:1");
    expect(failure("object.spec.target.sql.keyColumns.all(c, k.size() > 0)").reason).toContain("'k'");
  });

  it("rejects an unknown function, and a constant pattern that is not a regular expression", () => {
    expect(failure("object.spec.mode.lowercase() == 'batch'")).toEqual({
      position: "1:17",
      reason: "unknown function 'lowercase'",
    });
    expect(failure("math.greatest(1, 2) == 2").reason).toBe("unknown function 'math.greatest'");
    expect(failure("object.metadata.name.matches('(')").reason).toContain("missing closing )");
  });

  it("accepts comprehension variables inside their macro only", () => {
    expect(compileRule("object.spec.target.sql.keyColumns.exists(c, c == 'order_id')").ok).toBe(true);
    expect(compileRule("object.spec.target.sql.keyColumns.exists(c, true) && c == 'x'").ok).toBe(false);
  });
});
