/** Moved to src/privileged/handler-table.ts; kept while other branches still import this path. */
export * from '../privileged/handler-table.js';
