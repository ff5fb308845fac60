/** Moved to src/privileged/invoke.ts; kept while other branches still import this path. */
export * from '../../../privileged/invoke.js';
