/** Moved to src/privileged/builtins.ts; kept while other branches still import this path. */
export * from '../../../privileged/builtins.js';
