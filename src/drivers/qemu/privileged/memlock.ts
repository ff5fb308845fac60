/** Moved to src/privileged/memlock.ts; kept while other branches still import this path. */
export * from '../../../privileged/memlock.js';
