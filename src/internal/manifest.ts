import { z } from 'zod';
import { operationSchemas } from '../privileged/operations.js';
import { INTERNAL_API_VERSION } from '../privileged/version.js';

/*
 * The internal operations manifest: the JSON Schema of every operation's arguments and result,
 * generated from the zod schemas the driver validates with, so the two cannot drift. Big integers
 * (byte counts) travel as decimal strings in JSON; the schema says so.
 */

const toSchema = (schema: z.ZodType): unknown =>
  z.toJSONSchema(schema, {
    target: 'draft-2020-12',
    unrepresentable: 'any',
    io: 'input',
    override: (ctx) => {
      const def = (ctx.zodSchema as { _zod?: { def?: { type?: string } } })._zod?.def;
      if (def?.type === 'bigint') {
        Object.assign(ctx.jsonSchema, {
          type: 'string',
          pattern: '^[0-9]+$',
          description: 'a bigint, as decimal digits',
        });
      }
      if (def?.type === 'undefined') {
        Object.assign(ctx.jsonSchema, { type: 'null', description: 'no result' });
      }
    },
  });

/** The manifest of internal API operations as a JSON-serialisable object. */
export function operationsManifest(): Record<string, unknown> {
  const operations: Record<string, unknown> = {};
  for (const [name, op] of Object.entries(operationSchemas)) {
    operations[name] = { phases: op.phases, arguments: toSchema(op.args), result: toSchema(op.result) };
  }
  return { internalApiVersion: INTERNAL_API_VERSION, operations };
}

/** The manifest as committed in etc/internal-operations.json. */
export function operationsManifestText(): string {
  return `${JSON.stringify(operationsManifest(), null, 2)}\n`;
}
