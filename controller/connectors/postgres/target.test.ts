import { describe, expect, it } from "vitest";
import { arrayLiteral, deleteSql, upsertSql } from "./target.ts";

const columns = [
  { name: "order_id", parameterType: "int8" },
  { name: "line", parameterType: "int4" },
  { name: "status", parameterType: "text" },
  { name: "version", parameterType: "int8" },
];

describe("upsertSql", () => {
  it("quotes every identifier, passes values as one array per column and collapses repeated keys", () => {
    expect(upsertSql("sales.order_lines", columns, ["order_id", "line"])).toBe(
      `INSERT INTO "sales"."order_lines" AS existing ("order_id", "line", "status", "version")
SELECT DISTINCT ON (incoming."order_id", incoming."line") incoming."order_id", incoming."line", incoming."status", incoming."version"
  FROM unnest($1::int8[], $2::int4[], $3::text[], $4::int8[]) WITH ORDINALITY AS incoming("order_id", "line", "status", "version", "syncgov ordinal")
 ORDER BY incoming."order_id", incoming."line", incoming."syncgov ordinal" DESC
ON CONFLICT ("order_id", "line") DO UPDATE SET "status" = EXCLUDED."status", "version" = EXCLUDED."version"`,
    );
  });

  it("guards on the version column: highest version wins within a batch and against the table", () => {
    const sql = upsertSql("order_lines", columns, ["order_id", "line"], "version");
    expect(sql).toContain(
      `ORDER BY incoming."order_id", incoming."line", incoming."version" DESC NULLS LAST, incoming."syncgov ordinal" DESC`,
    );
    expect(sql).toMatch(/WHERE existing\."version" IS NULL OR existing\."version" <= EXCLUDED\."version"$/);
  });

  it("does nothing on conflict when every column is a key", () => {
    expect(upsertSql("t", columns.slice(0, 2), ["order_id", "line"])).toMatch(
      /ON CONFLICT \("order_id", "line"\) DO NOTHING$/,
    );
  });

  it("refuses identifiers that are not SQL identifiers", () => {
    expect(() => upsertSql('t"; drop table x; --', columns, ["order_id"])).toThrow(
      /invalid SQL table reference/,
    );
    expect(() => upsertSql("t", [{ name: "a b", parameterType: "text" }], ["a b"])).toThrow(
      /invalid SQL identifier/,
    );
  });
});

describe("deleteSql", () => {
  it("matches keys from arrays and guards on the version when given", () => {
    expect(deleteSql("t", columns.slice(0, 2), columns[3])).toBe(
      `DELETE FROM "t" AS existing
 USING unnest($1::int8[], $2::int4[], $3::int8[]) AS incoming("order_id", "line", "version")
 WHERE existing."order_id" = incoming."order_id" AND existing."line" = incoming."line" AND (incoming."version" IS NULL OR existing."version" <= incoming."version")`,
    );
  });
});

describe("arrayLiteral", () => {
  it("quotes every string, escapes quotes and backslashes, and leaves numbers, booleans and NULL bare", () => {
    const rows = [
      { v: "12" },
      { v: -3 },
      { v: "2024-01-31T12:00:00.000001Z" },
      { v: true },
      { v: null },
      { v: "" },
      { v: "NULL" },
      { v: "a,b" },
      { v: 'say "hi"' },
      { v: "back\\slash" },
      { v: " x" },
      { v: "{y}" },
    ];
    expect(arrayLiteral(rows, "v")).toBe(
      '{"12",-3,"2024-01-31T12:00:00.000001Z",t,NULL,"","NULL","a,b","say \\"hi\\"","back\\\\slash"," x","{y}"}',
    );
    expect(arrayLiteral([], "v")).toBe("{}");
    expect(arrayLiteral([{}], "v")).toBe("{NULL}");
  });
});
