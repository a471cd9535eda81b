/**
 * Ordering of Kubernetes resourceVersions for staleness checks.
 *
 * Kubernetes documents resourceVersions as opaque strings. The API server backed by etcd emits
 * decimal integers (etcd revisions) that grow with every write, so the registry compares two of them
 * as integers only when both are plain decimal strings; for anything else the order is unknown and
 * this returns undefined, and callers must choose the safe answer themselves.
 */

/** -1, 0 or 1 when both are decimal integers (of any length); undefined when they are not comparable. */
export function compareResourceVersions(
  a: string | undefined,
  b: string | undefined,
): -1 | 0 | 1 | undefined {
  if (a === undefined || b === undefined) return undefined;
  // Hand-rolled rather than a regex and BigInt: this runs on every registry write.
  const startA = firstSignificantDigit(a);
  const startB = firstSignificantDigit(b);
  if (startA < 0 || startB < 0) return undefined;
  const lengthA = a.length - startA;
  const lengthB = b.length - startB;
  if (lengthA !== lengthB) return lengthA < lengthB ? -1 : 1;
  for (let i = 0; i < lengthA; i++) {
    const x = a.charCodeAt(startA + i);
    const y = b.charCodeAt(startB + i);
    if (x !== y) return x < y ? -1 : 1;
  }
  return 0;
}

/** Index of the first digit that is not a leading zero (the last digit for "0…0"); -1 if not decimal. */
function firstSignificantDigit(digits: string): number {
  const length = digits.length;
  if (length === 0) return -1;
  let start = -1;
  for (let i = 0; i < length; i++) {
    const code = digits.charCodeAt(i);
    if (code < 48 || code > 57) return -1;
    if (start < 0 && code !== 48) start = i;
  }
  return start < 0 ? length - 1 : start;
}
