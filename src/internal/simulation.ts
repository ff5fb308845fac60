/** Moved to src/privileged/simulation.ts; kept while other branches still import this path. */
export * from '../privileged/simulation.js';
