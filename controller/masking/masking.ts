/**
 * Column masking: transforms a job declares (spec.masking) that run on every row before it is
 * written, so sensitive values never land in the target; and the check that a policy's required
 * masking (SyncPolicy spec.masking.requiredFor) is in place before anything is written.
 *
 * Transforms, applied to a value in its canonical row-model form (controller/connectors/record.ts):
 * - hash: with a key (spec.maskingKeySecretRef, from a Secret), HMAC-SHA256 keyed by it, as 64
 *   lowercase hex digits: a keyed hash, so a dictionary of likely values (every phone number, say)
 *   cannot be hashed and matched without the key. Without a key, plain SHA-256 of the canonical
 *   text, which such a dictionary reverses; a SyncPolicy can require the key (masking.requireHashKey),
 *   and then a hash rule without one is refused (`requireKey`). The same value always gives the same
 *   digest, so a key column masked with hash still identifies its row and upserts converge.
 * - redact: the text "***".
 * - regexReplace: every match of the pattern replaced by the replacement (JavaScript replacement
 *   syntax: $1, $<name>, $&; default "***"). The pattern runs on RE2 (../api/re2.ts), in time linear
 *   in the value: a pattern RE2 cannot run (backreferences, lookaround) is refused, never run.
 *
 * NULL stays NULL under every transform: there is no value to protect, and a key is never NULL.
 * Every transform yields text, so a masked column is a text column in the target.
 */

import { createHash, createHmac } from "node:crypto";
import { compileRe2, type Re2, re2ReplaceAll } from "../api/re2.ts";
import type { Column, Row, RowValue } from "../connectors/record.ts";

export type MaskingTransform = "hash" | "redact" | "regexReplace";

/** One column transform, as a SyncJob declares it (spec.masking[]). */
export interface MaskingRule {
  readonly column: string;
  readonly transform: MaskingTransform;
  /** The regular expression of regexReplace (RE2 syntax). */
  readonly pattern?: string | undefined;
  /** The replacement text of regexReplace; default "***". */
  readonly replacement?: string | undefined;
}

/** A policy's demand that columns whose names match a pattern be masked with one of some transforms. */
export interface MaskingRequirement {
  /** RE2 regular expression over column names, matched case-insensitively (as policy evaluation does). */
  readonly columnPattern: string;
  /** The transforms that satisfy the requirement. */
  readonly transforms: readonly MaskingTransform[];
  /** The SyncPolicy that requires it, for messages. */
  readonly policy?: string | undefined;
}

export interface MaskingOptions {
  /**
   * The job's HMAC key for hash (spec.maskingKeySecretRef, or the older salt annotation, read from a
   * Secret); without it, hash is plain SHA-256.
   */
  readonly salt?: string | undefined;
  /**
   * A policy requires hash to be keyed: a hash rule without a key (or with one shorter than
   * MIN_HASH_KEY_BYTES) is refused rather than applied as plain SHA-256.
   */
  readonly requireKey?: boolean | undefined;
}

/** The shortest key a policy that requires keyed hashing accepts: 128 bits. */
export const MIN_HASH_KEY_BYTES = 16;

export const REDACTED = "***";

/** A rule that cannot be applied (two rules on one column, a pattern that does not compile). */
export class MaskingRuleError extends Error {
  override readonly name = "MaskingRuleError";
}

type ValueMask = (value: Exclude<RowValue, null>) => string;

/** Rules compiled once for a run: masks rows and says which columns it changes. */
export interface RowMasker {
  /** Columns a rule applies to. */
  readonly maskedColumns: ReadonlySet<string>;
  /**
   * A copy of the row with the masked columns transformed; columns the row lacks are left absent,
   * so partial rows (e.g. a rejected row's key) can be masked too.
   */
  mask(row: Row): Row;
}

/** Compiles the rules; throws MaskingRuleError for a rule that cannot be applied. */
export function compileMasking(rules: readonly MaskingRule[], options: MaskingOptions = {}): RowMasker {
  const masks = new Map<string, ValueMask>();
  for (const rule of rules) {
    if (masks.has(rule.column)) {
      throw new MaskingRuleError(`column ${rule.column} has more than one masking rule`);
    }
    masks.set(rule.column, valueMask(rule, options));
  }
  const entries = [...masks];
  return {
    maskedColumns: new Set(masks.keys()),
    mask(row: Row): Row {
      if (entries.length === 0) return row;
      const out: Row = { ...row };
      for (const [column, mask] of entries) {
        const value = row[column];
        if (value !== undefined && value !== null) out[column] = mask(value);
      }
      return out;
    },
  };
}

