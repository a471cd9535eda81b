import { eventually } from "./controller.ts";

/**
 * Polls until assertion stops throwing, through eventually() (its interval, and its error naming
 * `what` and the last failure after timeoutMs): for checks written as expect() calls rather than as
 * a value to wait for.
 */
export async function eventuallyPasses(
  what: string,
  assertion: () => void | Promise<void>,
  timeoutMs?: number,
): Promise<void> {
  await eventually(
    what,
    async () => {
      await assertion();
      return true;
    },
    timeoutMs,
  );
}
