import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/setup/global.ts'],
    setupFiles: ['test/setup/drivers.ts'],
    // VMs are real QEMU processes on a 2-core machine: run files one at a time so timing-sensitive
    // lifecycle tests do not starve each other.
    fileParallelism: false,
    testTimeout: 60_000,
    hookTimeout: 120_000,
  },
});
