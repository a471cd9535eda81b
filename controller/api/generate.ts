import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { stringify } from "yaml";
import { customResourceDefinition } from "./crd.ts";
import { GROUP, RESOURCES } from "./resources.ts";

export const CRD_DIR = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "crds");

/** File name and YAML text of every generated CRD. */
export function renderCrds(): { file: string; yaml: string }[] {
  return RESOURCES.map((def) => ({
    file: `${GROUP}_${def.plural}.yaml`,
    yaml: `# Generated from the zod schemas in controller/api by 'npm run generate'. Do not edit.\n${stringify(
      customResourceDefinition(def),
      { lineWidth: 0 },
    )}`,
  }));
}

/** Writes crds/; returns the files that changed. */
export function writeCrds(dir = CRD_DIR): string[] {
  mkdirSync(dir, { recursive: true });
  const changed: string[] = [];
  for (const { file, yaml } of renderCrds()) {
    const path = join(dir, file);
    let current = "";
    try {
      current = readFileSync(path, "utf8");
    } catch {
      // new file
    }
    if (current !== yaml) {
      writeFileSync(path, yaml);
      changed.push(path);
    }
  }
  return changed;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const changed = writeCrds();
  console.log(changed.length ? `wrote ${changed.join(", ")}` : "crds/ is up to date");
}
