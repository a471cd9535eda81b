import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/** What starting one component yields: how to reach it, and what to print about it. */
export interface StartedService<E> {
  endpoint: E;
  /** "<product> <version> at <address>" */
  description: string;
  /** Seconds from asking for the component to its answering requests (including obtaining it). */
  seconds: number;
  /** Log files to point at when a test fails. */
  logs: string[];
  /** Names of the local processes this provider started (for restarts in tests). */
  processes?: string[];
  /** Waits until a restarted process answers again. */
  ready?: (name: string) => Promise<void>;
  /** Stops what this provider started beyond the shared process group (e.g. containers). */
  stop?: () => Promise<void>;
}

const here = dirname(fileURLToPath(import.meta.url));

/** Path of a script under test/env/obtain. */
export function obtainScript(name: string): string {
  return join(here, "..", "obtain", name);
}
