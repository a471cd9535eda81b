/**
 * UUID version 7 (RFC 9562): 48 bits of Unix milliseconds, then random bits, so run ids sort by the
 * time the run started — OpenLineage recommends v7 for runId. Hand-written because node:crypto only
 * makes v4. Within one millisecond the 12-bit rand_a field counts up from a random start (RFC 9562
 * §6.2 method 1), so ids made by one process are strictly increasing while the clock does not step
 * back more than 10 s.
 */

import { randomBytes } from "node:crypto";

/** A larger step back is taken as a deliberate time (a caller's clock), not a wobble to smooth over. */
const MAX_CLOCK_STEP_BACK_MS = 10_000;
let lastMs = -1;
let lastCounter = 0;

export function uuidv7(nowMs: number = Date.now()): string {
  const bytes = randomBytes(16);
  let ms = Math.max(0, Math.floor(nowMs));
  let counter: number;
  if (ms <= lastMs && lastMs - ms <= MAX_CLOCK_STEP_BACK_MS) {
    // Same millisecond (or the clock stepped back a little): keep the last time and count on.
    ms = lastMs;
    counter = lastCounter + 1;
    if (counter > 0xfff) {
      ms = lastMs + 1;
      counter = bytes[6]! & 0x7ff;
    }
  } else {
    // A random start in the lower half leaves room to count within the millisecond.
    counter = ((bytes[6]! << 8) | bytes[7]!) & 0x7ff;
  }
  lastMs = ms;
  lastCounter = counter;
  // 48-bit big-endian milliseconds; split because bit operators work on 32 bits.
  const high = Math.floor(ms / 2 ** 16);
  bytes[0] = (high >>> 24) & 0xff;
  bytes[1] = (high >>> 16) & 0xff;
  bytes[2] = (high >>> 8) & 0xff;
  bytes[3] = high & 0xff;
  bytes[4] = (ms >>> 8) & 0xff;
  bytes[5] = ms & 0xff;
  bytes[6] = 0x70 | (counter >>> 8); // version 7
  bytes[7] = counter & 0xff;
  bytes[8] = 0x80 | (bytes[8]! & 0x3f); // variant 10
  const hex = bytes.toString("hex");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

const UUID_V7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

export function isUuidV7(text: string): boolean {
  return UUID_V7.test(text);
}

/** The Unix milliseconds a v7 UUID carries. */
export function uuidv7Time(uuid: string): number {
  return Number.parseInt(uuid.replaceAll("-", "").slice(0, 12), 16);
}
