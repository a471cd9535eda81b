import { createReaderToken } from "../env/reader-token.ts";
import { kubeConfig } from "./env.ts";

/** A bearer token for the controller's /metrics and /api/registry (test/env/reader-token.ts); one per process. */
let token: Promise<string> | undefined;

export function readerToken(): Promise<string> {
  token ??= createReaderToken(kubeConfig());
  return token;
}

/** Headers that carry readerToken(). */
export async function readerHeaders(): Promise<Record<string, string>> {
  return { authorization: `Bearer ${await readerToken()}` };
}
