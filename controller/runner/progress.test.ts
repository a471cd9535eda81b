import { describe, expect, it } from "vitest";
import { ProgressMeter, type RunCounts } from "./progress.ts";
import { MAX_LISTED_REJECTIONS, RejectionLog } from "./rejections.ts";

describe("ProgressMeter", () => {
  it("reports at most once per interval, and flush reports what is left", () => {
    let now = 0;
    const reports: RunCounts[] = [];
    const meter = new ProgressMeter((c) => reports.push(c), { intervalMs: 1000, now: () => now });
    meter.add({ rowsRead: 10 }); // first report goes out at once
    now = 400;
    meter.add({ rowsRead: 10, rowsWritten: 5 });
    now = 999;
    meter.add({ rowsRejected: 1 });
    expect(reports).toEqual([{ rowsRead: 10, rowsWritten: 0, rowsRejected: 0 }]);
    now = 1000;
    meter.add({ rowsWritten: 15 });
    expect(reports.at(-1)).toEqual({ rowsRead: 20, rowsWritten: 20, rowsRejected: 1 });
    meter.flush(); // nothing new since the last report
    expect(reports).toHaveLength(2);
    now = 1100;
    meter.add({ rowsRead: 1 });
    meter.flush();
    expect(reports).toHaveLength(3);
    expect(meter.counts).toEqual({ rowsRead: 21, rowsWritten: 20, rowsRejected: 1 });
  });

  it("keeps counting when the listener throws", () => {
    const meter = new ProgressMeter(() => {
      throw new Error("status write failed");
    });
    meter.add({ rowsRead: 3 });
    meter.add({ rowsRead: 4 });
    expect(meter.counts.rowsRead).toBe(7);
  });
});

describe("RejectionLog", () => {
  it("counts every rejection but lists a bounded number", () => {
    const log = new RejectionLog();
    for (let i = 1; i <= MAX_LISTED_REJECTIONS + 50; i++) {
      log.add({ lineNumber: i, reason: "TooShort", message: "line is short" });
    }
    expect(log.count).toBe(MAX_LISTED_REJECTIONS + 50);
    expect(log.listed).toHaveLength(MAX_LISTED_REJECTIONS);
    expect(log.summary(2)).toBe(
      `${MAX_LISTED_REJECTIONS + 50} rejected: line 1 (TooShort); line 2 (TooShort), and ${MAX_LISTED_REJECTIONS + 48} more`,
    );
  });

  it("names a row by its key and the column at fault", () => {
    const log = new RejectionLog();
    log.add({ key: { id: "7", line: 2 }, column: "at", reason: "BadTimestamp", message: "infinite" });
    expect(log.summary()).toBe("1 rejected: row id=7,line=2 (at: BadTimestamp)");
    expect(new RejectionLog().summary()).toBe("");
  });
});
