import { describe, expect, it } from "vitest";
import { DEFAULT_FILE_ROOTS, fileGrantRefusal, fileRoots } from "./file-grant.ts";

describe("fileRoots", () => {
  it("reads SYNCGOV_FILE_ROOTS, ':'-separated, trailing slashes dropped; /data when unset or empty", () => {
    expect(fileRoots({})).toEqual(DEFAULT_FILE_ROOTS);
    expect(fileRoots({ SYNCGOV_FILE_ROOTS: " " })).toEqual(["/data"]);
    expect(fileRoots({ SYNCGOV_FILE_ROOTS: "/srv/a/:/mnt/b" })).toEqual(["/srv/a", "/mnt/b"]);
    expect(() => fileRoots({ SYNCGOV_FILE_ROOTS: "/srv:relative" })).toThrow(
      "SYNCGOV_FILE_ROOTS: relative is not an absolute path",
    );
  });
});

describe("fileGrantRefusal", () => {
  const roots = ["/data", "/mnt/exports"];
  it.each([
    ["/data/ledger.dat", undefined],
    ["/mnt/exports/2024/ledger.dat", undefined],
    ["/data", /outside the storage/],
    ["/database/ledger.dat", /outside the storage/],
    ["/var/run/secrets/kubernetes.io/serviceaccount/token", /outside the storage/],
    ["/proc/self/environ", /outside the storage/],
    ["/data/../etc/passwd", /'\.' or '\.\.' segments/],
    ["/data/./ledger.dat", /'\.' or '\.\.' segments/],
    ["/data//ledger.dat", /empty segments/],
    ["/data/exports/", /empty segments/],
    ["data/ledger.dat", /absolute path/],
  ])("%s", (path, refusal) => {
    const got = fileGrantRefusal(path, roots);
    if (refusal === undefined) expect(got).toBeUndefined();
    else expect(got).toMatch(refusal);
  });

  it("refuses every path when no storage is granted", () => {
    expect(fileGrantRefusal("/data/ledger.dat", [])).toMatch(/file sources are not enabled here/);
  });
});
