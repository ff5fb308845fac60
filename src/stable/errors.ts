/** Moved to src/errors.ts (errors are a neutral module every layer may import); kept while other branches still import this path. */
export * from '../errors.js';
