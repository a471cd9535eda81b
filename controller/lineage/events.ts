/**
 * OpenLineage RunEvents (spec 2-0-2) for syncgov runs: a pure builder, and RunLineage, which keeps a
 * run's identity (a UUIDv7 runId, the job, its datasets) so its START, RUNNING, COMPLETE, FAIL and
 * ABORT events agree.
 *
 * Facets used, each with `_producer` and `_schemaURL` as the spec requires:
 * - dataset `schema` (SchemaDatasetFacet 1-1-1): the columns, name and row-model type;
 * - dataset `dataSource` (DatasourceDatasetFacet 1-0-1): the namespace as the source's URI;
 * - input `dataQualityMetrics` (DataQualityMetricsInputDatasetFacet 1-0-2): rowCount;
 * - output `outputStatistics` (OutputStatisticsOutputDatasetFacet 1-0-2): rowCount;
 * - dataset `syncgov_checksum` (custom, ./facets/SyncgovChecksumDatasetFacet.json): the validation
 *   checksum of controller/validation/checksum.ts, so a lineage UI shows whether both sides agreed;
 * - run `errorMessage` (ErrorMessageRunFacet 1-0-1) on FAIL, with URL credentials removed;
 * - job `jobType` (JobTypeJobFacet 2-0-3): BATCH or STREAMING, integration SYNCGOV.
 */

import { readFileSync } from "node:fs";
import type { Column } from "../connectors/record.ts";
import type { TableChecksum } from "../validation/checksum.ts";
import type { DatasetName } from "./naming.ts";
import { redactCredentials } from "./naming.ts";
import { isUuidV7, uuidv7 } from "./uuid.ts";

export const RUN_EVENT_SCHEMA_URL = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent";

/**
 * syncgov's package.json, read at run time rather than imported: an import would make the build copy
 * it into dist/. From controller/lineage/events.ts it is two directories up; from the build's
 * dist/controller/lineage/events.js, three.
 */
const packageJson = JSON.parse(
  readFileSync(
    new URL(
      import.meta.url.endsWith(".ts") ? "../../package.json" : "../../../package.json",
      import.meta.url,
    ),
    "utf8",
  ),
) as { version: string };

/** Identifies syncgov (and its version) as the producer of every event and facet. */
export const SYNCGOV_PRODUCER = `https://syncgov.io/producer/syncgov/${packageJson.version}`;

export const FACET_SCHEMA_URLS = {
  schema: "https://openlineage.io/spec/facets/1-1-1/SchemaDatasetFacet.json#/$defs/SchemaDatasetFacet",
  dataSource:
    "https://openlineage.io/spec/facets/1-0-1/DatasourceDatasetFacet.json#/$defs/DatasourceDatasetFacet",
  dataQualityMetrics:
    "https://openlineage.io/spec/facets/1-0-2/DataQualityMetricsInputDatasetFacet.json#/$defs/DataQualityMetricsInputDatasetFacet",
  outputStatistics:
    "https://openlineage.io/spec/facets/1-0-2/OutputStatisticsOutputDatasetFacet.json#/$defs/OutputStatisticsOutputDatasetFacet",
  errorMessage:
    "https://openlineage.io/spec/facets/1-0-1/ErrorMessageRunFacet.json#/$defs/ErrorMessageRunFacet",
  jobType: "https://openlineage.io/spec/facets/2-0-3/JobTypeJobFacet.json#/$defs/JobTypeJobFacet",
  syncgovChecksum:
    "https://syncgov.io/spec/facets/1-0-0/SyncgovChecksumDatasetFacet.json#/$defs/SyncgovChecksumDatasetFacet",
} as const;

export type RunEventType = "START" | "RUNNING" | "COMPLETE" | "FAIL" | "ABORT";

interface Facet {
  readonly _producer: string;
  readonly _schemaURL: string;
}

export interface SchemaDatasetFacet extends Facet {
  readonly fields: readonly { readonly name: string; readonly type: string }[];
}

export interface DatasourceDatasetFacet extends Facet {
  readonly name: string;
  readonly uri: string;
}

export interface SyncgovChecksumDatasetFacet extends Facet {
  readonly rowCount: number;
  /** Sum of the row hashes modulo 2^64, 16 hex digits. */
  readonly sum: string;
  readonly algorithm: "syncgov-md5-sum64";
}

export interface DataQualityMetricsInputDatasetFacet extends Facet {
  readonly rowCount: number;
  /** Required by the facet's schema; syncgov reports no per-column metrics. */
  readonly columnMetrics: Readonly<Record<string, never>>;
}

