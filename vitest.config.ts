import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["tests/**/*.test.ts"],
    // Native addons are safest in child processes rather than worker threads.
    pool: "forks",
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
});
