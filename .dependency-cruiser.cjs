// The layers of src/ (drawn in README.md, "Layers") and the absence of import cycles, checked by
// scripts/test.sh with `npx depcruise src --config .dependency-cruiser.cjs`. Type-only imports count:
// a layer that needs another's types depends on it as much as one that calls it.

const ERRORS = '^src/errors[.]ts$';
const UTIL = '^src/util/';
const STABLE = '^src/stable/';
const PRIVILEGED = '^src/privileged/';
const PRIVD = '^src/internal/privd/';
const DRIVERS = '^src/drivers/';
const ENTRIES = '^src/(index|cli|privd-cli|internal/index)[.]ts$';
const COMPOSITION = '^src/builtin-drivers[.]ts$';

/** A rule forbidding `from` to import anything in src/ except `allowed` . */
function only(name, comment, from, allowed) {
  return {
    name,
    comment,
    severity: 'error',
    from: { path: from },
    to: { path: '^src/', pathNot: [...allowed] },
  };
}

module.exports = {
  forbidden: [
    {
      name: 'no-circular',
      comment: 'No import cycle, type-only imports included: every arrow points one way.',
      severity: 'error',
      from: {},
      to: { circular: true },
    },
    only(
      'errors-are-neutral',
      'src/errors.ts imports nothing of virtkit: every layer may use it.',
      ERRORS,
      [],
    ),
    only('util-is-a-leaf', 'util/ (host utilities) uses only errors and itself.', UTIL, [ERRORS, UTIL]),
    only(
      'stable-knows-no-driver',
      'stable/ (the public API) knows only the driver interface (stable/driver.ts), never a driver or internal.',
      STABLE,
      [ERRORS, UTIL, STABLE],
    ),
    only(
      'contract-is-below-drivers',
      'privileged/ (the privileged-operation contract) is shared by the drivers and the helper: it imports neither.',
      PRIVILEGED,
      [ERRORS, UTIL, STABLE, PRIVILEGED],
    ),
    only(
      'helper-needs-only-the-contract',
      'internal/privd (virtkit-privd and delegate) uses the contract, never a driver or stable/; of the rest of internal/ only the type delegate() installs onto.',
      PRIVD,
      [ERRORS, UTIL, PRIVILEGED, PRIVD, '^src/internal/api[.]ts$'],
    ),
    {
      name: 'internal-never-imports-drivers',
      comment:
        'internal/ reaches a driver only through the seam (privileged/seam.ts) that the driver carries.',
      severity: 'error',
      from: { path: '^src/internal/' },
      to: { path: '^src/drivers/' },
    },
    only(
      'drivers-implement-the-interface',
      'A driver imports the driver interface, the contract and the neutral layers, never the internal entry.',
      DRIVERS,
      [ERRORS, UTIL, STABLE, PRIVILEGED, DRIVERS],
    ),
    {
      name: 'drivers-are-independent',
      comment: 'One driver never imports another; what they share lives in drivers/*.ts or privileged/.',
      severity: 'error',
      from: { path: '^src/drivers/([^/]+)/' },
      to: { path: '^src/drivers/[^/]+/', pathNot: ['^src/drivers/$1/'] },
    },
    {
      name: 'entry-points-are-roots',
      comment: 'Nothing imports an entry point (the package entries, the two command-line programs).',
      severity: 'error',
      from: {},
      to: { path: ENTRIES },
    },
    {
      name: 'drivers-are-registered-by-entry-points',
      comment:
        'connect knows drivers only through its registry; only entry points import the file that fills it.',
      severity: 'error',
      from: { pathNot: [ENTRIES, '^src/cli/'] },
      to: { path: COMPOSITION },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: {
      exportsFields: ['exports'],
      conditionNames: ['import', 'require', 'node', 'default'],
    },
  },
};
