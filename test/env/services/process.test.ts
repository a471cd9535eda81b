import { describe, expect, it } from "vitest";
import { runCommand } from "./process.ts";

describe("runCommand", () => {
  it("resolves with the exit code of a command that exits without reading its input", async () => {
    // `true` never reads: a megabyte of input breaks the pipe, which must not surface as an error.
    const result = await runCommand("true", [], { input: "x".repeat(1 << 20) });
    expect(result.code).toBe(0);
  });

  it("passes input on, and gives a command without input an empty stdin", async () => {
    expect((await runCommand("cat", [], { input: "hello" })).stdout).toBe("hello");
    expect(await runCommand("cat", [])).toEqual({ code: 0, stdout: "", stderr: "" });
    expect((await runCommand("sh", ["-c", "echo oops >&2; exit 3"])).code).toBe(3);
  });
});
