/**
 * Where each real component of a syncgov environment comes from. The order is fixed:
 *   1. an address given in the environment (an existing server the user points us at);
 *   2. a local process that the project obtains (builds or downloads, cached) and starts;
 *   3. a container started with testcontainers, when a Docker engine answers.
 * The decision is a pure function of the facts gathered by `gatherFacts`, so it is unit-tested.
 */

export type Component = "kube" | "kafka" | "postgres";

export const COMPONENTS: readonly Component[] = ["kube", "kafka", "postgres"];

/** Environment variables that name an existing server for each component. */
export const ADDRESS_VARIABLES: Record<Component, string> = {
  kube: "KUBECONFIG",
  kafka: "KAFKA_BROKERS",
  postgres: "DATABASE_URL",
};

export type ProviderPreference = "auto" | "local" | "testcontainers";

export interface ProviderFacts {
  /** The whole process environment (only the variables above and the switches below are read). */
  env: Readonly<Record<string, string | undefined>>;
  /** The tools the local provider of each component needs, with the first one missing if any. */
  localMissing: Readonly<Record<Component, string | undefined>>;
  dockerAvailable: boolean;
}

export type ProviderChoice =
  | { component: Component; kind: "address"; address: string }
  | { component: Component; kind: "local" }
  | { component: Component; kind: "testcontainers" }
  | { component: Component; kind: "unavailable"; reason: string };

export function chooseProvider(component: Component, facts: ProviderFacts): ProviderChoice {
  const variable = ADDRESS_VARIABLES[component];
  const address = facts.env[variable]?.trim();
  // KUBECONFIG is set in many shells for a real cluster; like controller-runtime's envtest, it is
  // only used when USE_EXISTING_CLUSTER=true says so, never by accident.
  const addressCounts = component !== "kube" || facts.env.USE_EXISTING_CLUSTER === "true";
  if (address && addressCounts) return { component, kind: "address", address };

  const preference = parsePreference(facts.env.SYNCGOV_SERVICES);
  const missing = facts.localMissing[component];
  if (preference !== "testcontainers" && missing === undefined) return { component, kind: "local" };
  if (preference !== "local" && facts.dockerAvailable) return { component, kind: "testcontainers" };

  const reasons: string[] = [];
  if (preference === "testcontainers")
    reasons.push("SYNCGOV_SERVICES=testcontainers but no Docker engine answers");
  else if (missing !== undefined)
    reasons.push(`a local ${component} needs '${missing}', which is not installed`);
  if (preference === "auto") reasons.push("no Docker engine answers for testcontainers");
  reasons.push(
    `set ${variable}${component === "kube" ? " and USE_EXISTING_CLUSTER=true" : ""} to use an existing server`,
  );
  return { component, kind: "unavailable", reason: reasons.join("; ") };
}

function parsePreference(value: string | undefined): ProviderPreference {
  if (value === undefined || value === "" || value === "auto") return "auto";
  if (value === "local" || value === "testcontainers") return value;
  throw new Error(`SYNCGOV_SERVICES must be auto, local or testcontainers, not '${value}'`);
}
