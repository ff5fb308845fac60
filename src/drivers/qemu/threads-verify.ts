/** Moved to src/privileged/threads-verify.ts; kept while other branches still import this path. */
export * from '../../privileged/threads-verify.js';
