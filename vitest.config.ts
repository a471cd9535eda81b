import { tmpdir } from "node:os";
import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: "unit",
          include: ["controller/**/*.test.ts", "test/env/**/*.test.ts", "policies/**/*.test.ts"],
        },
      },
      {
        test: {
          name: "integration",
          // test/security acts as hostile tenants against the same real servers (docs/security.md).
          include: ["test/integration/**/*.test.ts", "test/security/**/*.test.ts"],
          globalSetup: ["test/env/global-setup.ts"],
          // Lineage goes to the console by default; tests that check it choose their transport.
          // File sources read under the OS temporary directory, the storage tests grant (api/file-grant.ts).
          env: { SYNCGOV_LINEAGE: "none", SYNCGOV_FILE_ROOTS: tmpdir() },
          // Two cores: integration files share one set of servers and run one at a time.
          fileParallelism: false,
          testTimeout: 60_000,
          hookTimeout: 120_000,
        },
      },
    ],
  },
});
