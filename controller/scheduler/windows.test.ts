import { describe, expect, it } from "vitest";
import { outsideBatchWindows, windowOpen } from "./windows.ts";

const at = (iso: string) => new Date(iso);

describe("batch windows", () => {
  it("same-day windows", () => {
    const w = { start: "09:00", end: "17:00", timeZone: "UTC" };
    expect(windowOpen(w, at("2026-11-23T09:00:00Z"))).toBe(true);
    expect(windowOpen(w, at("2026-11-23T16:59:00Z"))).toBe(true);
    expect(windowOpen(w, at("2026-11-23T17:00:00Z"))).toBe(false);
  });

  it("windows across midnight belong to the day they open", () => {
    const w = { start: "22:00", end: "06:00", timeZone: "UTC", days: ["Mon"] };
    expect(windowOpen(w, at("2026-11-23T23:00:00Z"))).toBe(true); // Monday night
    expect(windowOpen(w, at("2026-11-24T05:00:00Z"))).toBe(true); // Tuesday early, opened Monday
    expect(windowOpen(w, at("2026-11-24T23:00:00Z"))).toBe(false); // Tuesday night
  });

  it("time zones", () => {
    const w = { start: "01:00", end: "02:00", timeZone: "Europe/Berlin" };
    expect(windowOpen(w, at("2026-11-23T00:30:00Z"))).toBe(true); // 01:30 CET
    expect(windowOpen(w, at("2026-11-23T01:30:00Z"))).toBe(false);
  });

  it("every restricting policy must have a window open", () => {
    const night = [{ start: "22:00", end: "06:00", timeZone: "UTC" }];
    const weekend = [{ start: "00:00", end: "00:00", timeZone: "UTC", days: ["Sat", "Sun"] }];
    expect(outsideBatchWindows([night, weekend], at("2026-11-28T23:00:00Z"))).toBeUndefined(); // Saturday night
    expect(outsideBatchWindows([night, weekend], at("2026-11-23T23:00:00Z"))).toMatch(/Sat,Sun/);
    expect(outsideBatchWindows([night], at("2026-11-23T12:00:00Z"))).toMatch(
      /outside the batch windows 22:00-06:00 UTC/,
    );
  });
});
