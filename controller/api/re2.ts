/**
 * Regular expressions written by tenants and policies (masking patterns, policy column patterns) run
 * on RE2 semantics (re2js, a pure-JavaScript port of RE2): matching takes time linear in the input,
 * whatever the pattern, so no pattern can stall the event loop it runs on (a backtracking engine
 * takes exponential time on `(a+)+$` against "aaa…ab"). RE2 leaves out what needs backtracking,
 * backreferences (`\1`, `\k<name>`) and lookaround (`(?=`, `(?!`, `(?<=`, `(?<!`): a pattern that
 * uses them is refused, never run by another engine. The API server's CEL `matches()` is RE2 too, so
 * the controller and an exported ValidatingAdmissionPolicy accept the same patterns.
 */

import { RE2JS } from "re2js";

export type Re2 = RE2JS;

/** The most RE2 instructions a pattern may compile to; see compileRe2. */
export const MAX_PROGRAM_SIZE = 2000;

/** A pattern RE2 cannot run; the message says why, in terms a tenant can act on. */
export class Re2PatternError extends Error {
  override readonly name = "Re2PatternError";
}

/**
 * Compiles `pattern` for RE2 (case-insensitive when asked); throws Re2PatternError for a pattern RE2
 * does not accept, naming what is wrong (and, for the constructs only a backtracking engine has,
 * that they are not supported).
 */
export function compileRe2(pattern: string, options: { caseInsensitive?: boolean } = {}): Re2 {
  let re: Re2;
  try {
    re = RE2JS.compile(pattern, options.caseInsensitive ? RE2JS.CASE_INSENSITIVE : 0);
  } catch (error) {
    throw new Re2PatternError(re2Message(pattern, error));
  }
  // Matching costs time proportional to the input times the program's size: bounding the size
  // bounds the cost per character (a short pattern can still repeat, e.g. [a-z]{1000}).
  if (re.programSize() > MAX_PROGRAM_SIZE) {
    throw new Re2PatternError(
      `too large a regular expression: it compiles to ${re.programSize()} RE2 instructions, at most ${MAX_PROGRAM_SIZE} are allowed (use smaller repeat counts)`,
    );
  }
  return re;
}

/** Why RE2 refuses `pattern`, or undefined when it accepts it. */
export function re2Refusal(pattern: string): string | undefined {
  try {
    compileRe2(pattern);
    return undefined;
  } catch (error) {
    return (error as Error).message;
  }
}

/** Every match of `re` in `text` replaced, with JavaScript's replacement syntax ($1, $<name>, $&, $$). */
export function re2ReplaceAll(re: Re2, text: string, replacement: string): string {
  return re.matcher(text).replaceAll(replacement);
}

const BACKTRACKING_ONLY: readonly [RegExp, string][] = [
  [/\(\?<?[=!]/, "lookaround ((?=, (?!, (?<=, (?<!)"],
  [/\\[1-9]|\\k</, "backreferences (\\1, \\k<name>)"],
];

function re2Message(pattern: string, error: unknown): string {
  const detail = ((error as Error).message ?? String(error)).replace(/^error parsing regexp: /, "");
  const unsupported = BACKTRACKING_ONLY.find(([construct]) => construct.test(pattern));
  return unsupported
    ? `not a pattern RE2 can run: it uses ${unsupported[1]}, which only a backtracking engine supports (one whose running time a pattern can make exponential); rewrite it without them (${detail})`
    : `not a valid RE2 regular expression: ${detail}`;
}
