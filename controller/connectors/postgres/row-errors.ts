/**
 * Rows PostgreSQL refuses, and finding them in a batch.
 *
 * A batch is one statement, so one row the target cannot take (a value out of range, a string too
 * long, a CHECK, a NOT NULL, a foreign key) fails all of it, and the error does not say which row.
 * Retrying the batch fails the same way forever. A data error is told from the errors that may pass
 * by its SQLSTATE class: 22 (data exception) and 23 (integrity constraint violation) are about the
 * rows; everything else (a lost connection, class 08; a server shutting down, 57P0x; a statement
 * timeout, 57014; resource exhaustion, 53; a serialization failure or deadlock, 40001/40P01; a
 * missing table or privilege, 42) is about the target, and the batch is retried as a whole.
 *
 * bisectWrite splits a refused batch in halves, in order, and writes each; a half refused again is
 * split again, down to single rows, which are the offending ones. The rows around them are written
 * in their original order (a left half before a right one), so per key the last value written is
 * still the last good one given. Cost: for k offending rows among n, at most 1 + 2k·⌈log₂ n⌉
 * statements (each refused statement on the way is split, each half tried once), and never more
 * than 2n − 1: a 10,000-row batch with one bad row takes about 29 statements, not 10,000.
 *
 * What a refusal says travels to dead-letter headers, status and events, so it is rebuilt from the
 * error's fields and never copied whole: PostgreSQL's message may quote the value
 * (`invalid input syntax for type integer: "…"`, `value "…" is out of range for type smallint`) and
 * its detail often does (`Failing row contains (…)`, `Key (id)=(…) already exists`); values may be
 * personal data. Quoted text is kept only when it is the column, constraint, table or type the error
 * names in its own fields.
 */

/** SQLSTATE classes whose errors are about the rows written, not the target. */
const ROW_ERROR_CLASSES = new Set(["22", "23"]);

/** Whether a target error is about the rows (SQLSTATE class 22 or 23), so retrying the same rows cannot help. */
export function isRowDataError(error: unknown): boolean {
  const code = sqlStateOf(error);
  return code !== undefined && ROW_ERROR_CLASSES.has(code.slice(0, 2));
}

function sqlStateOf(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null | undefined)?.code;
  return typeof code === "string" && /^[0-9A-Z]{5}$/.test(code) ? code : undefined;
}

/** Why the target refused a row, fit for headers, status and logs: no value of the row. */
export interface RowRefusal {
  /** CamelCase, from the SQLSTATE: CheckViolation, NotNullViolation, StringDataRightTruncation, … */
  readonly reason: string;
  readonly sqlState: string;
  /** The column, when PostgreSQL names one (NOT NULL; COPY's context line). */
  readonly column?: string;
  /** The constraint, when PostgreSQL names one (CHECK, UNIQUE, FOREIGN KEY, EXCLUDE). */
  readonly constraint?: string;
  /** `SQLSTATE 23514: new row for relation "t" violates check constraint "t_qty_check"`. */
  readonly message: string;
}

/** PostgreSQL's condition names (errcodes.txt) of the data errors most often met, in CamelCase. */
const CONDITION_NAMES: Readonly<Record<string, string>> = {
  "22001": "StringDataRightTruncation",
  "22003": "NumericValueOutOfRange",
  "22007": "InvalidDatetimeFormat",
  "22008": "DatetimeFieldOverflow",
  "22012": "DivisionByZero",
  "22021": "CharacterNotInRepertoire",
  "22023": "InvalidParameterValue",
  "22P02": "InvalidTextRepresentation",
  "22P04": "BadCopyFileFormat",
  "22P05": "UntranslatableCharacter",
  "23502": "NotNullViolation",
  "23503": "ForeignKeyViolation",
  "23505": "UniqueViolation",
  "23514": "CheckViolation",
  "23P01": "ExclusionViolation",
};

/** pg's error fields that name things rather than carry values. */
interface PgErrorFields {
  readonly code?: unknown;
  readonly message?: unknown;
  readonly column?: unknown;
  readonly constraint?: unknown;
  readonly table?: unknown;
  readonly schema?: unknown;
  readonly dataType?: unknown;
  readonly where?: unknown;
}

