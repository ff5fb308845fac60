/** Moved to src/privileged/seam.ts; kept while other branches still import this path. */
export * from '../privileged/seam.js';