export interface OutputStatisticsOutputDatasetFacet extends Facet {
  readonly rowCount: number;
}

export interface ErrorMessageRunFacet extends Facet {
  readonly message: string;
  readonly programmingLanguage: string;
  readonly stackTrace?: string;
}

export interface JobTypeJobFacet extends Facet {
  readonly processingType: "BATCH" | "STREAMING";
  readonly integration: "SYNCGOV";
  readonly jobType: string;
}

export interface DatasetFacets {
  readonly schema?: SchemaDatasetFacet;
  readonly dataSource?: DatasourceDatasetFacet;
  readonly syncgov_checksum?: SyncgovChecksumDatasetFacet;
}

export interface InputDataset extends DatasetName {
  readonly facets: DatasetFacets;
  readonly inputFacets: { readonly dataQualityMetrics?: DataQualityMetricsInputDatasetFacet };
}

export interface OutputDataset extends DatasetName {
  readonly facets: DatasetFacets;
  readonly outputFacets: { readonly outputStatistics?: OutputStatisticsOutputDatasetFacet };
}

export interface RunEvent {
  readonly eventType: RunEventType;
  /** ISO 8601 with offset (always UTC, `Z`). */
  readonly eventTime: string;
  readonly run: { readonly runId: string; readonly facets: { readonly errorMessage?: ErrorMessageRunFacet } };
  readonly job: {
    readonly namespace: string;
    readonly name: string;
    readonly facets: { readonly jobType?: JobTypeJobFacet };
  };
  readonly inputs: readonly InputDataset[];
  readonly outputs: readonly OutputDataset[];
  readonly producer: string;
  readonly schemaURL: string;
}

/** A job as lineage names it. */
export interface LineageJob {
  readonly namespace: string;
  readonly name: string;
}

/**
 * The lineage job of a SyncJob: namespace = the syncgov installation (as OpenLineage scopes jobs by
 * their scheduler), name = `<kubernetes namespace>.<job>`.
 */
export function syncJobLineageJob(
  kubernetesNamespace: string,
  jobName: string,
  installation = "syncgov",
): LineageJob {
  return { namespace: installation, name: `${kubernetesNamespace}.${jobName}` };
}

/** A dataset in an event: its name, optionally its columns, and what the run measured of it. */
export interface LineageDataset extends DatasetName {
  readonly fields?: readonly Pick<Column, "name" | "type">[];
  readonly rowCount?: number;
  readonly checksum?: TableChecksum;
}

export interface RunEventInput {
  readonly eventType: RunEventType;
  readonly runId: string;
  readonly job: LineageJob;
  readonly processingType?: "BATCH" | "STREAMING";
  readonly inputs?: readonly LineageDataset[];
  readonly outputs?: readonly LineageDataset[];
  /** For FAIL: the error, reduced to its message (credentials in URLs removed). */
  readonly error?: unknown;
  readonly includeStackTrace?: boolean;
  readonly eventTime?: Date;
  readonly producer?: string;
}

