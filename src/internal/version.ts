/** Moved to src/privileged/version.ts; kept while other branches still import this path. */
export * from '../privileged/version.js';
