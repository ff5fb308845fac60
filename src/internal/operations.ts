/** Moved to src/privileged/operations.ts; kept while other branches still import this path. */
export * from '../privileged/operations.js';