/** Builds a RunEvent; pure apart from reading the clock when no eventTime is given. */
export function buildRunEvent(input: RunEventInput): RunEvent {
  const producer = input.producer ?? SYNCGOV_PRODUCER;
  const facet = (schemaURL: string) => ({ _producer: producer, _schemaURL: schemaURL });
  const datasetFacets = (d: LineageDataset): DatasetFacets => ({
    ...(d.fields && d.fields.length > 0
      ? {
          schema: {
            ...facet(FACET_SCHEMA_URLS.schema),
            fields: d.fields.map((f) => ({ name: f.name, type: f.type })),
          },
        }
      : {}),
    dataSource: { ...facet(FACET_SCHEMA_URLS.dataSource), name: d.namespace, uri: d.namespace },
    ...(d.checksum
      ? {
          syncgov_checksum: {
            ...facet(FACET_SCHEMA_URLS.syncgovChecksum),
            rowCount: d.checksum.rowCount,
            sum: d.checksum.sum,
            algorithm: "syncgov-md5-sum64" as const,
          },
        }
      : {}),
  });
  const rowCount = (d: LineageDataset) => d.rowCount ?? d.checksum?.rowCount;
  const errorFacet =
    input.eventType === "FAIL"
      ? errorMessageFacet(input.error, producer, input.includeStackTrace)
      : undefined;
  return {
    eventType: input.eventType,
    eventTime: (input.eventTime ?? new Date()).toISOString(),
    run: { runId: input.runId, facets: errorFacet ? { errorMessage: errorFacet } : {} },
    job: {
      namespace: input.job.namespace,
      name: input.job.name,
      facets: {
        jobType: {
          ...facet(FACET_SCHEMA_URLS.jobType),
          processingType: input.processingType ?? "BATCH",
          integration: "SYNCGOV",
          jobType: "SYNC",
        },
      },
    },
    inputs: (input.inputs ?? []).map((d) => {
      const count = rowCount(d);
      return {
        namespace: d.namespace,
        name: d.name,
        facets: datasetFacets(d),
        inputFacets:
          count === undefined
            ? {}
            : {
                dataQualityMetrics: {
                  ...facet(FACET_SCHEMA_URLS.dataQualityMetrics),
                  rowCount: count,
                  columnMetrics: {},
                },
              },
      };
    }),
    outputs: (input.outputs ?? []).map((d) => {
      const count = rowCount(d);
      return {
        namespace: d.namespace,
        name: d.name,
        facets: datasetFacets(d),
        outputFacets:
          count === undefined
            ? {}
            : { outputStatistics: { ...facet(FACET_SCHEMA_URLS.outputStatistics), rowCount: count } },
      };
    }),
    producer,
    schemaURL: RUN_EVENT_SCHEMA_URL,
  };
}

const MAX_ERROR_MESSAGE = 4096;

function errorMessageFacet(
  error: unknown,
  producer: string,
  includeStackTrace = false,
): ErrorMessageRunFacet {
  const message =
    error instanceof Error
      ? `${error.name}: ${error.message}`
      : error === undefined
        ? "the run failed"
        : String(error);
  const stack = includeStackTrace && error instanceof Error ? error.stack : undefined;
  return {
    _producer: producer,
    _schemaURL: FACET_SCHEMA_URLS.errorMessage,
    message: redactCredentials(message).slice(0, MAX_ERROR_MESSAGE),
    programmingLanguage: "JavaScript",
    ...(stack ? { stackTrace: redactCredentials(stack) } : {}),
  };
}

export interface RunLineageOptions {
  readonly job: LineageJob;
  readonly inputs: readonly LineageDataset[];
  readonly outputs: readonly LineageDataset[];
  readonly processingType?: "BATCH" | "STREAMING";
  /** Reuse a run's id (e.g. recorded in SyncRun status) so a restarted runner continues the same run. */
  readonly runId?: string;
  readonly producer?: string;
  readonly clock?: () => Date;
}

/**
 * The events of one run. Each method returns the event; sending it is the emitter's business. A
 * method may be given the datasets again with what the run measured (rowCount, checksum); otherwise
 * the datasets given at construction are reported as they are.
 */
export class RunLineage {
  readonly runId: string;
  readonly #options: RunLineageOptions;

  constructor(options: RunLineageOptions) {
    if (options.runId !== undefined && !isUuidV7(options.runId)) {
      throw new Error("runId must be a UUIDv7");
    }
    this.runId = options.runId ?? uuidv7((options.clock?.() ?? new Date()).getTime());
    this.#options = options;
  }

  start(datasets?: Measured): RunEvent {
    return this.#event("START", datasets);
  }

  running(datasets?: Measured): RunEvent {
    return this.#event("RUNNING", datasets);
  }

  complete(datasets?: Measured): RunEvent {
    return this.#event("COMPLETE", datasets);
  }

  fail(error: unknown, datasets?: Measured): RunEvent {
    return this.#event("FAIL", datasets, error);
  }

  abort(datasets?: Measured): RunEvent {
    return this.#event("ABORT", datasets);
  }

  #event(eventType: RunEventType, datasets: Measured | undefined, error?: unknown): RunEvent {
    const o = this.#options;
    return buildRunEvent({
      eventType,
      runId: this.runId,
      job: o.job,
      inputs: datasets?.inputs ?? o.inputs,
      outputs: datasets?.outputs ?? o.outputs,
      ...(o.processingType ? { processingType: o.processingType } : {}),
      ...(o.producer ? { producer: o.producer } : {}),
      ...(error === undefined ? {} : { error }),
      eventTime: o.clock?.() ?? new Date(),
    });
  }
}

/** Datasets with what the run measured, replacing those given at construction. */
export interface Measured {
  readonly inputs?: readonly LineageDataset[];
  readonly outputs?: readonly LineageDataset[];
}
