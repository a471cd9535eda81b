import type { TimeWindowSpec } from "../policy/effective.ts";

const DAYS = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"] as const;

/** Local wall-clock minutes since midnight and weekday of `at` in `timeZone`. */
function localClock(at: Date, timeZone: string): { minutes: number; day: (typeof DAYS)[number] } {
  const parts = new Intl.DateTimeFormat("en-US", {
    timeZone,
    hour12: false,
    weekday: "short",
    hour: "2-digit",
    minute: "2-digit",
  }).formatToParts(at);
  const get = (t: string) => parts.find((p) => p.type === t)?.value ?? "0";
  const hour = Number(get("hour")) % 24;
  return { minutes: hour * 60 + Number(get("minute")), day: get("weekday") as (typeof DAYS)[number] };
}

const toMinutes = (hhmm: string) => Number(hhmm.slice(0, 2)) * 60 + Number(hhmm.slice(3, 5));

/** True when `at` falls inside the window. A window whose end is before its start spans midnight; its day is the day it opens. */
export function windowOpen(w: TimeWindowSpec, at: Date): boolean {
  const { minutes, day } = localClock(at, w.timeZone);
  const start = toMinutes(w.start);
  const end = toMinutes(w.end);
  const days = w.days && w.days.length > 0 ? new Set(w.days) : undefined;
  if (start === end) return days ? days.has(day) : true;
  if (start < end) return minutes >= start && minutes < end && (!days || days.has(day));
  if (minutes >= start) return !days || days.has(day);
  if (minutes < end) {
    const yesterday = DAYS[(DAYS.indexOf(day) + 6) % 7]!;
    return !days || days.has(yesterday);
  }
  return false;
}

/**
 * Why a batch run may not start at `at`, or undefined when it may: every policy that restricts
 * windows must have one of its windows open.
 */
export function outsideBatchWindows(
  windows: readonly (readonly TimeWindowSpec[])[],
  at: Date,
): string | undefined {
  for (const list of windows) {
    if (!list.some((w) => windowOpen(w, at))) {
      const text = list
        .map((w) => `${w.start}-${w.end} ${w.timeZone}${w.days ? ` (${w.days.join(",")})` : ""}`)
        .join(", ");
      return `outside the batch windows ${text}`;
    }
  }
  return undefined;
}

/** Milliseconds until the next minute boundary: windows are judged to the minute. */
export function untilNextMinute(at: Date): number {
  return 60_000 - (at.getTime() % 60_000) + 50;
}
