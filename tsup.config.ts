import { defineConfig } from 'tsup';

// Both entry points are built together with splitting on, so the code they share (the driver and
// the handler registry) exists once per module format rather than once per entry point.
export default defineConfig({
  entry: {
    index: 'src/index.ts',
    internal: 'src/internal/index.ts',
    cli: 'src/cli.ts',
    'privd-cli': 'src/privd-cli.ts',
  },
  format: ['esm', 'cjs'],
  dts: { entry: { index: 'src/index.ts', internal: 'src/internal/index.ts' } },
  splitting: true,
  sourcemap: true,
  clean: true,
  target: 'node20',
  platform: 'node',
  shims: true,
});
