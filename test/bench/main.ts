/**
 * Bench dispatcher: `npm run bench -- <name>...` runs the named benches, or all of them with no name.
 * Each bench is a module exporting `run(): Promise<void>`, loaded only when asked for.
 */

interface Bench {
  run(): Promise<void>;
}

const benches: Readonly<Record<string, () => Promise<Bench>>> = {
  registry: () => import("./registry.ts"),
  admission: () => import("./admission.ts"),
  sync: () => import("./sync.ts"),
  breaker: () => import("./breaker.ts"),
};

// Options (`--name value` or `--name=value`) belong to the benches, which read process.argv themselves.
const names = process.argv
  .slice(2)
  .filter((arg, i, args) => !arg.startsWith("--") && !/^--[^=]+$/.test(args[i - 1] ?? ""));
const unknown = names.filter((name) => !Object.hasOwn(benches, name));
if (unknown.length > 0) {
  console.error(`unknown bench ${unknown.join(", ")}; available: ${Object.keys(benches).join(", ")}`);
  process.exit(2);
}
for (const name of names.length > 0 ? names : Object.keys(benches)) {
  const bench = await benches[name]!();
  await bench.run();
}