/** Longest message kept; PostgreSQL's own are far shorter. */
const MAX_MESSAGE = 300;

/** The refusal a data error stands for, its message rid of values (see the module comment). */
export function rowRefusalOf(error: unknown): RowRefusal {
  const fields = (error ?? {}) as PgErrorFields;
  const sqlState = sqlStateOf(error) ?? "XX000";
  const text = (value: unknown) => (typeof value === "string" && value !== "" ? value : undefined);
  // COPY's context says `COPY t, line 3, column amount: "…"`: the column name is all that is kept.
  const copyColumn = /, column ([^:]+):/.exec(text(fields.where) ?? "")?.[1];
  const column = text(fields.column) ?? copyColumn;
  const constraint = text(fields.constraint);
  const named = new Set(
    [column, constraint, text(fields.table), text(fields.schema), text(fields.dataType)].filter(
      (n): n is string => n !== undefined,
    ),
  );
  const raw = text(fields.message) ?? "the target refused the row";
  // Any quoted text PostgreSQL did not also give as a name is taken for a value and left out.
  const safe = raw.replace(/"((?:[^"]|"")*)"/g, (quoted, inner: string) =>
    named.has(inner) ? quoted : '"…"',
  );
  const cut = safe.length > MAX_MESSAGE ? `${safe.slice(0, MAX_MESSAGE)}…` : safe;
  const reason =
    CONDITION_NAMES[sqlState] ??
    (sqlState.startsWith("22")
      ? "DataException"
      : sqlState.startsWith("23")
        ? "IntegrityConstraintViolation"
        : "TargetRefused");
  return {
    reason,
    sqlState,
    ...(column === undefined ? {} : { column }),
    ...(constraint === undefined ? {} : { constraint }),
    message: `SQLSTATE ${sqlState}: ${cut}${column !== undefined && !cut.includes(column) ? ` (column ${column})` : ""}`,
  };
}

/** An item of a batch the target refused on its own, by its index in the batch. */
export interface RefusedItem {
  readonly index: number;
  /** The error of the statement that held this item alone. */
  readonly error: unknown;
}

export interface BisectResult {
  /** What the successful writes returned, summed (rows inserted or updated). */
  readonly written: number;
  /** The items refused on their own, in batch order. */
  readonly refused: readonly RefusedItem[];
  /** Statements tried, refused ones included. */
  readonly statements: number;
}

export interface BisectOptions {
  /** Whether an error is about the items (split and try again) rather than the target (give up). */
  readonly isRowError?: (error: unknown) => boolean;
  /**
   * The error the whole batch already met, when the caller tried it: the first split happens at
   * once instead of trying the same batch again.
   */
  readonly failedWith?: unknown;
}

/**
 * Writes `items` with `write` (one statement per call, atomic), finding by bisection the items it
 * refuses with a row error: those are returned, every other item is written, in order. Rejects with
 * the first error that is not a row error (the target's: the caller retries the whole batch; what
 * was written meanwhile is written again, which an idempotent upsert allows).
 */
export async function bisectWrite<T>(
  items: readonly T[],
  write: (part: readonly T[]) => Promise<number>,
  options: BisectOptions = {},
): Promise<BisectResult> {
  const isRowError = options.isRowError ?? isRowDataError;
  const refused: RefusedItem[] = [];
  let written = 0;
  let statements = 0;
  const attempt = async (start: number, end: number, knownError?: { error: unknown }): Promise<void> => {
    if (end <= start) return;
    let failure = knownError;
    if (failure === undefined) {
      statements++;
      try {
        written += await write(items.slice(start, end));
        return;
      } catch (error) {
        if (!isRowError(error)) throw error;
        failure = { error };
      }
    }
    if (end - start === 1) {
      refused.push({ index: start, error: failure.error });
      return;
    }
    const middle = start + Math.ceil((end - start) / 2);
    await attempt(start, middle);
    await attempt(middle, end);
  };
  const known = "failedWith" in options ? { error: options.failedWith } : undefined;
  if (known !== undefined && !isRowError(known.error)) throw known.error;
  await attempt(0, items.length, known);
  return { written, refused, statements };
}
