import { describe, expect, it } from "vitest";
import { SyncJobSpec } from "../api/syncjob.ts";
import type { TableColumnInfo, TableInfo } from "../connectors/postgres/catalog.ts";
import { SourceSchemaError } from "../connectors/postgres/source.ts";
import { compileMasking, MaskingRuleError } from "../masking/masking.ts";
import { planSync, sourceColumnsOf, withTargetLimits } from "./plan.ts";

function table(columns: [string, string, boolean?, number?][]): TableInfo {
  const map = new Map<string, TableColumnInfo>();
  for (const [name, pgType, notNull, typmod] of columns) {
    map.set(name, {
      name,
      pgType,
      notNull: notNull ?? false,
      hasDefault: false,
      identity: false,
      identityAlways: false,
      generated: false,
      typmod: typmod ?? -1,
    });
  }
  return { kind: "r", columns: map, uniqueKeys: [["id"]] };
}

const spec = SyncJobSpec.parse({
  source: { sql: { connectionSecretRef: { name: "src" }, table: "crm.customers" } },
  target: {
    sql: {
      connectionSecretRef: { name: "dst" },
      table: "dw.customers",
      keyColumns: ["id"],
      versionColumn: "v",
    },
  },
  mode: "batch",
  schedule: "0 2 * * *",
});

describe("sourceColumnsOf", () => {
  it("maps catalog types to the row model in table order, keys not nullable", () => {
    const info = table([
      ["id", "int8", true],
      ["email", "varchar"],
      ["n", "int4"],
      ["amount", "numeric"],
      ["at", "timestamptz"],
      ["day", "date"],
      ["doc", "jsonb"],
      ["ok", "bool", true],
    ]);
    expect(sourceColumnsOf("t", info, ["id"])).toEqual([
      { name: "id", type: "bigint", nullable: false },
      { name: "email", type: "text", nullable: true },
      { name: "n", type: "integer", nullable: true },
      { name: "amount", type: "numeric", nullable: true },
      { name: "at", type: "timestamp", nullable: true },
      { name: "day", type: "date", nullable: true },
      { name: "doc", type: "json", nullable: true },
      { name: "ok", type: "boolean", nullable: false },
    ]);
  });

  it("names every column the row model cannot hold exactly, and a missing key", () => {
    const info = table([
      ["id", "uuid", true],
      ["ratio", "float8"],
    ]);
    let error: unknown;
    try {
      sourceColumnsOf("crm.customers", info, ["id", "region"]);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(SourceSchemaError);
    const problems = (error as SourceSchemaError).problems;
    expect(problems).toHaveLength(3);
    expect(problems[0]).toMatch(/^column id is uuid, which syncgov cannot copy exactly/);
    expect(problems[1]).toMatch(/^column ratio is float8/);
    expect(problems[2]).toBe("key column region is not a column of the table");
  });
});

describe("planSync", () => {
  const columns = sourceColumnsOf(
    "crm.customers",
    table([
      ["id", "int8", true],
      ["email", "text"],
      ["v", "int8"],
    ]),
    ["id"],
  );

  it("makes masked columns text in the target and keeps them out of SQL comparisons", () => {
    const plan = planSync("source", columns, spec, compileMasking([{ column: "email", transform: "hash" }]));
    expect(plan.sourceSchema.columns.map((c) => [c.name, c.type])).toEqual([
      ["id", "bigint"],
      ["email", "text"],
      ["v", "bigint"],
    ]);
    expect(plan.targetSchema.keyColumns).toEqual(["id"]);
    expect(plan.targetSchema.columns.find((c) => c.name === "v")?.nullable).toBe(false);
    expect(plan.comparableColumns.map((c) => c.name)).toEqual(["id", "v"]);

    const hashedKey = planSync(
      "source",
      columns,
      spec,
      compileMasking([{ column: "id", transform: "hash" }]),
    );
    expect(hashedKey.targetSchema.columns[0]).toEqual({ name: "id", type: "text", nullable: false });
    expect(hashedKey.sourceSchema.columns[0]).toEqual({ name: "id", type: "bigint", nullable: false });
  });

  it("refuses a masking rule for a column the source lacks, so a typo cannot leave data unmasked", () => {
    expect(() =>
      planSync(
        "source table crm.customers",
        columns,
        spec,
        compileMasking([{ column: "e_mail", transform: "redact" }]),
      ),
    ).toThrow(
      new MaskingRuleError(
        "masking rule for column e_mail: source table crm.customers has no such column, so nothing would be masked",
      ),
    );
  });

  it("refuses target keys or a version column that the source does not have", () => {
    const noVersion = columns.filter((c) => c.name !== "v");
    expect(() => planSync("source", noVersion, spec, compileMasking([]))).toThrow(
      /column v, which the target spec names, is not a column of the source/,
    );
  });
});

describe("withTargetLimits", () => {
  it("bounds each unmasked column by its target type: smallint, varchar(n), numeric(p,s); masked ones not", () => {
    const target = table([
      ["id", "int8", true],
      ["qty", "int2"],
      ["code", "varchar", false, 8 + 4],
      ["amount", "numeric", false, ((12 << 16) | 2) + 4],
      ["note", "varchar", false, 4 + 4],
      ["free", "numeric"],
      ["v", "int8", true],
    ]);
    const masker = compileMasking([{ column: "note", transform: "redact" }], {});
    const plan = planSync("t", sourceColumnsOf("t", target, ["id"]), spec, masker);
    const schema = withTargetLimits(plan.targetSchema, target, masker.maskedColumns);
    const limits = Object.fromEntries(schema.columns.map((c) => [c.name, c.limits]));
    expect(limits).toEqual({
      id: undefined,
      qty: { sqlType: "smallint", integerRange: [-32768, 32767] },
      code: { sqlType: "character varying(8)", maxLength: 8 },
      amount: { sqlType: "numeric(12,2)", numeric: { precision: 12, scale: 2 } },
      note: undefined,
      free: undefined,
      v: undefined,
    });
    expect(schema.columns.find((c) => c.name === "v")?.nullable).toBe(false);
  });
});
