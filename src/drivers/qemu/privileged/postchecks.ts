/** Moved to src/privileged/postchecks.ts; kept while other branches still import this path. */
export * from '../../../privileged/postchecks.js';