/** Masks every row (compiling the rules once); see the module comment for the transforms. */
export function applyMasking(
  rows: readonly Row[],
  rules: readonly MaskingRule[],
  options: MaskingOptions = {},
): Row[] {
  const masker = compileMasking(rules, options);
  return rows.map((row) => masker.mask(row));
}

/** The columns as they are stored in the target: a masked column holds text. */
export function maskedColumns(columns: readonly Column[], masker: RowMasker): Column[] {
  return columns.map((c) => (masker.maskedColumns.has(c.name) ? { ...c, type: "text" } : c));
}

function valueMask(rule: MaskingRule, options: MaskingOptions): ValueMask {
  switch (rule.transform) {
    case "hash": {
      const salt = options.salt;
      if (
        options.requireKey &&
        (salt === undefined || Buffer.byteLength(salt, "utf8") < MIN_HASH_KEY_BYTES)
      ) {
        throw new MaskingRuleError(
          `masking rule for column ${rule.column}: policy requires hash masking to be keyed, but ${salt ? `the key (spec.maskingKeySecretRef) is shorter than ${MIN_HASH_KEY_BYTES} bytes` : "the job names no key (spec.maskingKeySecretRef)"}`,
        );
      }
      return salt === undefined || salt === ""
        ? (value) => createHash("sha256").update(canonicalText(value), "utf8").digest("hex")
        : (value) => createHmac("sha256", salt).update(canonicalText(value), "utf8").digest("hex");
    }
    case "redact":
      return () => REDACTED;
    case "regexReplace": {
      if (rule.pattern === undefined) {
        throw new MaskingRuleError(`masking rule for column ${rule.column}: regexReplace needs a pattern`);
      }
      let pattern: Re2;
      try {
        pattern = compileRe2(rule.pattern);
      } catch (error) {
        throw new MaskingRuleError(`masking rule for column ${rule.column}: ${(error as Error).message}`);
      }
      const replacement = rule.replacement ?? REDACTED;
      return (value) => re2ReplaceAll(pattern, canonicalText(value), replacement);
    }
  }
}

/** The canonical text of a row-model value: the form a hash and a pattern see. */
function canonicalText(value: Exclude<RowValue, null>): string {
  return typeof value === "string" ? value : String(value);
}

/** A target column that a policy requires masked but that has no accepted transform. */
export interface MaskingViolation {
  readonly column: string;
  readonly columnPattern: string;
  readonly accepted: readonly MaskingTransform[];
  /** The transform the job declares for the column, when it declares one that is not accepted. */
  readonly declared?: MaskingTransform | undefined;
  readonly policy?: string | undefined;
}

/**
 * The columns (those the run writes to the target) that match a required pattern but are not masked
 * with a transform the requirement accepts; empty when the run may write. Pure; a pattern that does
 * not compile is reported as a violation of every column, since it cannot be shown not to match.
 */
export function requiredMaskingViolations(
  columns: readonly string[],
  rules: readonly MaskingRule[],
  requirements: readonly MaskingRequirement[],
): MaskingViolation[] {
  const declared = new Map(rules.map((r) => [r.column, r.transform]));
  const violations: MaskingViolation[] = [];
  for (const requirement of requirements) {
    let pattern: Re2 | undefined;
    try {
      pattern = compileRe2(requirement.columnPattern, { caseInsensitive: true });
    } catch {
      pattern = undefined;
    }
    for (const column of columns) {
      if (pattern && !pattern.test(column)) continue;
      const transform = declared.get(column);
      if (transform !== undefined && requirement.transforms.includes(transform)) continue;
      violations.push({
        column,
        columnPattern: requirement.columnPattern,
        accepted: requirement.transforms,
        declared: transform,
        policy: requirement.policy,
      });
    }
  }
  return violations;
}

/** One sentence per violation, naming the column, the pattern, the policy and what would satisfy it. */
export function describeMaskingViolation(v: MaskingViolation): string {
  const by = v.policy ? ` by policy ${v.policy}` : "";
  const has = v.declared ? `it is masked with ${v.declared}` : "it has no masking rule";
  return `column ${v.column} matches /${v.columnPattern}/, which${by} must be masked with ${v.accepted.join(" or ")}, but ${has}`;
}
