/**
 * Keeping Secret values out of everything a run emits. The runner never puts a connection URL in a
 * message on purpose; this is the second line of defence for text it does not write itself (driver
 * errors, stack traces): every message that leaves the runner — status, events, logs, lineage — goes
 * through scrubSecrets with the run's Secret values.
 */

export const REDACTED_SECRET = "[redacted]";

/**
 * The forms a Secret value can take inside other text: the value itself and its percent-encoded
 * form; for a URL with credentials, also the password (decoded and as written in the URL) and the
 * userinfo. A driver may print any of them.
 */
export function secretFragments(secret: string): string[] {
  const fragments = new Set<string>();
  const add = (text: string | undefined) => {
    if (text) fragments.add(text);
  };
  add(secret);
  add(encodeURIComponent(secret));
  const userinfo = /^[A-Za-z][A-Za-z0-9+.-]*:\/\/([^@/?#]*)@/.exec(secret)?.[1];
  if (userinfo !== undefined) {
    add(userinfo);
    const colon = userinfo.indexOf(":");
    if (colon >= 0) {
      const password = userinfo.slice(colon + 1);
      add(password);
      try {
        add(decodeURIComponent(password));
      } catch {
        // Not valid percent-encoding: the raw form is already covered.
      }
    }
  }
  return [...fragments];
}

/** Returns a function that replaces every form of every secret with "[redacted]". */
export function secretScrubber(secrets: readonly string[]): (text: string) => string {
  // Longest first, so that a password inside a URL does not leave the rest of the URL behind.
  const fragments = [...new Set(secrets.flatMap(secretFragments))].sort((a, b) => b.length - a.length);
  if (fragments.length === 0) return (text) => text;
  return (text) => {
    let out = text;
    for (const fragment of fragments) out = out.replaceAll(fragment, REDACTED_SECRET);
    return out;
  };
}

/** `text` with every form of every secret replaced by "[redacted]". */
export function scrubSecrets(text: string, secrets: readonly string[]): string {
  return secretScrubber(secrets)(text);
}

/** The message of anything thrown, scrubbed; includes the causes a driver may chain. */
export function scrubbedErrorMessage(error: unknown, scrub: (text: string) => string): string {
  const parts: string[] = [];
  let current: unknown = error;
  for (let depth = 0; current !== undefined && current !== null && depth < 4; depth++) {
    const message = current instanceof Error ? current.message : String(current);
    if (message && !parts.includes(message)) parts.push(message);
    current = current instanceof Error ? current.cause : undefined;
  }
  return scrub(parts.join(": ") || "unknown error");
}
