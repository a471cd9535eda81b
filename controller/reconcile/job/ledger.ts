import type { Condition } from "../../api/common.ts";
import type { EventRecord } from "../../kube/events.ts";
import { setCondition } from "../../kube/status.ts";

/**
 * The conditions of one status being decided, and the events their changes call for. Events follow
 * Kubernetes' rule (API conventions): one per decision, not one per loop, so an event is produced
 * only when a condition's status or message changes, never when a reconcile repeats what is there.
 */
export class ConditionLedger {
  #conditions: Condition[] | undefined;
  #changed = false;
  readonly events: EventRecord[] = [];
  readonly #now: Date;

  constructor(conditions: readonly Condition[] | undefined, now: Date) {
    this.#conditions = conditions ? [...conditions] : undefined;
    this.#now = now;
  }

  /**
   * Sets the condition; when its status or message changed, `event` (given the previous condition)
   * may return the event that says so.
   */
  set(
    condition: Omit<Condition, "lastTransitionTime">,
    event?: (previous: Condition | undefined) => EventRecord | undefined,
  ): void {
    const previous = this.#conditions?.find((c) => c.type === condition.type);
    const result = setCondition(this.#conditions, condition, this.#now);
    this.#conditions = result.conditions;
    if (!result.changed) return;
    this.#changed = true;
    if (previous?.status !== condition.status || previous?.message !== condition.message) {
      const ev = event?.(previous);
      if (ev) this.events.push(ev);
    }
  }

  get conditions(): Condition[] {
    return this.#conditions ?? [];
  }

  /** Whether any condition differs from the ones the ledger started with. */
  get changed(): boolean {
    return this.#changed;
  }
}
