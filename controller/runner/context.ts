/** What the steps of a run (./table-copy.ts, ./file-load.ts) share with ./run.ts. */

import type pg from "pg";
import type { SyncJobSpec } from "../api/syncjob.ts";
import type { RowMasker } from "../masking/masking.ts";
import type { ProgressMeter } from "./progress.ts";
import type { RejectionLog } from "./rejections.ts";
import type { RunInput } from "./run.ts";
import type { RunValidation } from "./validation.ts";

/** Thrown by the steps of a run; its reason goes to the result. */
export class RunFailure extends Error {
  override readonly name = "RunFailure";
  readonly reason: string;

  constructor(reason: string, message: string) {
    super(message);
    this.reason = reason;
  }
}

/** The signal fired: the run stops at the next batch boundary. */
export class RunCancelled extends Error {
  override readonly name = "RunCancelled";
}

/** What the steps of a run share. */
export interface RunContext {
  readonly input: RunInput;
  readonly spec: SyncJobSpec;
  readonly pool: (url: string) => pg.Pool;
  readonly masker: RowMasker;
  readonly progress: ProgressMeter;
  readonly rejections: RejectionLog;
  readonly batchSize: number;
  /** Throws RunCancelled when the signal has fired. */
  checkpoint(): void;
  /** Throws a RunFailure (MaskingRequired) naming every column the policy requires masked and is not. */
  requireMasking(targetColumns: readonly string[]): void;
}

/** What a step hands back on success. */
export interface StepOutcome {
  readonly summary: string;
  readonly cursor?: string | undefined;
  readonly validation?: RunValidation | undefined;
}
